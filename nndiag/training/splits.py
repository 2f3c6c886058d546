"""Splits: the recipe's data (a built-in of nndiag.zoo or a custom target) or the user's own -> train/validation
splits that yield batches on the device.

A batch may have any structure: a pair (inputs, targets), a tuple, a dict (Hugging Face style:
input_ids, attention_mask, labels) or nested (nndiag.training.batch). Tensors keep their dtype: token ids
stay integer, and only floating tensors are cast to the model's dtype.

Small data (up to `data.device_max_mb`) is held on the device as tensors and batched by index, with
no DataLoader in the hot loop; larger data, and data with a `collate` function (variable-length
items), streams through a DataLoader with workers and pinned memory. A user's own DataLoader (the
Python API) is used as it is. Every split offers the same three things: `len()`, `batches(...)`,
`take(n)`.

Custom data is used exactly as returned; `normalize: true`
standardises floating inputs with training-set statistics for built-in and custom data alike.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from nndiag.config.recipe import DataConfig, call_target, check_args, resolve_target
from nndiag.errors import BadInput
from nndiag.training import batch as batching
from nndiag.training.batch import Batch
from nndiag.training.scoring import IGNORE_INDEX
from nndiag.zoo.datasets import BUILTINS

Collate = Callable[[list[Any]], Batch]


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


class TensorSplit:
    """A split held on the device as tensors: batching is indexing.

    `data` holds every example as one batch: a pair (X, y), or any structure of tensors that share
    their first dimension (e.g. a dict of input_ids, attention_mask and labels)."""

    def __init__(self, data: Batch):
        self.data = data
        self._n = batching.size(data)

    @property
    def x(self) -> Any:
        """The inputs (the first element of a pair; a dict without its targets)."""
        return batching.inputs_of(self.data)

    @property
    def y(self) -> torch.Tensor | None:
        return batching.targets_of(self.data)

    def __len__(self) -> int:
        return self._n

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator).to(_device_of(self.data)) if shuffle else None
        stop = n - n % batch_size if _drop_last(n, batch_size, shuffle, drop_last) else n
        for start in range(0, stop, batch_size):
            yield batching.index(self.data, slice(start, start + batch_size) if order is None else order[start : start + batch_size])

    def take(self, n: int, generator: torch.Generator | None = None) -> "TensorSplit":
        """n examples (a seeded random choice when a generator is given) as a new split."""
        n = min(n, len(self))
        if generator is None:
            return TensorSplit(batching.index(self.data, slice(0, n)))
        rows = torch.randperm(len(self), generator=generator)[:n].to(_device_of(self.data))
        return TensorSplit(batching.index(self.data, rows))

    def follow(self, float_dtype: torch.dtype) -> None:
        """Cast the floating tensors to the model's dtype (once)."""
        self.data = batching.to_device(self.data, _device_of(self.data), float_dtype)


def _device_of(data: Batch) -> torch.device:
    return next(batching.tensors(data)).device


