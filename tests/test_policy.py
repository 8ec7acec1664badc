"""The pure policy, table-driven, for all four hardware profiles.

`_tdcore.resolve` is the C policy itself: it reads no state and changes
none, so the mps and cuda profiles are tested here on a CPU-only machine
without simulating any torch object.
"""
from __future__ import annotations

import numpy
import pytest
import torch

from TorchDevice import _tdcore

ACC = "accelerate"
CSC = "cpu-stays-cpu"
PROFILES = ("mps", "cuda", "accelerator", "cpu")

# request -> {profile: target} for the default mode, override off.
# Rows of the table in docs/policy.md.
DEFAULT_TABLE = {
    None: {"mps": "mps", "cuda": "cuda",
          "accelerator": "accel", "cpu": "keep"},
    "cpu": {"mps": "mps", "cuda": "cuda",
           "accelerator": "accel", "cpu": "keep"},
    "cpu:0": {"mps": "mps", "cuda": "cuda",
             "accelerator": "accel", "cpu": "keep"},
    "cpu:3": {"mps": "mps", "cuda": "cuda",
             "accelerator": "accel", "cpu": "keep"},
    "cuda": {"mps": "mps", "cuda": "keep",
            "accelerator": "accel", "cpu": "cpu"},
    "cuda:0": {"mps": "mps", "cuda": "keep",
              "accelerator": "accel", "cpu": "cpu"},
    "cuda:1": {"mps": "mps", "cuda": "keep",
              "accelerator": "accel", "cpu": "cpu"},
    "cuda:15": {"mps": "mps", "cuda": "keep",
               "accelerator": "accel", "cpu": "cpu"},
    0: {"mps": "mps", "cuda": "keep",
       "accelerator": "accel", "cpu": "cpu"},
    3: {"mps": "mps", "cuda": "keep",
       "accelerator": "accel", "cpu": "cpu"},
    "mps": {"mps": "keep", "cuda": "cuda",
           "accelerator": "accel", "cpu": "cpu"},
    "mps:0": {"mps": "keep", "cuda": "cuda",
             "accelerator": "accel", "cpu": "cpu"},
    "meta": {"mps": "keep", "cuda": "keep",
            "accelerator": "keep", "cpu": "keep"},
    "meta:1": {"mps": "keep", "cuda": "keep",
              "accelerator": "keep", "cpu": "keep"},
    "xpu": {"mps": "keep", "cuda": "keep",
           "accelerator": "keep", "cpu": "keep"},
    "hpu:2": {"mps": "keep", "cuda": "keep",
             "accelerator": "keep", "cpu": "keep"},
    "cpu:-1": {"mps": "cpu", "cuda": "cpu",
              "accelerator": "cpu", "cpu": "cpu"},
    -1: {"mps": "keep", "cuda": "keep",
        "accelerator": "keep", "cpu": "cpu"},
}

HOST_REQUESTS = [None, "cpu", "cpu:0", "cpu:3"]
ACCEL_REQUESTS = ["cuda", "cuda:0", "cuda:1", "cuda:15", 0, 3, "mps",
                  "mps:0"]


def rows():
    for request, by_profile in DEFAULT_TABLE.items():
        for profile, target in by_profile.items():
            yield request, profile, target


@pytest.mark.parametrize("request_, profile, target", list(rows()))
def test_default_mode_table(request_, profile, target):
    res = _tdcore.resolve(request_, profile, ACC)
    assert res["target"] == target
    assert res["toggle"] == (request_ == "cpu:-1")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("request_", HOST_REQUESTS)
def test_cpu_override_keeps_host_requests_on_cpu(request_, profile):
    res = _tdcore.resolve(request_, profile, ACC, cpu_override=True)
    assert res["target"] == "keep"        # None/"cpu" left on the host
    assert not res["redirected"]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("request_", ACCEL_REQUESTS)
def test_cpu_override_honours_accelerator_requests(request_, profile):
    with_override = _tdcore.resolve(request_, profile, ACC, cpu_override=True)
    without = _tdcore.resolve(request_, profile, ACC)
    assert with_override == without


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("request_", HOST_REQUESTS)
def test_cpu_stays_cpu_mode_leaves_host_requests(request_, profile):
    assert _tdcore.resolve(request_, profile, CSC)["target"] == "keep"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("request_", ACCEL_REQUESTS + ["meta", "xpu", -1])
