"""nndiag inside a PyTorch Lightning run: check-loss before the first step (through the module's own
training_step), the probe every 50 optimizer steps, and the curves verdict on what the module logged
when fit ends; one run folder with a summary.json a CI job can read.

    pip install 'nndiag[lightning]'
    python docs/examples/lightning_callback.py              # -> runs/DigitsMLP/lightning-<timestamp>/
    python docs/examples/lightning_callback.py --out run    # -> ./run/

The data is scikit-learn's 8x8 digits (shipped with it: no download). Exit code: 0 pass or warn,
1 fail, like the nndiag command line. Takes about 10 seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl

from nndiag.integrations.lightning import NNDiagCallback


class DigitsMLP(pl.LightningModule):
    def __init__(self, lr: float = 1e-3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)  # the names NNDiagCallback reads by default
        return {"loss": loss, "logits": logits, "targets": y}  # logits: check-loss expects ln C (else pass num_classes=)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def digits() -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x[:1400].mean(0)) / (x[:1400].std(0) + 1e-6)  # standardised with the training statistics
    y = torch.tensor(y)
    train = DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True)
    return train, DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="the run folder (default runs/DigitsMLP/lightning-<timestamp>/)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    pl.seed_everything(0, verbose=False)
    callback = NNDiagCallback(probe_every=50, out=args.out, fail_on=None)  # fail_on="fail" stops training on a failing stage
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(DigitsMLP(), *digits())
    summary = callback.summary  # the same object as <folder>/summary.json
    print(f"nndiag: {summary['status']} {summary['metrics']['steps']} -> {callback.folder}")
    for finding in summary["findings"]:
        print(f"  [{finding['step']}] {finding['severity']} {finding['code']}: {finding['message']}")
    return 1 if summary["status"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