class ListSplit:
    """A fixed list of batches already on the device (a subset of a user's DataLoader): each pass
    yields them all, in a seeded random order when shuffled. `batch_size` does not re-cut them."""

    def __init__(self, batches: list[Batch]):
        self.items = batches

    def __len__(self) -> int:
        return sum(batching.size(b) for b in self.items)

    def batches(
        self, batch_size: int = 0, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        order = torch.randperm(len(self.items), generator=generator).tolist() if shuffle else range(len(self.items))
        for i in order:
            yield self.items[i]

    def take(self, n: int, generator: torch.Generator | None = None) -> "ListSplit":
        kept, count = [], 0
        for b in self.items:
            if count >= n:
                break
            kept.append(b)
            count += batching.size(b)
        return ListSplit(kept)

    def follow(self, float_dtype: torch.dtype) -> None:
        self.items = [batching.to_device(b, _device_of(b), float_dtype) for b in self.items]


class StreamSplit:
    """A split too large for the device, or of variable-length items: a DataLoader with workers and
    pinned memory, collating with `collate` (default: torch's default_collate)."""

    def __init__(
        self,
        dataset: Dataset,
        device: torch.device,
        num_workers: int,
        transform: Callable[[Batch], Batch] | None = None,
        collate: Collate | None = None,
    ):
        self.dataset, self.device, self.num_workers, self.transform = dataset, device, num_workers, transform
        self.collate = collate or collate_items
        self.float_dtype: torch.dtype | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=_drop_last(len(self), batch_size, shuffle, drop_last),
            num_workers=self._workers(),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            collate_fn=self.collate,
        )
        for batch in loader:
            yield self._place(batch)

    def _place(self, batch: Batch) -> Batch:
        batch = batching.to_device(batch, self.device, self.float_dtype, non_blocking=True)
        return self.transform(batch) if self.transform else batch

    def _workers(self) -> int:
        """Worker processes that can load this dataset. A dataset class from a recipe-local module
        (imported under a private name) cannot be unpickled by workers that are spawned rather than
        forked (macOS, Windows; Linux from Python 3.14), so such data loads in this process."""
        import multiprocessing

        dataset = getattr(self.dataset, "dataset", self.dataset)  # a Subset from the validation split
        local = type(dataset).__module__.startswith("nndiag_user.") or getattr(self.collate, "__module__", "").startswith("nndiag_user.")
        return 0 if local and multiprocessing.get_start_method() != "fork" else self.num_workers

    def _choose(self, n: int, generator: torch.Generator | None) -> list[int]:
        """The indices of n examples: a seeded random choice when a generator is given, else the first n."""
        n = min(n, len(self))
        return torch.randperm(len(self), generator=generator)[:n].tolist() if generator is not None else list(range(n))

    def take(self, n: int, generator: torch.Generator | None = None) -> TensorSplit:
        return TensorSplit(self._place(self.collate([self.dataset[i] for i in self._choose(n, generator)])))

    def subset(self, n: int, generator: torch.Generator | None = None) -> "StreamSplit":
        """n examples chosen as take() does, still streamed: never all on the device at once (take() holds
        them there, which a few thousand images would not fit)."""
        return self.subset_at(self._choose(n, generator))

    def subset_at(self, indices: list[int]) -> "StreamSplit":
        """The examples at `indices`, in that order, still streamed."""
        part = StreamSplit(Subset(self.dataset, indices), self.device, self.num_workers, self.transform, self.collate)
        part.float_dtype = self.float_dtype
        return part

    def follow(self, float_dtype: torch.dtype) -> None:
        self.float_dtype = float_dtype


class LoaderSplit:
    """A user's own DataLoader (the Python API), used as it is: its batch size, order and collate.
    `batch_size` and `shuffle` do not apply; batches move to the device as they come."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device
        self.float_dtype: torch.dtype | None = None

    def __len__(self) -> int:
        dataset = getattr(self.loader, "dataset", None)
        try:
            return len(dataset)  # type: ignore[arg-type]
        except TypeError:
            return len(self.loader) * (self.loader.batch_size or 1)

    def batches(
        self, batch_size: int = 0, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        for batch in self.loader:
            yield batching.to_device(batch, self.device, self.float_dtype, non_blocking=True)

    def take(self, n: int, generator: torch.Generator | None = None) -> ListSplit:
        """The loader's first batches, up to n examples: a fixed subset."""
        kept, count = [], 0
        for batch in self.batches():
            kept.append(batch)
            count += batching.size(batch)
            if count >= n:
                break
        return ListSplit(kept)

    def follow(self, float_dtype: torch.dtype) -> None:
        self.float_dtype = float_dtype


Split = TensorSplit | ListSplit | StreamSplit | LoaderSplit


class OrderKeeper:
    """The state of the generators that shuffle a user's DataLoader (its own `generator=`, its sampler's),
    taken once; `rewind()` sets them back, so the loader replays the same order. Other splits shuffle
    with a generator the caller passes, so there is nothing to keep."""

    def __init__(self, split: Split):
        found: dict[int, torch.Generator] = {}
        if isinstance(split, LoaderSplit):
            loader = split.loader
            batch_sampler = getattr(loader, "batch_sampler", None)
            for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
                generator = getattr(owner, "generator", None)
                if isinstance(generator, torch.Generator):
                    found[id(generator)] = generator
        self.states = [(g, g.get_state()) for g in found.values()]

    def rewind(self) -> None:
        for generator, state in self.states:
            generator.set_state(state)


