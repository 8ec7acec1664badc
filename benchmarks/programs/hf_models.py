"""GPT-2, BERT, Llama and T5, each at two sizes, written for CUDA: a
training step (forward with labels, backward, AdamW), an evaluation forward,
and greedy `generate` for the decoders and T5.  Tiny configs, random
weights, a fixed seed: nothing is downloaded.

Prints `RESULT name value` lines (benchmarks/policy_matrix.py compares them
with the CPU run of the same program).
"""
import torch
from transformers import (BertConfig, BertForMaskedLM, GPT2Config,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          T5Config, T5ForConditionalGeneration)

device = torch.device("cuda")
SIZES = {"xs": dict(hidden=32, layers=1, heads=2),
         "s": dict(hidden=64, layers=2, heads=4)}


def build(kind, size):
    h, n, a = size["hidden"], size["layers"], size["heads"]
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=256, n_positions=64, n_embd=h, n_layer=n, n_head=a,
            bos_token_id=1, eos_token_id=2, pad_token_id=0))
    if kind == "bert":
        return BertForMaskedLM(BertConfig(
            vocab_size=256, hidden_size=h, num_hidden_layers=n,
            num_attention_heads=a, intermediate_size=2 * h,
            max_position_embeddings=64))
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=256, hidden_size=h, intermediate_size=2 * h,
            num_hidden_layers=n, num_attention_heads=a,
            num_key_value_heads=max(1, a // 2), max_position_embeddings=64,
            bos_token_id=1, eos_token_id=2, pad_token_id=0))
    return T5ForConditionalGeneration(T5Config(
        vocab_size=256, d_model=h, d_kv=h // a, d_ff=2 * h, num_layers=n,
        num_heads=a, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1))


for kind in ("gpt2", "bert", "llama", "t5"):
    for size_name, size in SIZES.items():
        torch.manual_seed(0)
        model = build(kind, size).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        ids = torch.randint(3, 256, (2, 16), device="cuda")
        mask = torch.ones_like(ids)
        mask[1, 12:] = 0
        if kind == "t5":
            labels = torch.randint(3, 256, (2, 8), device=device)
            batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
        else:
            batch = dict(input_ids=ids, attention_mask=mask, labels=ids)
        model.train()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        model.eval()
        with torch.no_grad():
            out = model(**batch)
        name = f"{kind}-{size_name}"
        print(f"RESULT {name}.train_loss {loss.item():.6g}")
        print(f"RESULT {name}.eval_loss {out.loss.item():.6g}")
        print(f"RESULT {name}.logit_sum {out.logits.float().sum().item():.6g}")
        if kind != "bert":
            gen = model.generate(ids[:, :6], attention_mask=mask[:, :6],
                                 max_new_tokens=5, do_sample=False)
            print(f"RESULT {name}.generate {gen.cpu().tolist()}")
print("done")
