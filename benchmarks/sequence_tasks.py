"""The token-id tasks of nndiag.zoo.sequences, trained with a plain PyTorch loop: accuracy, time, initial loss.

    python -m benchmarks.sequence_tasks                       # every setting, seeds 0 1 2, 1 torch thread
    python -m benchmarks.sequence_tasks --only first-gru --seeds 1 --threads 2

Each setting is a would-be bundled recipe (data args, model args, optimizer, LR, schedule, batch size,
epochs) run by a bare loop: shuffle, forward, cross-entropy (targets of -100 ignored), backward,
step, then the validation accuracy after every epoch. nndiag's Trainer is not used (it cannot run
token models yet); the LR schedule is nndiag's own `lr_factor`, so a recipe with the same keys
trains the same way. Reported per seed:
  init_loss    validation loss of the untrained model, against ln C (C = the logits' last dimension:
               the classes, or the vocabulary for the token-level task)
  val_acc      validation accuracy after the last epoch (over positions whose target is not -100)
  t90_s        training seconds until validation accuracy first reached 90% (blank: never)
  train_s      training seconds, all epochs (evaluation included); total_s adds data and model building
Target (issue 10): >= 90% validation accuracy in < 60 s on 2 CPU cores. Timings depend on what else
runs on the machine; the load average is written with them. Writes benchmarks/results/sequence_tasks.md.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from nndiag.config.recipe import ScheduleConfig
from nndiag.training.engine import lr_factor
from nndiag.zoo import sequences

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_ACC = 0.9  # validation accuracy a bundled sequence recipe must reach (issue 10)
TARGET_S = 60.0  # ... within this many seconds on 2 CPU cores

FIRST = {"task": "first", "num_samples": 4000, "seq_len": 24, "vocab_size": 16}  # 3,200 train / 800 val, 4 classes
REVERSE = {"task": "reverse", "num_samples": 4000, "seq_len": 24, "vocab_size": 16}  # targets (N, 24), -100 off the answer slots
TINY_BERT = {  # BertConfig fields: ~20k parameters
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 16,
    "max_position_embeddings": 32,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
COSINE = {"name": "cosine", "warmup_steps": 50}

SETTINGS: dict[str, dict[str, Any]] = {  # name -> the recipe's keys
    "first-gru": {
        "data": FIRST,
        "model": ("gru", {"vocab_size": 16, "d_model": 32, "hidden": 64}),
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "schedule": {"name": "none"},
        "batch_size": 64,
        "epochs": 5,
    },
    "first-transformer": {
        "data": FIRST,
        "model": ("transformer", {"vocab_size": 16, "d_model": 64, "heads": 4, "layers": 2}),
        "optim": {"lr": 3e-3, "weight_decay": 0.0},
        "schedule": COSINE,
        "batch_size": 64,
        "epochs": 6,
    },
    "first-bert": {
        "data": {**FIRST, "format": "dict"},
        "model": ("huggingface", {"model_type": "bert", **TINY_BERT}),
        "optim": {"lr": 3e-3, "weight_decay": 0.0},
        "schedule": COSINE,
        "batch_size": 64,
        "epochs": 8,
    },
    "reverse-transformer": {
        "data": REVERSE,
        "model": ("transformer", {"vocab_size": 16, "d_model": 64, "heads": 4, "layers": 2, "per_token": True}),
        "optim": {"lr": 3e-3, "weight_decay": 0.0},
        "schedule": COSINE,
        "batch_size": 64,
        "epochs": 6,
    },
    "reverse-bert": {
        "data": {**REVERSE, "format": "dict"},
        "model": ("huggingface", {"model_type": "bert", "task": "token-classification", **TINY_BERT}),
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "schedule": COSINE,
        "batch_size": 64,
        "epochs": 8,
    },
}


# The two calls a batch goes through; the only places that know the batch formats.
def forward(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logits, targets) of one batch: an (X, y) pair or a dict passed as keyword arguments."""
    if isinstance(batch, dict):
        out = model(**batch)
        return out["loss"], out["logits"], batch["labels"]
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=sequences.IGNORE_INDEX), logits, y


def rows(split: Any, index: torch.Tensor | slice) -> Any:
    return {k: v[index] for k, v in split.items()} if isinstance(split, dict) else tuple(t[index] for t in split)