@contextlib.contextmanager
def order_kept(split: Split) -> Iterator[OrderKeeper]:
    """Run a block that draws batches from `split`; afterwards a user's DataLoader shuffles exactly as before."""
    keeper = OrderKeeper(split)
    try:
        yield keeper
    finally:
        keeper.rewind()


def _drop_last(n: int, batch_size: int, shuffle: bool, drop_last: bool) -> bool:
    """Drop the last, short batch when asked, and always when training (shuffled) would end on a
    batch of one example: BatchNorm cannot normalise a single example and raises."""
    if n < batch_size:
        return False
    return drop_last or (shuffle and n % batch_size == 1)


@dataclass
class DataBundle:
    train: Split
    val: Split
    num_classes: int | None  # None for regression targets or when the targets are unknown
    target_size: int  # values per target: 1 for class labels and scalar regression, k for (N, k) targets
    input_shape: tuple[int, ...] | None  # one example's input shape, e.g. (64,) or (1, 8, 8); a dict batch's input_ids shape; else None
    description: str  # one line for reports, e.g. "digits: 1437 train / 360 val, 10 classes"
    structured: bool = False  # the inputs are not one tensor (a dict such as input_ids + attention_mask)

    def follow(self, model: torch.nn.Module) -> None:
        """Floating inputs follow the model's dtype (float64 arrays become float32 for a float32 model)."""
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            self.train.follow(dtype)
            if self.val is not self.train:
                self.val.follow(dtype)


# --------------------------------------------------------------------------------------------
# Building a DataBundle from the recipe
# --------------------------------------------------------------------------------------------

# Data as a target returns it: a Dataset, or "columns" (every example as one batch: a pair (X, y), a
# tuple of tensors, or a mapping of tensors that share their first dimension).
Raw = Any


def build_data(config: DataConfig, device: torch.device, seed: int, recipe_dir: Path | None = None) -> DataBundle:
    """Load the recipe's data, split off validation if needed, normalise, and place it."""
    label, raw_train, raw_val = _load(config, recipe_dir)
    collate = resolve_target(config.collate, recipe_dir, "data.collate") if config.collate else None
    train = _as_data(raw_train, "train")
    val = _as_data(raw_val, "val") if raw_val is not None else None
    if val is None:
        train, val = _split(train, config.val_fraction, seed)
    first = _first_batch(train, collate)
    inputs, targets = batching.inputs_of(first), batching.targets_of(first)
    main_input = inputs if isinstance(inputs, torch.Tensor) else inputs.get("input_ids") if isinstance(inputs, Mapping) else None
    input_shape = tuple(main_input.shape[1:]) if isinstance(main_input, torch.Tensor) else None
    stats = _normalizer(train, collate) if config.normalize else None
    train_split = _place(train, device, config, stats, collate, "train")
    val_split = _place(val, device, config, stats, collate, "val")
    num_classes = _num_classes(train, val, targets)
    target_size = int(targets[0].numel()) if targets is not None and targets.dim() > 0 else 1
    classes = f"{num_classes} classes" if num_classes else ("regression targets" if targets is not None else "no targets in the batch")
    shape = f"input {input_shape}" if isinstance(inputs, torch.Tensor) else f"batches {batching.describe(first)}"
    if isinstance(inputs, torch.Tensor) and not inputs.is_floating_point():
        shape = f"input {str(inputs.dtype).replace('torch.', '')} {input_shape}"
    description = f"{label}: {len(train_split)} train / {len(val_split)} val, {shape}, {classes}"
    return DataBundle(
        train_split, val_split, num_classes, target_size, input_shape, description, structured=not isinstance(inputs, torch.Tensor)
    )


