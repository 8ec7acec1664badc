"""`pipeline`s on CUDA (`device="cuda"`): text generation with a tiny GPT-2
and fill-mask with a tiny BERT, tokenized by a word-level tokenizer built in
memory.  The tokenizer's tensors are made on the host and the pipeline moves
them, as on a GPU.  Random weights, a fixed seed: nothing is downloaded."""
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (BertConfig, BertForMaskedLM, GPT2Config,
                          GPT2LMHeadModel, PreTrainedTokenizerFast, pipeline)

WORDS = ("the cat dog sat on a mat and ran to house big small red blue "
         "tree under over").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
core.pre_tokenizer = pre_tokenizers.Whitespace()
tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]",
                              unk_token="[UNK]", cls_token="[CLS]",
                              sep_token="[SEP]", mask_token="[MASK]",
                              eos_token="[SEP]", bos_token="[CLS]")

torch.manual_seed(0)
gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=32,
                                  n_embd=32, n_layer=2, n_head=2,
                                  bos_token_id=2, eos_token_id=3,
                                  pad_token_id=0))
generate = pipeline("text-generation", model=gpt2, tokenizer=tok,
                    device="cuda")
for prompt in ("the cat sat", "a big red"):
    out = generate(prompt, max_new_tokens=6, do_sample=False)
    print(f"RESULT generate[{prompt}] {out[0]['generated_text']!r}")

torch.manual_seed(1)
bert = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64,
                                  max_position_embeddings=32))
fill = pipeline("fill-mask", model=bert, tokenizer=tok, device="cuda")
for cand in fill("the [MASK] sat on the mat", top_k=3):
    print(f"RESULT fill {cand['token_str']} {cand['score']:.5f}")
print(f"pipelines ran on {generate.device} and {fill.device}")