def size(split: Any) -> int:
    return len(split["labels"]) if isinstance(split, dict) else len(split[0])


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Any, batch_size: int = 1000) -> tuple[float, float, int]:
    """(mean loss over counted targets, accuracy, number of classes C) on a whole split."""
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    classes = 0
    for start in range(0, size(split), batch_size):
        loss, logits, y = forward(model, rows(split, slice(start, start + batch_size)))
        counted = y != sequences.IGNORE_INDEX
        n = int(counted.sum())
        loss_sum += float(loss) * n
        correct += int((logits.argmax(-1) == y)[counted].sum())
        total += n
        classes = logits.shape[-1]
    model.train()
    return loss_sum / total, correct / total, classes


def run(name: str, setting: dict[str, Any], seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    train, val = sequences.tokens(seed=seed, **setting["data"])
    labels = train["labels"] if isinstance(train, dict) else train[1]
    inputs = train["input_ids"] if isinstance(train, dict) else train[0]
    builder, args = setting["model"]
    num_outputs = setting["data"]["vocab_size"] if labels.ndim == 2 else int(labels.max()) + 1
    model = getattr(sequences, builder)(tuple(inputs.shape[1:]), num_outputs, **args)
    init_loss, init_acc, classes = evaluate(model, val)
    optimizer = torch.optim.AdamW(model.parameters(), lr=setting["optim"]["lr"], weight_decay=setting["optim"]["weight_decay"])
    batch_size, epochs = setting["batch_size"], setting["epochs"]
    steps_per_epoch = math.ceil(size(train) / batch_size)
    schedule = ScheduleConfig(**setting["schedule"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(schedule, s, epochs * steps_per_epoch, steps_per_epoch))
    order = torch.Generator().manual_seed(seed)
    t_train = time.perf_counter()
    t90 = None
    accs = []
    for _ in range(epochs):
        for index in torch.randperm(size(train), generator=order).split(batch_size):
            loss = forward(model, rows(train, index))[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        val_loss, acc, _ = evaluate(model, val)
        accs.append(acc)
        if t90 is None and acc >= TARGET_ACC:
            t90 = time.perf_counter() - t_train
    end = time.perf_counter()
    return {
        "setting": name,
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
        "init_loss": init_loss,
        "ln_C": math.log(classes),
        "val_loss": val_loss,
        "val_acc": accs[-1],
        "accs": " ".join(f"{a:.3f}" for a in accs),
        "t90_s": t90,
        "train_s": end - t_train,
        "total_s": end - t0,
    }


def report(frame: pd.DataFrame, command: str, threads: int) -> str:
    lines = [
        "# sequence tasks: nndiag.zoo.sequences data and models, trained by a plain PyTorch loop",
        "",
        f"`{command}`",
        f"({threads} torch thread(s); CPU; load average when the run ended: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores:",
        "other processes shared the CPU, so the times are upper bounds of a quiet machine's.)",
        f"Target: validation accuracy >= {TARGET_ACC:.0%} in < {TARGET_S:.0f} s. init_loss should be close to ln C.",
        "",
        "| setting | seed | params | init loss | ln C | val acc (last epoch) | val acc per epoch | s to 90% | train s | total s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in frame.itertuples():
        t90 = "never" if pd.isna(r.t90_s) else f"{r.t90_s:.1f}"
        lines.append(
            f"| {r.setting} | {r.seed} | {r.params} | {r.init_loss:.3f} | {r.ln_C:.3f} | {r.val_acc:.3f} | {r.accs} | "
            f"{t90} | {r.train_s:.1f} | {r.total_s:.1f} |"
        )
    lines += ["", "Settings (the recipe keys; optimizer AdamW):", ""]
    for name in dict.fromkeys(frame.setting):
        lines.append(f"- `{name}`: {SETTINGS[name]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="run only these settings")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for each setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (on a shared CPU, 1 is often faster than 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.only or SETTINGS:
        for seed in range(args.seeds):
            row = run(name, SETTINGS[name], seed)
            print(
                f"{name} seed {seed}: init loss {row['init_loss']:.3f} (ln C {row['ln_C']:.3f}), val acc {row['val_acc']:.3f}, "
                f"90% after {row['t90_s'] if row['t90_s'] is None else round(row['t90_s'], 1)} s, train {row['train_s']:.1f} s",
                flush=True,
            )
            results.append(row)
    frame = pd.DataFrame(results)
    flags = (" --only " + " ".join(args.only) if args.only else "") + f" --seeds {args.seeds} --threads {args.threads}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sequence_tasks.md").write_text(report(frame, f"python -m benchmarks.sequence_tasks{flags}", args.threads))
    frame.to_csv(RESULTS / "sequence_tasks.csv", index=False)


if __name__ == "__main__":
    main()
