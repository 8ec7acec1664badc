"""transformers' Trainer for a few steps on a tiny GPT-2, with evaluation,
on a machine where the program was written for CUDA (`TrainingArguments`
picks the GPU itself).  Random weights, a fixed seed, synthetic data."""
import tempfile

import torch
from torch.utils.data import Dataset
from transformers import (GPT2Config, GPT2LMHeadModel, Trainer,
                          TrainingArguments)


class Tokens(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, 128, (n, 16), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


assert torch.cuda.is_available(), "written for a CUDA machine"
torch.manual_seed(0)
# No dropout: the numbers then do not depend on which generator (host or
# device) dropout draws from, and runs on different devices compare.
model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=32, n_embd=32,
                                   n_layer=2, n_head=2, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0))
with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(output_dir=out, max_steps=6,
                             per_device_train_batch_size=4,
                             per_device_eval_batch_size=8, learning_rate=1e-3,
                             logging_steps=2, save_strategy="no",
                             report_to=[], seed=0, data_seed=0,
                             dataloader_num_workers=0,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(48, 1),
                      eval_dataset=Tokens(16, 2))
    result = trainer.train()
    metrics = trainer.evaluate()
print(f"trained on {next(model.parameters()).device}")
print(f"RESULT train_loss {result.training_loss:.6g}")
print(f"RESULT eval_loss {metrics['eval_loss']:.6g}")
for i, entry in enumerate(e for e in trainer.state.log_history
                          if "loss" in e):
    print(f"RESULT logged_loss_{i} {entry['loss']:.6g}")
