"""Batches of any structure: a tensor pair, a tuple or list, a dict (as Hugging Face datasets yield),
or anything nested of those.

Every helper walks the structure recursively and leaves non-tensor leaves alone. Tensors keep their
dtype: token ids stay integer; only floating-point tensors follow the model's precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch

Batch = Any  # a tensor, or a tuple / list / dict (nested) whose leaves are tensors or plain values

# Dict keys that hold the targets of a batch, in the order they are looked for (Hugging Face: labels).
TARGET_KEYS = ("labels", "label", "targets", "target", "y")


def apply(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    """`batch` with `fn` applied to every tensor leaf, the structure kept (tuples stay tuples)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        moved = {k: apply(v, fn) for k, v in batch.items()}
        return moved if type(batch) is dict else _same_mapping(batch, moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(apply(v, fn) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(apply(v, fn) for v in batch)
    return batch


def _same_mapping(original: Mapping, values: dict) -> Mapping:
    """A mapping of the original's type (e.g. Hugging Face's BatchEncoding) when it can be rebuilt, else a dict."""
    try:
        return type(original)(values)
    except Exception:
        return values


def tensors(batch: Batch) -> Iterator[torch.Tensor]:
    """Every tensor leaf, depth first, in order."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for v in batch.values():
            yield from tensors(v)
    elif isinstance(batch, (tuple, list)):
        for v in batch:
            yield from tensors(v)


def to_device(batch: Batch, device: torch.device, float_dtype: torch.dtype | None = None, non_blocking: bool = False) -> Batch:
    """Move every tensor to `device`; floating tensors (only those) are cast to `float_dtype` when given."""

    def move(t: torch.Tensor) -> torch.Tensor:
        if float_dtype is not None and t.is_floating_point() and t.dtype != float_dtype:
            return t.to(device=device, dtype=float_dtype, non_blocking=non_blocking)
        return t.to(device, non_blocking=non_blocking)

    return apply(batch, move)


def size(batch: Batch) -> int:
    """Examples in the batch: the first dimension of its first tensor (0 when it holds none)."""
    for t in tensors(batch):
        return int(t.shape[0]) if t.dim() else 1
    return 0


def index(batch: Batch, rows: torch.Tensor | slice) -> Batch:
    """The rows `rows` of every tensor leaf (all leaves share their first dimension)."""
    return apply(batch, lambda t: t[rows])


def cat(batches: list[Batch]) -> Batch:
    """Concatenate batches of the same structure along the first dimension."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)
    if isinstance(first, Mapping):
        return {k: cat([b[k] for b in batches]) for k in first}
    if isinstance(first, (tuple, list)):
        parts = [cat([b[i] for b in batches]) for i in range(len(first))]
        return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)
    return first


def targets_of(batch: Batch) -> torch.Tensor | None:
    """The targets a batch carries: the second element of a tuple/list, or a dict's labels key."""
    if isinstance(batch, Mapping):
        for key in TARGET_KEYS:
            value = batch.get(key)
            if isinstance(value, torch.Tensor):
                return value
        return None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    return None


def inputs_of(batch: Batch) -> Batch:
    """What the model reads: the first element of a tuple/list, a dict without its targets."""
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k not in TARGET_KEYS}
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch


def describe(batch: Batch, depth: int = 0) -> str:
    """A short structural description for error messages: {input_ids: int64 (2, 16), labels: int64 (2,)}."""
    if isinstance(batch, torch.Tensor):
        return f"{str(batch.dtype).replace('torch.', '')} {tuple(batch.shape)}"
    if depth > 2:
        return "..."
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v, depth + 1)}" for k, v in list(batch.items())[:8]) + "}"
    if isinstance(batch, (tuple, list)):
        inner = ", ".join(describe(v, depth + 1) for v in list(batch)[:8])
        return f"({inner})" if isinstance(batch, tuple) else f"[{inner}]"
    return type(batch).__name__