def _load(config: DataConfig, recipe_dir: Path | None) -> tuple[str, Any, Any]:
    if config.target is not None:
        fn = resolve_target(config.target, recipe_dir, "data.target")
        result = call_target(fn, config.args, "data.target")
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise BadInput(
                f"{config.target} must return (train, val), each a Dataset, a pair of tensors (X, y) or a mapping of tensors; "
                f"val may be None. Got {type(result).__name__}",
                where="data.target",
            )
        return config.target, result[0], result[1]
    if config.name not in BUILTINS:
        raise BadInput(f"unknown dataset {config.name!r}; built-ins are {', '.join(BUILTINS)} (or use data.target)", where="data.name")
    check_args(BUILTINS[config.name], config.args, "data.args")
    train, val = call_target(BUILTINS[config.name], config.args, "data.args")
    return config.name, train, val


def _as_data(obj: Any, which: str, where: str = "data") -> Raw:
    """A Dataset (kept), or columns: tensors (from arrays) sharing their first dimension."""
    if isinstance(obj, Dataset):
        if not hasattr(obj, "__len__"):
            raise BadInput(f"the {which} dataset must have a length (an iterable-style dataset is not supported)", where=where)
        if len(obj) == 0:
            raise BadInput(f"the {which} dataset is empty", where=where)
        return obj
    if isinstance(obj, Mapping) and obj:
        columns = {str(k): _tensor(v) for k, v in obj.items()}
    elif isinstance(obj, (tuple, list)) and len(obj) >= 2:
        columns = tuple(_tensor(v) for v in obj)
    else:
        raise BadInput(
            f"the {which} data must be a torch Dataset, a pair (X, y) of tensors/arrays or a mapping of tensors "
            f"(e.g. input_ids, attention_mask, labels), got {type(obj).__name__}",
            where=where,
        )
    sizes = {k: t.shape[0] if t.dim() else None for k, t in (columns.items() if isinstance(columns, dict) else enumerate(columns))}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise BadInput(f"the {which} tensors must share their first dimension (one row per example); got {sizes}", where=where)
    if next(iter(sizes.values())) == 0:
        raise BadInput(f"the {which} split is empty", where=where)
    return columns


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _item(item: Any) -> Any:
    """One dataset item; a dict with x/y-style keys becomes the pair (x, y), other dicts stay dicts."""
    if isinstance(item, Mapping):
        for xk, yk in (("x", "y"), ("input", "target"), ("inputs", "labels"), ("image", "label"), ("features", "label")):
            if xk in item and yk in item and len(item) == 2:
                return (item[xk], item[yk])
    return item


def collate_items(items: list[Any]) -> Batch:
    """torch's default_collate over dataset items (tuples stay tuples; numpy arrays become tensors)."""
    items = [_item(it) for it in items]
    batch = default_collate(items)
    return tuple(batch) if isinstance(items[0], tuple) and isinstance(batch, list) else batch


def _collate_all(dataset: Dataset, which: str, collate: Collate | None, count: int | None = None) -> Batch:
    n = len(dataset) if count is None else min(count, len(dataset))  # type: ignore[arg-type]
    items = [dataset[i] for i in range(n)]
    try:
        return (collate or collate_items)(items)
    except (RuntimeError, TypeError, ValueError) as exc:
        if collate is not None:
            raise BadInput(
                f"collating {n} {which} items failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", where="data.collate"
            ) from None
        raise BadInput(
            f"the {which} items cannot be stacked into a batch ({str(exc).splitlines()[0]}): items of different shapes (e.g. "
            "variable-length sequences) need data.collate, a function that pads a list of items into one batch",
            where="data",
        ) from None


def _first_batch(data: Raw, collate: Collate | None) -> Batch:
    """The first example as a batch of one."""
    if isinstance(data, Dataset):
        return _collate_all(data, "train", collate, count=1)
    return batching.index(data, slice(0, 1))


def _split(data: Raw, fraction: float, seed: int) -> tuple[Raw, Raw]:
    n = len(data) if isinstance(data, Dataset) else batching.size(data)  # type: ignore[arg-type]
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise BadInput(f"only {n} examples: too few to hold out a validation split", where="data.val_fraction")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if isinstance(data, Dataset):
        return torch.utils.data.Subset(data, train_idx.tolist()), torch.utils.data.Subset(data, val_idx.tolist())
    return batching.index(data, train_idx), batching.index(data, val_idx)


