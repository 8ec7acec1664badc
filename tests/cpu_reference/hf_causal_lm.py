"""REFERENCE VARIANT of examples/hf_causal_lm.py: every CUDA call replaced
by its CPU counterpart by hand, run natively (no TorchDevice).

Nothing here knows about TorchDevice: it is the kind of script HuggingFace
users write for an NVIDIA GPU (`model.cuda()`, `device="cuda"`, CUDA events
for timing, `torch.cuda.max_memory_allocated()`).  Run it unmodified on any
machine with

    python -m TorchDevice run examples/hf_causal_lm.py [--out results.pt]

No download: the model is built from a config with random weights and a
fixed seed.  `--out` saves the logits, loss, gradients and generated ids
(tests/test_transformers.py compares them bit for bit with the same program
written for the CPU by hand).
"""
import argparse
import platform

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="torch.save the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not torch.cpu.is_available():
        raise SystemExit("this script needs a CPU")
    device = torch.device("cpu")
    torch.manual_seed(args.seed)

    config = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2,
                        n_head=4, bos_token_id=1, eos_token_id=2,
                        pad_token_id=0)
    model = GPT2LMHeadModel(config).cpu()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    print(f"GPT-2: {sum(p.numel() for p in model.parameters()):,} parameters "
          f"on {platform.machine()}")

    input_ids = torch.randint(3, config.vocab_size, (4, 32), device="cpu")
    attention_mask = torch.ones_like(input_ids)

    start = torch.cpu.Event()
    end = torch.cpu.Event()
    model.train()
    start.record()
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                labels=input_ids)
    out.loss.backward()
    grads = {name: p.grad.detach().clone()
             for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    end.record()
    torch.cpu.synchronize()
    print(f"train step: loss {out.loss.item():.4f}, "
          f"(no CPU event timing or peak memory)")

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device)).logits
    prompt = input_ids[:2, :8]
    # Greedy; a fresh model's tied embeddings favour repeating its last token,
    # so repeats are banned to make the ids informative.
    start.record()
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                               max_new_tokens=16, do_sample=False,
                               no_repeat_ngram_size=1,
                               pad_token_id=config.pad_token_id)
    end.record()
    torch.cpu.synchronize()
    print(f"greedy generate: {generated.shape[1] - prompt.shape[1]} new "
          f"tokens (no CPU event timing)")
    print(f"generated ids[0]: {generated[0].tolist()}")

    if args.out:
        torch.save({"loss": out.loss.detach().cpu(),
                    "train_logits": out.logits.detach().cpu(),
                    "grads": {k: v.cpu() for k, v in grads.items()},
                    "eval_logits": logits.cpu(),
                    "generated": generated.cpu(),
                    "device": str(logits.device)}, args.out)


if __name__ == "__main__":
    main()
