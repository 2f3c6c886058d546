"""nndiag inside a Hugging Face Trainer run: check-loss at train begin (the model's own loss on the
Trainer's batches: C from the logits, expected ln C), the probe every 10 optimizer steps, and the
curves verdict on trainer.state.log_history at train end; one run folder with a summary.json.

    pip install 'nndiag[hf]'
    python docs/examples/hf_callback.py              # -> runs/BertForSequenceClassification/hf-<timestamp>/
    python docs/examples/hf_callback.py --out run    # -> ./run/

The model is a tiny BERT built from a config and the data is generated here (no download): each
sequence's tokens all belong to its class. Exit code: 0 pass or warn, 1 fail. About 10 seconds on CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from nndiag.integrations.transformers import NNDiagCallback

VOCAB, CLASSES, LENGTH = 20, 3, 12


class TokenRows(torch.utils.data.Dataset):
    """{input_ids, attention_mask, labels} items, as a tokenized Hugging Face dataset yields them."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, CLASSES, (n,), generator=g)
        self.ids = 3 * torch.randint(0, 6, (n, LENGTH), generator=g) + self.labels[:, None] + 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": self.labels[i]}


def accuracy(prediction) -> dict[str, float]:
    """Logged as eval_accuracy, which NNDiagCallback reads as the validation accuracy."""
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="the run folder (default runs/BertForSequenceClassification/hf-<timestamp>/)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=CLASSES,
    )
    callback = NNDiagCallback(probe_every=10, out=args.out)  # fail_on="fail" stops training on a failing stage
    with tempfile.TemporaryDirectory() as checkpoints:
        training = TrainingArguments(
            output_dir=checkpoints,
            report_to=[],
            use_cpu=True,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=16,
            learning_rate=3e-3,
            logging_steps=1,
            eval_strategy="epoch",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=training,
            train_dataset=TokenRows(192, 0),
            eval_dataset=TokenRows(64, 1),
            compute_metrics=accuracy,
            callbacks=[callback],
        )
        trainer.train()
    summary = callback.summary  # the same object as <folder>/summary.json
    print(f"nndiag: {summary['status']} {summary['metrics']['steps']} -> {callback.folder}")
    for finding in summary["findings"]:
        print(f"  [{finding['step']}] {finding['severity']} {finding['code']}: {finding['message']}")
    return 1 if summary["status"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
