"""A bare PyTorch training loop doing the same work as `nndiag train RECIPE`: the baseline of
benchmarks/train_overhead.py. Run as a whole process, like the command it is compared with:

    python -m benchmarks.bare_train recipes/mnist1d-mlp.yaml

It reads the same recipe (plain YAML, no nndiag import), builds the same data and model with the
same seed, and trains with the same optimizer, batch size and epochs: shuffled minibatches held on
the device, train loss and accuracy summed on the device, a validation pass each epoch. Only the
recipes the benchmark uses are supported (mnist1d + mlp; token data + a Hugging Face model).
"""

from __future__ import annotations

import math
import sys
import time

import yaml


def mnist1d_mlp(recipe: dict) -> tuple:
    import numpy as np
    import torch
    from mnist1d.data import get_dataset_args, make_dataset
    from torch import nn

    args = get_dataset_args()
    data = make_dataset(args)
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"])
    xv, yv = torch.tensor(data["x_test"], dtype=torch.float32), torch.tensor(data["y_test"])
    np.random.seed(recipe.get("seed", 0))
    torch.manual_seed(recipe.get("seed", 0))
    hidden = recipe["model"]["args"]["hidden"]
    layers, width = [], x.shape[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    train, val = (x, y), (xv, yv)

    def forward(batch: tuple) -> tuple:
        logits = model(batch[0])
        return nn.functional.cross_entropy(logits, batch[1]), logits, batch[1]

    return model, train, val, forward


def tokens_huggingface(recipe: dict) -> tuple:
    import torch

    from nndiag.zoo.sequences import huggingface, tokens  # the data generator and model builder the recipe names

    (train, val) = tokens(**recipe["data"].get("args", {}))
    torch.manual_seed(recipe.get("seed", 0))
    classes = int(train["labels"].max()) + 1
    model = huggingface((train["input_ids"].shape[1],), classes, **recipe["model"].get("args", {}))

    def forward(batch: dict) -> tuple:
        out = model(**batch)
        return out.loss, out.logits, batch["labels"]

    return model, train, val, forward


def index(batch: object, rows: object) -> object:
    return {k: v[rows] for k, v in batch.items()} if isinstance(batch, dict) else tuple(t[rows] for t in batch)


def size(batch: object) -> int:
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(first.shape[0])


def main(path: str) -> None:
    import torch

    recipe = yaml.safe_load(open(path))
    build = {"mnist1d": mnist1d_mlp, "tokens": tokens_huggingface}[recipe["data"]["name"]]
    model, train, val, forward = build(recipe)
    optim = recipe["optim"]
    make = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim["name"]]
    optimizer = make(model.parameters(), lr=optim["lr"], weight_decay=optim.get("weight_decay", 0.0))
    batch_size, epochs = recipe["train"]["batch_size"], recipe["train"]["epochs"]
    generator = torch.Generator().manual_seed(recipe.get("seed", 0))
    started = time.perf_counter()
    n = size(train)
    for epoch in range(epochs):
        model.train()
        loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batch = index(train, order[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss, logits, targets = forward(batch)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * targets.shape[0]
            correct += (logits.detach().argmax(-1) == targets).sum()
            seen += targets.shape[0]
        model.eval()
        with torch.no_grad():
            val_loss, val_correct = 0.0, 0
            for start in range(0, size(val), 4 * batch_size):
                loss, logits, targets = forward(index(val, slice(start, start + 4 * batch_size)))
                val_loss += float(loss) * targets.shape[0]
                val_correct += int((logits.argmax(-1) == targets).sum())
        last = (float(loss_sum) / seen, float(correct) / seen, val_loss / size(val), val_correct / size(val))
    print(
        f"bare loop: {epochs} epochs in {time.perf_counter() - started:.2f} s; train loss {last[0]:.4f} acc {last[1]:.3f}, "
        f"val loss {last[2]:.4f} acc {last[3]:.3f}"
        if not math.isnan(last[0])
        else "diverged"
    )


if __name__ == "__main__":
    main(sys.argv[1])
