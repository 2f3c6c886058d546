"""How many CPU threads torch uses while a diagnostic runs: chosen for the work, overridable, handed back.

PyTorch's default (a thread per core) pays on large matrix products and convolutions, but on a small
model every operation is too short to split, and when another process keeps a core busy each operation
waits for the thread on that core: the same steps then take 2x to 100x longer (benchmarks/thread_choice.py).

The rule (`choose`):
  * given (`--threads N`, `threads=N`): exactly N threads.
  * on an accelerator (cuda, mps): the count found (the CPU only feeds the device).
  * on the CPU: the multiply-adds of one forward pass over one training batch (`forward_macs`: Linear,
    convolution, recurrent and attention layers, counted by forward hooks on a 2-example batch and scaled
    to the batch size). Below SMALL_WORK_MACS: one thread. At or above it: the count found (PyTorch's
    default, unless OMP_NUM_THREADS or torch.set_num_threads set another).
The automatic choice never raises the count above the one found, so OMP_NUM_THREADS=1 stays 1. It
depends on the model, the batch size and the machine, never on the load of the moment: the thread
count changes the floating-point results (reductions are split differently), and the same recipe and
seed must give the same numbers on the same machine.

Measured (benchmarks/thread_choice.py: a training step at 1 thread and at 2 on a 2-core machine, shared
with other work, so indicative only; rerun it on an idle machine): with both cores free, 2 threads gained
nothing on MLPs up to ~70M multiply-adds per batch (1.0-1.4x the 1-thread time) and 0.8x at 280M; on
convolutions 0.6-0.8x from ~10M and 0.5x at 330M. With one core busy, 2 threads took 1.3-200x the
1-thread time at every size. Below 1e8 the most one thread can lose on an idle machine is about half the
time of the convolutions, against a slowdown of several times on a busy one.

`kept()` hands torch's thread count back as found when the block ends: a diagnostic's choice never leaks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from nndiag.errors import BadInput
from nndiag.training import batch as batching
from nndiag.training import engine

SMALL_WORK_MACS = 1e8  # multiply-adds per forward pass of one training batch below which one thread is chosen: within
# ~25% of PyTorch's default on a free machine, 2-8x faster on a busy one (benchmarks/results/thread_choice.md)


@dataclass(frozen=True)
class ThreadChoice:
    count: int  # torch threads used while the diagnostic runs
    reason: str  # why: "--threads", "small model: 1.1M multiply-adds per batch", "cuda device", ...

    def __str__(self) -> str:
        return f"{self.count} ({self.reason})"


def check(threads: Any) -> int | None:
    """A thread count as given (None: choose automatically); anything else than a whole number >= 1 is BadInput."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BadInput(f"expected a whole number of threads >= 1 (or None to choose), got {threads!r}", where="threads")
    return threads


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """torch's thread count is as before when the block ends, whatever it set."""
    found = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != found:
            torch.set_num_threads(found)


def set_given(threads: int | None) -> None:
    """Set an explicit count at once (before the experiment is built, so that building uses it too)."""
    if threads is not None:
        torch.set_num_threads(threads)


def use(exp: Any, threads: int | None = None) -> ThreadChoice:
    """Choose the count for `exp` (`choose`) and set it; call inside `kept()`."""
    choice = choose(exp, threads)
    if torch.get_num_threads() != choice.count:
        torch.set_num_threads(choice.count)
    return choice


def choose(exp: Any, threads: int | None = None, found: int | None = None) -> ThreadChoice:
    """The thread count for the work of `exp` (see the module docstring)."""
    found = found or torch.get_num_threads()
    if threads is not None:
        return ThreadChoice(threads, "given")
    if exp.device.type != "cpu":
        return ThreadChoice(found, f"{exp.device.type} device: torch's count")
    macs = forward_macs(exp)
    return decide(macs, found)


def decide(macs: float | None, found: int) -> ThreadChoice:
    """The automatic choice on the CPU from the work per batch (pure)."""
    if macs is None:
        return ThreadChoice(found, "work unknown: torch's count")
    work = f"{_short(macs)} multiply-adds per batch"
    if macs < SMALL_WORK_MACS:
        return ThreadChoice(1, f"small model: {work}, under {_short(SMALL_WORK_MACS)}")
    return ThreadChoice(found, f"{work}: torch's count")


def forward_macs(exp: Any) -> float | None:
    """Multiply-adds of one forward pass over one training batch (`examples_per_batch`), counted by forward
    hooks on a 2-example batch (Linear, convolution, recurrent and attention layers; elementwise layers are
    left out: they are cheap). None when the batch cannot be cut or scored."""
    from nndiag.training.experiment import first_batch

    model = exp.model
    counted = [0]
    hooks = [m.register_forward_hook(_counter(counted)) for m in model.modules() if isinstance(m, COUNTED)]
    try:
        batch = first_batch(exp.data.train)
        examples = batching.size(batch)
        with engine.eval_mode(model), torch.no_grad():
            exp.scorer(model, batch)
    except Exception:  # a model that cannot score a cut batch: the count found stays
        return None
    finally:
        for hook in hooks:
            hook.remove()
    if not examples:
        return None
    return counted[0] * examples_per_batch(exp) / examples


def examples_per_batch(exp: Any) -> int:
    """Examples in one training batch: a user's DataLoader's own batch size, else the recipe's."""
    loader = getattr(exp.data.train, "loader", None)
    return int(getattr(loader, "batch_size", None) or exp.recipe.train.batch_size)


COUNTED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase, nn.MultiheadAttention)


def _counter(counted: list[int]) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor) or out.dim() == 0:
            return
        if isinstance(module, nn.modules.conv._ConvNd):
            positions = out.numel() // max(1, out.shape[1 if out.dim() > 1 else 0])  # (N, C, ...): every output position
            counted[0] += module.weight.numel() * positions
            return
        positions = out.numel() // max(1, out.shape[-1])  # (..., features): every row (example, token, time step)
        weights = module.weight.numel() if isinstance(module, (nn.Linear, nn.Bilinear)) else sum(p.numel() for p in module.parameters())
        counted[0] += weights * positions

    return hook


def _short(value: float) -> str:
    """1234567 -> '1.2M'."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"
