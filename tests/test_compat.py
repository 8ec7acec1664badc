"""The original TorchDevice's documented API (docs/compatibility.md): the
names its README and demos use keep working, as thin views of TorchDevice's
own API."""
from __future__ import annotations


import pytest
import torch

import TorchDevice
from TorchDevice import TorchDevice as TD
from TorchDevice import _tdcore

from conftest import HAS_CUDA, HOST_LANDS, run_python


def test_apply_patches_enables_and_is_idempotent(restore_config):
    TorchDevice.disable()
    assert not TorchDevice.is_enabled()
    TD.apply_patches()
    assert TorchDevice.is_enabled()
    TorchDevice.TorchDevice.apply_patches()     # package.class.method
    assert TorchDevice.is_enabled()


def test_get_default_device_is_where_factories_land(restore_config):
    expected = torch.zeros(1).device.type
    assert TorchDevice.TorchDevice.get_default_device() == expected
    assert TD.get_default_device() in ("cuda", "mps", "cpu",
                                       TorchDevice.policy()["device"])
    with TorchDevice.cpu_override():
        assert TD.get_default_device() == "cpu"


def test_device_type_and_device_index_keywords():
    d = TD(device_type="cuda", device_index=0)
    assert d == TD("cuda", 0)
    assert d.device == torch.device("cuda", 0)   # both resolved alike
    assert TD(device_type="cuda") == TD("cuda")
    assert TD(device_type=torch.device("cuda")) == TD("cuda")
    with pytest.raises(TypeError, match="device_type"):
        TD("cuda", device_type="cuda")
    with pytest.raises(TypeError, match="device_index"):
        TD("cuda", 0, device_index=0)


def test_cpu_override_state_reads_the_live_setting(restore_config):
    _tdcore.set_cpu_override(False)
    assert TorchDevice.TorchDevice._cpu_override is False
    assert TorchDevice.TorchDevice._default_device == \
        torch.zeros(1).device.type
    torch.device("cpu:-1")                       # the original's switch
    assert TorchDevice.TorchDevice._cpu_override is True
    assert TorchDevice.TorchDevice._default_device == "cpu"
    TorchDevice.TorchDevice._cpu_override = False    # the original's reset
    assert _tdcore.get_cpu_override() is False


@pytest.mark.skipif(HAS_CUDA, reason="torch.cuda is CUDA's own on an NVIDIA "
                    "GPU: its stream() needs a stream, as without TorchDevice")
def test_cuda_stream_without_a_stream_is_a_no_op_context():
    before = torch.cuda.current_stream()
    with torch.cuda.stream():
        assert torch.cuda.current_stream() == before
    side = torch.cuda.Stream()
    with torch.cuda.stream(stream=side):         # torch's keyword
        assert torch.cuda.current_stream() == side
    assert torch.cuda.current_stream() == before


ORIGINAL_STYLE = '''
import logging
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
import TorchDevice
import torch
from TorchDevice import TorchDevice as TD
TD.apply_patches()
log = logging.getLogger("demo")
log.info("Default device: %s", TorchDevice.TorchDevice.get_default_device())
log.info("override: %s", TorchDevice.TorchDevice._cpu_override)
dev = TD(device_type="cuda", device_index=0)
x = torch.randn(3, 3).to(torch.device("cuda"))
s = torch.cuda.Stream()
with torch.cuda.stream(s):
    y = x * 2
start = torch.cuda.Event(enable_timing=True)
end = torch.cuda.Event(enable_timing=True)
start.record()
z = y @ y
end.record()
torch.cuda.synchronize()
log.info("elapsed %.3f ms on %s", start.elapsed_time(end), z.device)
log.info("device %s", dev.device)
'''


def test_a_program_written_for_the_original_runs():
    """The calls the original's README and demos make, in one program, with
    logging configured the way its demos do (logging.basicConfig)."""
    proc = run_python(ORIGINAL_STYLE)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    profile = TorchDevice.hardware_profile()
    assert f"demo Default device: {HOST_LANDS.type}" in err
    assert "demo override: False" in err
    assert "demo elapsed" in err
    if profile != "cuda":
        # TorchDevice's own log, through the application's configuration
        assert "TorchDevice <string>:" in err


TINY_MASKED_LM = '''
import os, sys, time
import torch
import TorchDevice
from transformers import (AutoModelForMaskedLM, AutoTokenizer, BertConfig,
                          BertForMaskedLM, BertTokenizerFast)
d = sys.argv[1]
words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick",
         "brown", "fox", "jumps", "over", "lazy", "dog", "."]
with open(os.path.join(d, "vocab.txt"), "w") as f:
    f.write("\\n".join(words) + "\\n")
BertTokenizerFast(vocab_file=os.path.join(d, "vocab.txt")).save_pretrained(d)
torch.manual_seed(0)
BertForMaskedLM(BertConfig(vocab_size=len(words), hidden_size=32,
                           num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)).save_pretrained(d)
# What the original's transformers demo does, on that local model.
print("Default device:", TorchDevice.TorchDevice.get_default_device())
tokenizer = AutoTokenizer.from_pretrained(d)
model = AutoModelForMaskedLM.from_pretrained(d)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = model.to(device)
inputs = tokenizer("the quick brown [MASK] jumps", return_tensors="pt").to(device)
with torch.no_grad():
    logits = model(**inputs).logits
print("logits on", logits.device.type, tuple(logits.shape))
'''


def test_transformers_masked_lm_in_the_original_style(tmp_path):
    pytest.importorskip("transformers")
    proc = run_python(TINY_MASKED_LM, str(tmp_path),
                      env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                           "TRANSFORMERS_VERBOSITY": "error"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Default device: {HOST_LANDS.type}" \
        in proc.stdout
    assert "logits on" in proc.stdout


@pytest.mark.parametrize("args", [("",), ()], ids=["empty string", "no argument"])
def test_default_device_spellings_of_the_original_raise_as_torch_does(
        args, restore_config):
    """torch.device("") and torch.device() named the default device in the
    original; here they are malformed specs and raise torch's own error."""
    TorchDevice.disable()
    with pytest.raises(Exception) as native:
        torch.device(*args)
    TorchDevice.enable()
    with pytest.raises(type(native.value)) as here:
        torch.device(*args)
    assert str(here.value) == str(native.value)
