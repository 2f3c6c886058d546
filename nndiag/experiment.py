"""An Experiment: everything a recipe describes, built and placed on the device.

Commands build one with `Experiment.build(recipe)` and hand it to a diagnostic. Building is
seeded, so the same recipe and seed give the same data split, initial weights and batch order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from nndiag import engine
from nndiag.data import Batch, DataBundle, Split, build_data
from nndiag.errors import BadInput
from nndiag.models import build_model
from nndiag.recipe import Recipe


@dataclass
class Experiment:
    recipe: Recipe
    device: torch.device
    amp_dtype: torch.dtype | None  # bf16 autocast on capable CUDA devices, else None (fp32)
    data: DataBundle
    objective: engine.Objective
    model: nn.Module
    generator: torch.Generator = field(repr=False)  # batch order; seeded from recipe.seed

    @classmethod
    def build(cls, recipe: Recipe) -> "Experiment":
        device = engine.resolve_device(recipe.device)
        amp_dtype = engine.autocast_dtype(device, recipe.precision)
        recipe_dir = recipe.source.parent if recipe.source else None
        data = build_data(recipe.data, device, recipe.seed, recipe_dir)
        objective = engine.build_objective(recipe.loss, data.num_classes, data.target_size)
        engine.seed_everything(recipe.seed)
        model = build_model(recipe.model, data.input_shape, objective.outputs(), recipe_dir).to(device)
        experiment = cls(recipe, device, amp_dtype, data, objective, model, torch.Generator().manual_seed(recipe.seed))
        experiment.check_forward()
        early = recipe.train.early_stopping
        if early.metric == "val_acc" and early.patience is not None and not objective.is_classification:
            raise BadInput("val_acc is undefined for regression targets; use val_loss", where="train.early_stopping.metric")
        return experiment

    def check_forward(self) -> None:
        """One forward pass on two training examples, so a shape mismatch is a clear input error."""
        sample = self.data.train.take(2)
        x, y = sample.x, sample.y
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(x)
            self.objective.loss(logits, y)
            if self.objective.name in ("mse", "bce") and logits.shape != self.objective.target_as_float(logits, y).shape:
                raise ValueError(f"outputs of shape {tuple(logits.shape)} do not match targets of shape {tuple(y.shape)}")
        except Exception as exc:  # any error of the user's model on their data is bad input, not a crash
            raise BadInput(
                f"the model cannot score the data: a forward pass on inputs of shape {tuple(x.shape)} with "
                f"targets {tuple(y.shape)} and loss {self.objective.name} failed: {str(exc).splitlines()[0]}",
                where="model",
            ) from None
        finally:
            self.model.train(was_training)

    # -- helpers the diagnostics share ---------------------------------------------------------

    def optimizer(self, model: nn.Module | None = None, lr: float | None = None, weight_decay: float | None = None) -> torch.optim.Optimizer:
        """A fresh optimizer of the recipe's kind over `model` (default: the experiment's model)."""
        params = (model or self.model).parameters()
        return engine.build_optimizer(params, self.recipe.optim, lr=lr, weight_decay=weight_decay)

    def train_batches(self, batch_size: int | None = None, split: Split | None = None) -> Iterator[Batch]:
        """One shuffled epoch of training batches, in the seeded order."""
        split = split or self.data.train
        return split.batches(batch_size or self.recipe.train.batch_size, shuffle=True, generator=self.generator)

    def eval_batches(self, split: Split | None = None) -> Iterator[Batch]:
        split = split or self.data.val
        size = self.recipe.train.eval_batch_size or 4 * self.recipe.train.batch_size
        return split.batches(size)

    def evaluate(self, split: Split | None = None, model: nn.Module | None = None) -> dict[str, float]:
        return engine.evaluate(model or self.model, self.eval_batches(split), self.objective, self.amp_dtype)

    def step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return engine.train_step(model or self.model, optimizer, self.objective, x, y, self.amp_dtype, self.recipe.train.grad_clip)

    def with_recipe(self, recipe: Recipe) -> "Experiment":
        """A new experiment for `recipe` (e.g. a search trial's overrides) that shares this one's data
        when the data, seed and device are unchanged; model and objective are built anew, seeded."""
        if (recipe.data, recipe.seed, recipe.device) != (self.recipe.data, self.recipe.seed, self.recipe.device):
            return Experiment.build(recipe)
        objective = engine.build_objective(recipe.loss, self.data.num_classes, self.data.target_size)
        engine.seed_everything(recipe.seed)
        recipe_dir = recipe.source.parent if recipe.source else None
        model = build_model(recipe.model, self.data.input_shape, objective.outputs(), recipe_dir).to(self.device)
        experiment = Experiment(recipe, self.device, engine.autocast_dtype(self.device, recipe.precision), self.data,
                                objective, model, torch.Generator().manual_seed(recipe.seed))
        experiment.check_forward()
        return experiment

    def describe(self) -> dict[str, str]:
        """What was built, for reports."""
        params = sum(p.numel() for p in self.model.parameters())
        return {
            "data": self.data.description,
            "model": f"{self.recipe.model.name or self.recipe.model.target} ({params:,} parameters)",
            "device": f"{self.device}" + (" (bf16 autocast)" if self.amp_dtype else ""),
        }
