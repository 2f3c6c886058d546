"""Small benchmark problems (no download): different data, models, optimizers, and fine-tuning.

Each entry of PROBLEMS is a recipe (the same dict a YAML recipe holds) plus two benchmark keys:

    split     "derive" | "report" | "holdout". Round 1: lr-find's suggestion rule was derived on the
              derive half only and reported on the report half (a fixed split, chosen before any rule
              was changed, so each half mixes data sets, models and optimizers, and holds one known
              miss and one fine-tuning problem or more). Round 2: derive + report together are the
              tuning set (both have been seen), and the rule is reported on "holdout": 8 problems
              added and frozen before any second-round rule variant was scored on them (other
              data/model/optimizer combinations: a deeper MLP with Adam, SGD+momentum on a 1-D CNN,
              a 2-layer GRU with AdamW and a Transformer with Adam on nndiag's own token task,
              RMSprop on a digits CNN, a BatchNorm MLP with Adam, Adagrad (an optimizer absent from
              the tuning set), and a continued-training CNN with AdamW).
    pretrain  optional {"steps": N, "lr": LR, "data": {...}}: a fine-tuning problem. The model is first
              trained N steps at LR (a good LR for training from scratch, with its own batch order),
              on `data` when given (a source task: pretraining elsewhere, then fine-tuning on the
              entry's data) or else on the entry's own data (continued training). Then the optimizer
              is dropped: lr-find and the grid start from those trained weights with a fresh
              optimizer, as a user fine-tuning a trained model would.

A new problem is one entry: the recipe may name custom data and models by `target` ("module:attr"),
as the token-id problems do (a GRU and a small Transformer encoder, defined below; both were added
after the first-round rule was derived, so they are report-half problems).

`build(name, seed)` returns the built Experiment (pretrained where the entry says so); `train` and
`train_loss` are the only places the benchmarks call the engine, so a change to the step's
signature is one edit here.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterator

import torch
from torch import nn

PRETRAIN_SEED_OFFSET = 1000  # the pretraining batch order is seeded with seed + this: not the grid's order


def _recipe(name: str, data: dict, model: dict, optim: dict, batch_size: int = 64) -> dict[str, Any]:
    return {
        "name": name,
        "seed": 0,
        "device": "cpu",
        "data": data,
        "model": model,
        "loss": "cross_entropy",
        "optim": optim,
        "train": {"batch_size": batch_size},
    }


SPIRAL = {"name": "spiral", "args": {"classes": 3, "points_per_class": 200}}
DIGITS = {"name": "digits"}
DIGITS_FLAT = {"name": "digits", "normalize": True}
MNIST1D = {"name": "mnist1d", "args": {"num_samples": 4000}}
MNIST1D_CH = {"name": "mnist1d", "args": {"num_samples": 4000, "channels": True}}
# a shifted target task for transfer: new examples (another generator seed), 1.4x the correlated
# noise and 2.5x the per-point noise of the source, and only 1,000 training examples (the source-trained
# models start at 49% (MLP) and 66% (CNN) training accuracy on it, seed 0)
SHIFTED = {"target": "benchmarks.problems:shifted_mnist1d", "args": {}}
SHIFTED_CH = {"target": "benchmarks.problems:shifted_mnist1d", "args": {"channels": True}}


def shifted_mnist1d(
    num_samples: int = 1250, seed: int = 7, corr_noise_scale: float = 0.35, iid_noise_scale: float = 0.05, channels: bool = False
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """MNIST-1D from the mnist1d generator with other noise settings: a fine-tuning target task."""
    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.corr_noise_scale, args.iid_noise_scale = num_samples, seed, corr_noise_scale, iid_noise_scale
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    shape = (-1, 1, 40) if channels else (-1, 40)

    def pair(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(x, dtype=torch.float32).reshape(shape), torch.tensor(y, dtype=torch.long)

    return pair(data["x"], data["y"]), pair(data["x_test"], data["y_test"])


# -- token ids: a sequence task and two models ------------------------------------------------
VOCAB = 32  # token ids 1..31; 0 is never used
SEQ_CLASSES = 4


def token_sequences(
    n: int = 2500, length: int = 16, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A data target: (train, val) pairs of token ids (int64, (n, length)) and labels. The label is
    the class (id mod 4) of the token that follows the first occurrence of token 1 (or of the last
    token when 1 never occurs): order matters, so a bag of tokens cannot solve it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    is_one = ids[:, :-1] == 1
    first = torch.where(is_one.any(dim=1), is_one.float().argmax(dim=1) + 1, torch.full((n,), length - 1))
    labels = ids[torch.arange(n), first] % SEQ_CLASSES
    cut = n * 4 // 5
    return (ids[:cut], labels[:cut]), (ids[cut:], labels[cut:])


class GRUClassifier(nn.Module):
    """Embedding -> GRU -> Linear on the last hidden state."""

    def __init__(self, width: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.gru = nn.GRU(width, hidden, batch_first=True)
        self.head = nn.Linear(hidden, SEQ_CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(self.embed(ids))[1][-1])


class TinyTransformer(nn.Module):
    """Token + position embeddings -> a 2-layer Transformer encoder (pre-norm, no dropout) -> mean pool -> Linear."""

    def __init__(self, width: int = 32, heads: int = 2, layers: int = 2, length: int = 16):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(0.02 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, SEQ_CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids) + self.position[: ids.shape[1]]).mean(dim=1))


def gru() -> nn.Module:
    return GRUClassifier()


def transformer() -> nn.Module:
    return TinyTransformer()


TOKENS = {"target": "benchmarks.problems:token_sequences", "args": {}}
# nndiag's own token task (the first of K marker tokens; padded sequences of 10-20 ids): the holdout's token problems
BUILTIN_TOKENS = {"name": "tokens", "args": {"task": "first", "num_samples": 3000, "seq_len": 20, "vocab_size": 12}}


def _mlp(hidden: list[int], activation: str = "relu", init: str = "kaiming", batchnorm: bool = False) -> dict[str, Any]:
    return {"name": "mlp", "args": {"hidden": hidden, "activation": activation, "init": init, "batchnorm": batchnorm}}


def _cnn(channels: list[int], batchnorm: bool) -> dict[str, Any]:
    return {"name": "cnn", "args": {"channels": channels, "activation": "relu", "init": "kaiming", "batchnorm": batchnorm}}


_ENTRIES: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any], int, dict[str, Any] | None]] = [
    # name, split, data, model, optim, batch size, pretrain
    ("spiral-mlp-sgd", "derive", SPIRAL, _mlp([100]), {"name": "sgd", "lr": 0.1}, 32, None),
    (
        "spiral-mlp-bn-adamw",
        "report",
        SPIRAL,
        _mlp([64, 64], batchnorm=True),
        {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-2},
        32,
        None,
    ),
    ("digits-mlp-adam-tanh", "derive", DIGITS_FLAT, _mlp([64, 64], "tanh", "xavier"), {"name": "adam", "lr": 1e-3}, 64, None),
    ("digits-mlp-bn-sgdm", "report", DIGITS_FLAT, _mlp([128], batchnorm=True), {"name": "sgd", "lr": 0.1, "momentum": 0.9}, 64, None),
    ("digits-cnn-bn-sgdm", "derive", DIGITS, _cnn([8, 16], True), {"name": "sgd", "lr": 0.1, "momentum": 0.9}, 64, None),
    ("digits-cnn-adam", "report", DIGITS, _cnn([8, 16], False), {"name": "adam", "lr": 1e-3}, 64, None),
    ("mnist1d-mlp4-rmsprop", "derive", MNIST1D, _mlp([128, 128, 128, 128], "gelu"), {"name": "rmsprop", "lr": 1e-3}, 64, None),
    ("mnist1d-mlp-adam", "report", MNIST1D, _mlp([100, 100]), {"name": "adam", "lr": 1e-3}, 64, None),
    ("mnist1d-mlp-sgdm", "derive", MNIST1D, _mlp([100, 100]), {"name": "sgd", "lr": 0.05, "momentum": 0.9}, 64, None),
    ("mnist1d-cnn-bn-adamw", "report", MNIST1D_CH, _cnn([16, 16], True), {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-2}, 64, None),
    ("spiral-mlp-rmsprop", "derive", SPIRAL, _mlp([100, 100], "tanh", "xavier"), {"name": "rmsprop", "lr": 1e-3}, 32, None),
    # fine-tuning: the same models after training for a while at a good LR
    # (continued training on the same data, and transfer from MNIST-1D to a shifted MNIST-1D)
    (
        "digits-mlp-adam-finetune",
        "derive",
        DIGITS_FLAT,
        _mlp([64, 64], "tanh", "xavier"),
        {"name": "adam", "lr": 1e-3},
        64,
        {"steps": 30, "lr": 1e-2},
    ),
    (
        "mnist1d-mlp-sgdm-transfer",
        "report",
        SHIFTED,
        _mlp([100, 100]),
        {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        64,
        {"steps": 1000, "lr": 0.1, "data": MNIST1D},
    ),
    (
        "mnist1d-cnn-bn-adamw-transfer",
        "derive",
        SHIFTED_CH,
        _cnn([16, 16], True),
        {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
        64,
        {"steps": 1000, "lr": 1e-2, "data": MNIST1D_CH},
    ),
    ("spiral-mlp-sgd-finetune", "report", SPIRAL, _mlp([100]), {"name": "sgd", "lr": 0.1}, 32, {"steps": 300, "lr": 1.0}),
    # token ids (added after the rule was derived: report half)
    ("tokens-gru-adam", "report", TOKENS, {"target": "benchmarks.problems:gru"}, {"name": "adam", "lr": 1e-3}, 64, None),
    (
        "tokens-transformer-adamw",
        "report",
        TOKENS,
        {"target": "benchmarks.problems:transformer"},
        {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
        64,
        None,
    ),
    # holdout (frozen before any second-round rule variant was scored on them; never used to tune)
    ("mnist1d-mlp6-adam", "holdout", MNIST1D, _mlp([64] * 6), {"name": "adam", "lr": 1e-3}, 64, None),
    ("mnist1d-cnn-sgdm", "holdout", MNIST1D_CH, _cnn([16, 32], False), {"name": "sgd", "lr": 0.01, "momentum": 0.9}, 64, None),
    (
        "tokens-gru2-adamw",
        "holdout",
        BUILTIN_TOKENS,
        {"name": "gru", "args": {"vocab_size": 12, "d_model": 16, "hidden": 48, "layers": 2}},
        {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
        32,
        None,
    ),
    ("digits-cnn-rmsprop", "holdout", DIGITS, _cnn([16, 16], False), {"name": "rmsprop", "lr": 1e-3}, 32, None),
    (
        "digits-cnn-bn-adamw-finetune",
        "holdout",
        DIGITS,
        _cnn([8, 16], True),
        {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
        64,
        {"steps": 200, "lr": 3e-3},
    ),
    ("mnist1d-mlp-bn-adam", "holdout", MNIST1D, _mlp([128, 128], batchnorm=True), {"name": "adam", "lr": 1e-3}, 64, None),
    ("spiral-mlp-adagrad", "holdout", SPIRAL, _mlp([64, 64]), {"name": "adagrad", "lr": 1e-2}, 32, None),
    (
        "tokens-transformer-adam",
        "holdout",
        BUILTIN_TOKENS,
        {"name": "transformer", "args": {"vocab_size": 12, "d_model": 32, "heads": 4, "layers": 2}},
        {"name": "adam", "lr": 1e-3},
        64,
        None,
    ),
    # holdout2: frozen after the refine stage was adopted and before anything was measured on them
    (
        "spiral-mlp3-nesterov",
        "holdout2",
        SPIRAL,
        _mlp([64, 64, 64]),
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
        32,
        None,
    ),
    ("digits-mlp-sgd", "holdout2", DIGITS_FLAT, _mlp([256]), {"name": "sgd", "lr": 0.01}, 64, None),
    ("mnist1d-cnn-adam", "holdout2", MNIST1D_CH, _cnn([16, 32], False), {"name": "adam", "lr": 1e-3}, 64, None),
    (
        "tokens-gru-sgdm",
        "holdout2",
        BUILTIN_TOKENS,
        {"name": "gru", "args": {"vocab_size": 12, "d_model": 16, "hidden": 32, "layers": 1}},
        {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        32,
        None,
    ),
    (
        "digits-mlp-adamw-gelu",
        "holdout2",
        DIGITS_FLAT,
        _mlp([128, 128], "gelu"),
        {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        128,
        None,
    ),
    ("spiral-mlp-adam-finetune", "holdout2", SPIRAL, _mlp([64, 64]), {"name": "adam", "lr": 1e-3}, 32, {"steps": 300, "lr": 1e-2}),
    ("mnist1d-mlp-bn-rmsprop", "holdout2", MNIST1D, _mlp([128, 128], batchnorm=True), {"name": "rmsprop", "lr": 1e-3}, 64, None),
    (
        "digits-cnn-sgdm-finetune",
        "holdout2",
        DIGITS,
        _cnn([8, 16], False),
        {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        64,
        {"steps": 300, "lr": 0.05},
    ),
]

PROBLEMS: dict[str, dict[str, Any]] = {
    name: {**_recipe(name, data, model, optim, batch), "split": split, "pretrain": pretrain}
    for name, split, data, model, optim, batch, pretrain in _ENTRIES
}
BENCHMARK_KEYS = ("split", "pretrain")  # keys of an entry that are not recipe keys


def build(name: str, seed: int = 0, **changes: Any) -> Any:
    """The Experiment for problem `name` with recipe seed `seed` (initial weights and batch order),
    pretrained when the entry has `pretrain`."""
    from nndiag.config.recipe import parse_recipe, set_path
    from nndiag.training.experiment import Experiment

    entry = copy.deepcopy(PROBLEMS[name])
    raw = {k: v for k, v in entry.items() if k not in BENCHMARK_KEYS}
    raw["seed"] = seed
    for key, value in changes.items():
        set_path(raw, key, value)
    exp = Experiment.build(parse_recipe(raw))
    pre = entry.get("pretrain")
    if pre:
        source = exp if "data" not in pre else Experiment.build(parse_recipe({**raw, "data": pre["data"]}))
        train(source, pre["lr"], pre["steps"], seed + PRETRAIN_SEED_OFFSET)
        if source is not exp:
            exp.model.load_state_dict(source.model.state_dict())
    return exp


def batches(exp: Any, seed: int) -> Iterator[Any]:
    """Shuffled training batches, epoch after epoch, in the order of `seed` (the same for every LR)."""
    from nndiag.diagnostics.lr_find import _endless_batches

    return _endless_batches(exp, torch.Generator().manual_seed(seed))


def step(exp: Any, optimizer: torch.optim.Optimizer, batch: Any) -> torch.Tensor:
    """One optimizer step on one batch; the loss (a detached tensor)."""
    return exp.step(optimizer, batch).loss


def train_loss(exp: Any) -> float:
    """The loss on the whole training split (inf when not finite)."""
    loss = exp.evaluate(split=exp.data.train)["loss"]
    return loss if math.isfinite(loss) else math.inf


def train(
    exp: Any, lr: float, steps: int, seed: int, checkpoints: tuple[int, ...] = (), give_up: Callable[[int, float], bool] | None = None
) -> dict[int, float]:
    """Train exp.model `steps` steps at a constant `lr` with a fresh optimizer of the recipe's kind.

    Returns {checkpoint: training-split loss} for each checkpoint <= steps. `give_up(step, batch_loss)`
    may end a hopeless run early: the remaining checkpoints are inf."""
    exp.model.train()
    optimizer = exp.optimizer(lr=lr)
    order = batches(exp, seed)
    scores: dict[int, float] = {}
    for i in range(1, steps + 1):
        loss = float(step(exp, optimizer, next(order)))
        if not math.isfinite(loss) or (give_up is not None and give_up(i, loss)):
            return {**scores, **{c: math.inf for c in checkpoints if c not in scores}}
        if i in checkpoints:
            scores[i] = train_loss(exp)
            exp.model.train()
    return scores
