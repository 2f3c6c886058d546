"""The anchors' LR suggestions on the lr-find quality problems, written to results/lr_find_anchors.csv.

    /work/venvs/lr-anchors/bin/python -m benchmarks.lr_find_anchors          # every problem, seeds 0 1 2
    python -m benchmarks.lr_find_anchors --problems spiral-mlp-sgd --seeds 0 --tools lightning_tuner

Runs each tool's own range test with its defaults on the same model and weights that
benchmarks/lr_find_quality.py scores (problems.build(name, seed), pretrained where the problem says so),
with the problem's optimizer and batch size:
  fastai_valley             fastai `Learner.lr_find()` (1e-7 -> 10, 100 iterations), `valley` suggestion
  torch_lr_finder_steepest  torch-lr-finder `LRFinder.range_test(start_lr=1e-7, end_lr=10, num_iter=100)`, and the
                            steepest-gradient point that `plot(suggest_lr=True)` returns (skip_start 10, skip_end 5)
  lightning_tuner           Lightning `Tuner(trainer).lr_find(module)` with its defaults (1e-8 -> 1, 100 steps,
                            exponential, stop at 4x best) and `.suggestion()`; None is recorded as it comes
The tools are third-party and installed only in the venv that runs this script (fastai 2.8.12 and
torch-lr-finder 0.2.2 install beside torch 2.14.1; pytorch-lightning is in the project's dev venv). A
tool that cannot be imported is skipped and the benchmark reports it "not run". Rows already in the
CSV for other problems/seeds/tools are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import math
import tempfile
import warnings
from functools import partial
from typing import Any

import pandas as pd
import torch

from benchmarks.lr_find_quality import ANCHORS, ANCHORS_CSV, SEEDS
from benchmarks.problems import PROBLEMS, build


def _optimizer(exp: Any) -> tuple[type, dict[str, Any]]:
    """The problem's optimizer class and its settings, LR aside."""
    cfg = exp.recipe.optim
    cls = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }[cfg.name]
    kwargs: dict[str, Any] = {"weight_decay": cfg.weight_decay}
    if cfg.name in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    if cfg.name in ("adam", "adamw"):
        kwargs["betas"] = tuple(cfg.betas)
    if cfg.name != "sgd":
        kwargs["eps"] = cfg.eps
    return cls, kwargs


def _loader(exp: Any, seed: int, split: str = "train") -> torch.utils.data.DataLoader:
    part = getattr(exp.data, split)
    data = torch.utils.data.TensorDataset(part.x, part.y)
    return torch.utils.data.DataLoader(
        data, batch_size=exp.recipe.train.batch_size, shuffle=split == "train", generator=torch.Generator().manual_seed(seed)
    )


def _loss(exp: Any) -> Any:
    return lambda logits, y: exp.scorer.objective.loss(logits, y)


def fastai_valley(exp: Any, seed: int) -> float | None:
    import fastai.callback.schedule  # noqa: F401 - patches Learner.lr_find
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import OptimWrapper

    model = copy.deepcopy(exp.model)
    cls, kwargs = _optimizer(exp)
    with tempfile.TemporaryDirectory() as tmp:
        dls = DataLoaders(_loader(exp, seed), _loader(exp, seed, "val"), device=torch.device("cpu"))
        learn = Learner(dls, model, loss_func=_loss(exp), opt_func=partial(OptimWrapper, opt=partial(cls, **kwargs)), path=tmp)
        suggestion = learn.lr_find(show_plot=False)
    return float(suggestion.valley)


def torch_lr_finder_steepest(exp: Any, seed: int) -> float | None:
    from torch_lr_finder import LRFinder

    from nndiag.output.plots import pyplot

    model = copy.deepcopy(exp.model)
    cls, kwargs = _optimizer(exp)
    finder = LRFinder(model, cls(model.parameters(), lr=1e-7, **kwargs), _loss(exp), device="cpu")
    finder.range_test(_loader(exp, seed), start_lr=1e-7, end_lr=10, num_iter=100)
    plt = pyplot()
    fig, ax = plt.subplots()
    _, lr = finder.plot(suggest_lr=True, ax=ax)
    plt.close(fig)
    return float(lr) if lr is not None else None


def lightning_tuner(exp: Any, seed: int) -> float | None:
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    cls, kwargs = _optimizer(exp)
    loss = _loss(exp)

    class Module(pl.LightningModule):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model, self.lr = model, 1e-3

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            return loss(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return cls(self.parameters(), lr=self.lr, **kwargs)

    module = Module(copy.deepcopy(exp.model))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=1000,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        finder = Tuner(trainer).lr_find(module, train_dataloaders=_loader(exp, seed), update_attr=False)
    lr = finder.suggestion() if finder is not None else None
    return float(lr) if lr is not None and math.isfinite(lr) else None


FUNCTIONS = {"fastai_valley": fastai_valley, "torch_lr_finder_steepest": torch_lr_finder_steepest, "lightning_tuner": lightning_tuner}
MODULES = {"fastai_valley": "fastai", "torch_lr_finder_steepest": "torch_lr_finder", "lightning_tuner": "pytorch_lightning"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--tools", nargs="*", default=list(ANCHORS), choices=list(ANCHORS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    tools = []
    for tool in args.tools:
        try:
            __import__(MODULES[tool])
            tools.append(tool)
        except ImportError:
            print(f"{tool}: {MODULES[tool]} is not installed here; skipped")
    rows = []
    for name in args.problems:
        for seed in args.seeds:
            exp = build(name, seed)
            state = copy.deepcopy(exp.model.state_dict())
            for tool in tools:
                exp.model.load_state_dict(state)
                torch.manual_seed(seed)
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    lr = FUNCTIONS[tool](exp, seed)
                rows.append({"problem": name, "seed": seed, "tool": tool, "lr": lr})
                print(f"{name} seed {seed}: {tool} {lr}", flush=True)
    new = pd.DataFrame(rows, columns=["problem", "seed", "tool", "lr"])
    if ANCHORS_CSV.is_file():
        old = pd.read_csv(ANCHORS_CSV)
        keys = set(zip(new["problem"], new["seed"], new["tool"]))
        old = old[[k not in keys for k in zip(old["problem"], old["seed"], old["tool"])]]
        new = pd.concat([old, new], ignore_index=True)
    ANCHORS_CSV.parent.mkdir(parents=True, exist_ok=True)
    new.sort_values(["problem", "seed", "tool"]).to_csv(ANCHORS_CSV, index=False)


if __name__ == "__main__":
    main()