def _float_inputs(batch: Batch, where: str = "data.normalize") -> torch.Tensor:
    """The inputs of (inputs, targets) data, which normalisation needs to be one floating tensor."""
    inputs = batching.inputs_of(batch) if isinstance(batch, (tuple, list)) else None
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise BadInput(
            f"normalize: true standardises floating-point inputs of (inputs, targets) data; these batches are "
            f"{batching.describe(batching.index(batch, slice(0, 1)))}",
            where=where,
        )
    return inputs


def _normalizer(train: Raw, collate: Collate | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-set mean/std: per channel for images (C, H, W), per feature otherwise."""
    columns = _collate_all(train, "train", collate, count=10_000) if isinstance(train, Dataset) else train
    x = _float_inputs(columns).float()
    image = x.dim() == 4
    dims = (0, 2, 3) if image else (0,)
    mean = x.mean(dim=dims, keepdim=image)
    std = x.std(dim=dims, keepdim=image).clamp_min(1e-6)
    if image:
        mean, std = mean[0], std[0]
    return mean, std


def _normalized(batch: Batch, mean: torch.Tensor, std: torch.Tensor) -> Batch:
    x = _float_inputs(batch)
    return (((x - mean) / std), *batch[1:])


def _place(
    data: Raw,
    device: torch.device,
    config: DataConfig,
    stats: tuple[torch.Tensor, torch.Tensor] | None,
    collate: Collate | None,
    which: str,
) -> Split:
    """Hold the split on the device when it fits in data.device_max_mb (and needs no collate), else stream it."""
    if isinstance(data, Dataset) and collate is None:
        first = _first_batch(data, None)
        size_mb = len(data) * sum(t.numel() * t.element_size() for t in batching.tensors(first)) / 2**20  # type: ignore[arg-type]
        if size_mb <= config.device_max_mb:
            data = _collate_all(data, which, None)
    if not isinstance(data, Dataset):
        if stats is not None:
            data = _normalized(data, *stats)
        return TensorSplit(batching.to_device(data, device))
    transform = None
    if stats is not None:
        mean, std = stats[0].to(device), stats[1].to(device)
        transform = functools.partial(_normalized, mean=mean, std=std)
    return StreamSplit(data, device, config.num_workers, transform, collate)


def as_split(data: Any, device: torch.device, batch_size: int, seed: int, device_max_mb: float = 1024.0) -> Split:
    """The Python API's `data`: a DataLoader (used as it is), a Dataset, an (X, y) pair or a mapping of tensors."""
    if isinstance(data, DataLoader):
        return LoaderSplit(data, device)
    raw = _as_data(data, "training")
    if isinstance(raw, Dataset):
        first = _first_batch(raw, None)
        size_mb = len(raw) * sum(t.numel() * t.element_size() for t in batching.tensors(first)) / 2**20  # type: ignore[arg-type]
        if size_mb > device_max_mb:
            return StreamSplit(raw, device, 0)
        raw = _collate_all(raw, "training", None)
    return TensorSplit(batching.to_device(raw, device))


def _num_classes(train: Raw, val: Raw, targets: torch.Tensor | None) -> int | None:
    """Integer labels -> number of classes (max label + 1, IGNORE_INDEX aside); float or no targets -> None."""
    if targets is None or targets.is_floating_point():
        return None
    if not isinstance(train, Dataset) and not isinstance(val, Dataset):
        top = max(_top_label(batching.targets_of(train)), _top_label(batching.targets_of(val)))
    else:
        classes = getattr(train, "classes", None) or getattr(getattr(train, "dataset", None), "classes", None)
        if classes:
            return len(classes)
        n = min(len(train), 5000)  # type: ignore[arg-type]
        top = max(_top_label(batching.targets_of(collate_items([train[i]]))) for i in range(n))
    return top + 1 if top >= 1 else 2


def _top_label(targets: torch.Tensor | None) -> int:
    if targets is None:
        return 0
    kept = targets[targets != IGNORE_INDEX] if targets.dtype != torch.bool else targets
    return int(kept.max()) if kept.numel() else 0


def batches_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
