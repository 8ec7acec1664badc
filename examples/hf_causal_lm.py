"""A tiny GPT-2 trained for one step and decoded greedily, written for CUDA.

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

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="torch.save the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not torch.cuda.is_available():
        raise SystemExit("this script needs a CUDA GPU")
    device = torch.device("cuda")
    torch.manual_seed(args.seed)

    config = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2,
                        n_head=4, bos_token_id=1, eos_token_id=2,
                        pad_token_id=0)
    model = GPT2LMHeadModel(config).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    print(f"GPT-2: {sum(p.numel() for p in model.parameters()):,} parameters "
          f"on {torch.cuda.get_device_name(0)}")

    input_ids = torch.randint(3, config.vocab_size, (4, 32), device="cuda")
    attention_mask = torch.ones_like(input_ids)

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda.reset_peak_memory_stats()
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
    torch.cuda.synchronize()
    print(f"train step: loss {out.loss.item():.4f}, "
          f"{start.elapsed_time(end):.1f} ms, peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")

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
    torch.cuda.synchronize()
    print(f"greedy generate: {generated.shape[1] - prompt.shape[1]} new "
          f"tokens in {start.elapsed_time(end):.1f} ms")
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
