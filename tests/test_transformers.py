"""HuggingFace Transformers programs written for CUDA run unmodified under
TorchDevice and give the same numbers, bit for bit, as the same programs
written for the CPU by hand (on another accelerator, whose attention takes
torch's math kernel instead of the CPU's fused one: within 1e-5).

Each example in examples/hf_*.py is run with `python -m TorchDevice run`;
its hand-made CPU variant in tests/cpu_reference/ is run natively (no
TorchDevice) at the same time.  Both save their results with torch.save and
the test compares every tensor with torch.equal.  The models are tiny and
built from configs with a fixed seed: nothing is downloaded.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List

import pytest
import torch

import TorchDevice
from conftest import HAS_CUDA, HAS_MPS, ROOT, TARGET
from cpu_reference.audit import (assert_close, assert_identical, finish,
                                 start, assert_only_accelerator_lines_differ)

pytest.importorskip("transformers")

EXAMPLES = ROOT / "examples"
REFERENCE = Path(__file__).resolve().parent / "cpu_reference"
SCRIPTS = ["hf_causal_lm.py", "hf_bert_classification.py",
           "hf_t5_seq2seq.py"]

# What the CPU variant may change: statements that name CUDA.  The CUDA
# event's elapsed_time has no CPU counterpart, so its lines count as CUDA.
CUDA_WORDS = re.compile(r"cuda|elapsed_time", re.IGNORECASE)
# Never reach the network; keep transformers quiet.
HF_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
          "TRANSFORMERS_VERBOSITY": "error"}


def torchdevice_cmd(script: Path, *args: str) -> List[str]:
    """The launcher; forced to the CPU where another profile would make the
    numbers differ from the CPU reference legitimately."""
    target = ["--target", "cpu"] if HAS_CUDA or HAS_MPS else []
    return [sys.executable, "-m", "TorchDevice", "run", *target, str(script),
            *args]


@pytest.mark.parametrize("name", SCRIPTS)
def test_reference_variant_changes_only_cuda_lines(name):
    """The CPU variant is the example with its CUDA statements edited by
    hand and nothing else, so the comparison below is of the same program."""
    assert_only_accelerator_lines_differ(EXAMPLES / name, REFERENCE / name,
                                         CUDA_WORDS)


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_cuda_program_matches_cpu_program_bit_for_bit(name, tmp_path):
    td_out, ref_out = tmp_path / "torchdevice.pt", tmp_path / "reference.pt"
    td = start(torchdevice_cmd(EXAMPLES / name, "--out", str(td_out)), HF_ENV)
    ref = start([sys.executable, str(REFERENCE / name), "--out",
                 str(ref_out)], HF_ENV)
    td_stdout, ref_stdout = finish(td), finish(ref)

    with TorchDevice.cpu_override():       # compared on the host
        got = torch.load(td_out, weights_only=True, map_location="cpu")
        want = torch.load(ref_out, weights_only=True, map_location="cpu")
    # Where the machine has another accelerator (make test-accel), the
    # program runs there; its kernels are the host's, so the numbers still
    # are the CPU program's.
    assert want.pop("device") == "cpu" and got.pop("device") == str(TARGET)
    if TARGET.type == "cpu":
        assert_identical(want, got)
    else:
        # Another device's attention and reductions may take another
        # kernel (the math path, not the CPU's fused one): float32
        # rounding apart, the same numbers; every token id equal.
        assert_close(want, got, atol=1e-5)
    # "Identical ids" must mean something: decoding is not constant.
    if "generated" in want:
        new_tokens = want["generated"][:, -8:]
        assert all(len(set(row.tolist())) > 2 for row in new_tokens), \
            want["generated"]

    # The CUDA-only calls really answered: event timings and memory.
    times = [float(t) for t in re.findall(r"([\d.]+) ms", td_stdout)]
    assert times and all(t > 0 for t in times), td_stdout
    mib = [float(m) for m in re.findall(r"([\d.]+) MiB", td_stdout)]
    assert mib and all(m > 0 for m in mib), td_stdout
    assert "no CPU event timing" in ref_stdout


# transformers' generation test "compile model forward, fullgraph" for a
# tiny random model, run as a zero-edit program under TORCHDEVICE=1: greedy
# decoding with the model's forward compiled (fullgraph, static cache) gives
# the eager tokens, and a second batch of the same shape compiles nothing
# new.  Nemotron's layer norm opens an autocast region inside the compiled
# forward (transformers' maybe_autocast), as Llama's rotary embedding did in
# earlier transformers releases.
COMPILE_GENERATE = '''
import sys
import torch
import transformers
from transformers import CompileConfig

arch, backend = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
config = getattr(transformers, arch + "Config")(
    vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    pad_token_id=0, bos_token_id=1, eos_token_id=2)
model = getattr(transformers, arch + "ForCausalLM")(config).to("cuda").eval()
assert type(model)._can_compile_fullgraph
ids = torch.randint(3, 99, (4, 7), device="cuda")
batches = [dict(input_ids=ids[:2], attention_mask=torch.ones_like(ids[:2])),
           dict(input_ids=ids[2:], attention_mask=torch.ones_like(ids[2:]))]
compile_config = CompileConfig(fullgraph=True, dynamic=False, backend=backend)
compile_config._compile_all_devices = True
kwargs = dict(use_cache=True, do_sample=False, max_new_tokens=5,
              return_dict_in_generate=True, output_scores=True,
              compile_config=compile_config)
with torch.compiler.set_stance("force_eager"):
    eager = [model.generate(**b, **kwargs) for b in batches]
torch.compiler.reset()
compiled = [model.generate(**batches[0], **kwargs,
                           cache_implementation="static")]
with torch.compiler.set_stance("fail_on_recompile"):
    compiled.append(model.generate(**batches[1], **kwargs,
                                   cache_implementation="static"))
assert hasattr(model, "_compiled_call"), "the forward was not compiled"
for e, c in zip(eager, compiled):
    assert torch.equal(e.sequences, c.sequences), (e.sequences, c.sequences)
    for a, b in zip(e.scores, c.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
print("compiled generation matches", eager[0].sequences.device)
'''


# The device types Inductor generates code for.
INDUCTOR_DEVICES = ("cpu", "cuda", "mps", "xpu")


@pytest.mark.slow
@pytest.mark.parametrize("arch, backend", [("Llama", "inductor"),
                                           ("Nemotron", "eager")])
def test_generate_compile_model_forward_fullgraph(tmp_path, arch, backend):
    if backend == "inductor" and TARGET.type not in INDUCTOR_DEVICES:
        pytest.skip(f"Inductor has no code generator for {TARGET.type}")
    script = tmp_path / "compile_generate.py"
    script.write_text(COMPILE_GENERATE)
    env = dict(HF_ENV, TORCHDEVICE="1")
    if HAS_CUDA or HAS_MPS:
        env["TORCHDEVICE_TARGET"] = "cpu"
    out = finish(start([sys.executable, str(script), arch, backend], env))
    where = "cpu" if HAS_CUDA or HAS_MPS else str(TARGET)
    assert f"compiled generation matches {where}" in out, out
