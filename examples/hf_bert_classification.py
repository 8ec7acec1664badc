"""A tiny BERT fine-tuned for sequence classification, written for CUDA.

The task is synthetic and learnable: positive sequences are drawn from the
upper half of the vocabulary, negative ones from the lower half.  The
script trains a few steps with AdamW and checks that the loss falls.  Nothing here knows about
TorchDevice; run it unmodified on any machine with

    python -m TorchDevice run examples/hf_bert_classification.py [--out r.pt]

No download: the model is built from a config with random weights and a
fixed seed.  `--out` saves the losses and final logits
(tests/test_transformers.py compares them bit for bit with the same program
written for the CPU by hand).
"""
import argparse

import torch
from transformers import BertConfig, BertForSequenceClassification


def batch(vocab_size: int, size: int, length: int):
    half = vocab_size // 2
    labels = torch.randint(0, 2, (size,), device="cuda")
    ids = torch.randint(4, half, (size, length), device="cuda")
    ids += labels[:, None] * (half - 4)
    ids[:, 0] = 1                                    # [CLS]
    return ids, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", help="torch.save the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    assert torch.cuda.is_available(), "this script needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed_all(args.seed)

    config = BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=64, num_labels=2,
                        pad_token_id=0)
    model = BertForSequenceClassification(config).to("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3,
                                  weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0, end_factor=0.1, total_iters=args.steps)

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    losses = []
    model.train()
    start.record()
    for step in range(args.steps):
        ids, labels = batch(config.vocab_size, 32, 8)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                    labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(out.loss.detach())
        if step % 5 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {out.loss.item():.4f}")
    end.record()
    torch.cuda.synchronize()
    print(f"{args.steps} steps in {start.elapsed_time(end):.0f} ms, peak "
          f"memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")

    model.eval()
    ids, labels = batch(config.vocab_size, 256, 8)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    k = max(1, args.steps // 4)
    first = torch.stack(losses[:k]).mean().item()
    last = torch.stack(losses[-k:]).mean().item()
    print(f"mean loss of the first {k} steps {first:.4f}, of the last {k} "
          f"{last:.4f}; held-out accuracy {accuracy:.2f}")
    if last >= first:
        raise SystemExit("the loss did not fall")

    if args.out:
        torch.save({"losses": torch.stack(losses).cpu(),
                    "logits": logits.cpu(),
                    "accuracy": accuracy,
                    "state": {k: v.cpu()
                              for k, v in model.state_dict().items()},
                    "device": str(logits.device)}, args.out)


if __name__ == "__main__":
    main()