def test_cpu_stays_cpu_mode_still_redirects_accelerators(request_, profile):
    assert (_tdcore.resolve(request_, profile, CSC)["target"]
            == DEFAULT_TABLE[request_][profile])


@pytest.mark.parametrize("profile", PROFILES)
def test_cpu_minus_one_toggles_in_both_modes(profile):
    for mode in (ACC, CSC):
        assert _tdcore.resolve("cpu:-1", profile, mode)["toggle"] is True
        res = _tdcore.resolve("cpu:-1", profile, mode, cpu_override=True)
        assert res["target"] == "cpu" and res["toggle"] is True


@pytest.mark.parametrize("profile", ("mps", "cuda", "accelerator"))
@pytest.mark.parametrize("request_", HOST_REQUESTS)
def test_requests_from_torch_internals_stay_on_host(request_, profile):
    res = _tdcore.resolve(request_, profile, ACC, from_torch=True)
    assert res["target"] == "keep"


def test_redirected_flag():
    assert _tdcore.resolve("cuda", "cpu", ACC)["redirected"] is True
    assert _tdcore.resolve("cuda", "cuda", ACC)["redirected"] is False
    assert _tdcore.resolve(None, "mps", ACC)["redirected"] is True
    assert _tdcore.resolve("cpu", "cpu", ACC)["redirected"] is False
    assert _tdcore.resolve("cpu:-1", "cpu", ACC)["redirected"] is False


@pytest.mark.parametrize("profile", PROFILES)
def test_device_objects_resolve_like_strings(profile):
    for text in ["cuda", "cuda:2", "mps", "mps:0", "meta"]:
        as_str = _tdcore.resolve(text, profile, ACC)
        as_dev = _tdcore.resolve(_native_device(text), profile, ACC)
        assert as_str == as_dev, text


@pytest.mark.parametrize("mode", (ACC, CSC))
@pytest.mark.parametrize("profile", PROFILES)
def test_a_host_device_read_off_a_tensor_is_its_place(profile, mode):
    """`x.device` of a host tensor (and a host device made before
    TorchDevice was enabled) names where x is, not a "cpu" request: never
    redirected, also in mode "accelerate" (docs/policy.md, the table's
    row for it)."""
    keep = {"target": "keep", "toggle": False, "redirected": False}
    place = torch.from_numpy(numpy.zeros(1)).device    # always a host tensor
    assert _tdcore.parse(place) == ("host-place", -1)
    assert _tdcore.resolve(place, profile, mode) == keep
    assert _tdcore.resolve(_native_device("cpu"), profile, mode) == keep
    # The program's own torch.device("cpu") is a request: where the policy
    # in force keeps "cpu" on the host, a host device that is one.
    own = torch.device("cpu")
    assert _tdcore.parse(own)[0] != "host-place"
    if _tdcore.parse(own)[0] == "cpu":
        assert (_tdcore.resolve(own, profile, mode)
                == _tdcore.resolve("cpu", profile, mode))


def _native_device(text):
    import TorchDevice
    TorchDevice.disable()
    try:
        return torch.device(text)
    finally:
        TorchDevice.enable()


@pytest.mark.parametrize("text, expected", [
    ("cpu", ("cpu", -1)), ("cuda", ("cuda", -1)), ("cuda:7", ("cuda", 7)),
    ("mps:0", ("mps", 0)), ("meta", ("meta", -1)),
    ("cpu:-1", ("cpu-toggle", -1)),
    ("cuda:2147483647", ("cuda", 2147483647)),
    ("cuda:2147483648", ("other", -1)), ("cuda:99999999999", ("other", -1)),
    ("cuda:01", ("other", -1)), ("cuda:", ("other", -1)),
    ("cuda:-2", ("other", -1)), ("cuda:x", ("other", -1)),
    (" cuda", ("other", -1)), ("cuda ", ("other", -1)),
    ("CUDA", ("other", -1)), ("cuda:1:2", ("other", -1)),
    ("cpu:-1 ", ("other", -1)), ("", ("other", -1)),
    ("nonsense", ("other", -1)), ("cüda", ("other", -1)),
    (5, ("cuda", 5)), (-1, ("cuda", -65536)), (-2, ("other", -1)), (2 ** 40, ("other", -1)),
    (None, ("none", -1)),
])
def test_parse(text, expected):
    assert _tdcore.parse(text) == expected


