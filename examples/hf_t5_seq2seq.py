"""A tiny T5: a teacher-forced forward pass with loss, then greedy and beam
search generation, written for CUDA.

Nothing here knows about TorchDevice; run it unmodified on any machine with

    python -m TorchDevice run examples/hf_t5_seq2seq.py [--out results.pt]

No download: the model is built from a config with random weights and a
fixed seed.  `--out` saves the loss, logits and generated ids
(tests/test_transformers.py compares them bit for bit with the same program
written for the CPU by hand).
"""
import argparse

import torch
from transformers import T5Config, T5ForConditionalGeneration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="torch.save the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not torch.cuda.is_available():
        raise SystemExit("this script needs a CUDA GPU")
    device = torch.device("cuda")
    torch.manual_seed(args.seed)

    config = T5Config(vocab_size=128, d_model=64, d_kv=16, d_ff=128,
                      num_layers=2, num_decoder_layers=2, num_heads=4,
                      relative_attention_num_buckets=8,
                      decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    model = T5ForConditionalGeneration(config).to(device)
    print(f"T5: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{torch.cuda.device_count()} CUDA device(s), using "
          f"{torch.cuda.get_device_properties(device).name}")

    source = torch.randint(2, config.vocab_size, (3, 12), device=device)
    target = torch.randint(2, config.vocab_size, (3, 7), device=device)

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    model.eval()
    start.record()
    with torch.no_grad():
        out = model(input_ids=source, attention_mask=torch.ones_like(source),
                    labels=target)
        # Greedy; a fresh model's tied embeddings favour repeating the
        # start token, so repeats are banned to make the ids informative.
        generated = model.generate(source,
                                   attention_mask=torch.ones_like(source),
                                   max_new_tokens=10, do_sample=False,
                                   num_beams=1, no_repeat_ngram_size=1)
        beams = model.generate(source, attention_mask=torch.ones_like(source),
                               max_new_tokens=10, do_sample=False,
                               num_beams=3, no_repeat_ngram_size=2)
    end.record()
    torch.cuda.synchronize(device)
    print(f"loss {out.loss.item():.4f}; forward and generate "
          f"{start.elapsed_time(end):.1f} ms; "
          f"{torch.cuda.memory_allocated(device) / 2**20:.1f} MiB allocated")
    print(f"generated ids[0]: {generated[0].tolist()}")

    if args.out:
        torch.save({"loss": out.loss.cpu(), "logits": out.logits.cpu(),
                    "encoder": out.encoder_last_hidden_state.cpu(),
                    "generated": generated.cpu(), "beams": beams.cpu(),
                    "device": str(generated.device)}, args.out)


if __name__ == "__main__":
    main()