def test_parse_names_the_generic_accelerators_type():
    """Only the type installed (or named) is the accelerator's; the index
    grammar is torch's."""
    import TorchDevice
    own = TorchDevice._patches.accelerator_type()
    if own is not None:
        assert _tdcore.parse(own) == ("accelerator", -1)
        assert _tdcore.parse(f"{own}:0") == ("accelerator", 0)
        assert _tdcore.parse(_native_device(f"{own}:0")) == ("accelerator", 0)
    else:
        assert _tdcore.parse("xpu") == ("other", -1)
    assert _tdcore.resolve("xpu:01", "accelerator",
                           accelerator="xpu")["target"] == "keep"


@pytest.mark.parametrize("bad", [1.5, b"cuda", object(), True, [0]])
def test_pure_policy_rejects_non_requests(bad):
    with pytest.raises(TypeError):
        _tdcore.resolve(bad, "cpu")


def test_pure_policy_rejects_unknown_profile_and_mode():
    with pytest.raises(ValueError, match="profile"):
        _tdcore.resolve("cuda", "tpu")
    with pytest.raises(ValueError, match="mode"):
        _tdcore.resolve("cuda", "cpu", "fast")


# float64: MPS has none.  What a float64 request becomes depends on where
# the request lands.
@pytest.mark.parametrize("request_, profile, mode, override, expected", [
    ("cuda", "mps", ACC, False, "float32"),
    ("mps", "mps", ACC, False, "float32"),
    (None, "mps", ACC, False, "float32"),
    ("cpu", "mps", ACC, False, "float32"),
    ("cpu", "mps", ACC, True, "keep"),        # override: stays on the CPU
    (None, "mps", CSC, False, "keep"),        # cpu-stays-cpu
    ("cuda", "mps", CSC, False, "float32"),
    ("meta", "mps", ACC, False, "keep"),
    ("cpu:-1", "mps", ACC, False, "keep"),
    ("cuda", "cpu", ACC, False, "keep"),
    ("mps", "cpu", ACC, False, "keep"),
    ("mps", "cuda", ACC, False, "keep"),
    (None, "cuda", ACC, False, "keep"),
])
def test_float64_downcast(request_, profile, mode, override, expected):
    assert _tdcore.float64_action(request_, profile, mode,
                                  cpu_override=override) == expected


# Profile accelerator: the device's capability record says whether it
# computes float64 (MPS's record: no); its own type's requests ("xpu")
# land there too.
@pytest.mark.parametrize("request_, mode, override, expected", [
    ("cuda", ACC, False, "float32"),
    ("mps", ACC, False, "float32"),
    ("xpu", ACC, False, "float32"),
    ("xpu:0", CSC, False, "float32"),
    (None, ACC, False, "float32"),
    ("cpu", ACC, True, "keep"),
    (None, CSC, False, "keep"),
    ("meta", ACC, False, "keep"),
    ("hpu", ACC, False, "keep"),              # another type: not this one
])
def test_float64_on_an_accelerator_without_it(request_, mode, override,
                                              expected):
    assert _tdcore.float64_action(request_, "accelerator", mode,
                                  cpu_override=override,
                                  device_float64=False,
                                  accelerator="xpu") == expected
    # The generic record computes float64: nothing changes.
    assert _tdcore.float64_action(request_, "accelerator", mode,
                                  cpu_override=override,
                                  accelerator="xpu") == "keep"


def test_the_accelerators_own_type_is_native_on_every_profile():
    for profile in PROFILES:
        for text in ("xpu", "xpu:1"):
            res = _tdcore.resolve(text, profile, ACC, accelerator="xpu")
            assert res["target"] == "keep" and not res["redirected"]
    assert _tdcore.resolve("cuda:1", "accelerator", ACC,
                           accelerator="xpu")["redirected"] is True


def test_float64_error_policy():
    assert _tdcore.float64_action("cuda", "mps", float64="error") == "error"
    assert _tdcore.float64_action("cuda", "cpu", float64="error") == "keep"
    with pytest.raises(ValueError, match="float64"):
        _tdcore.float64_action("cuda", "mps", float64="sometimes")
