"""Data: built-in datasets and custom targets -> train/validation splits that yield batches on the device.

Small data (up to `data.device_max_mb`) is held on the device as two tensors and batched by index,
with no DataLoader in the hot loop; larger data streams through a DataLoader with workers and pinned
memory. Either way a split offers the same three things: `len()`, `batches(...)`, `take(n)`.

Built-in datasets return inputs at a documented, conventional scale (pixels in [0, 1], MNIST-1D
standardised by its generator). Custom data is used exactly as returned; `normalize: true`
standardises inputs with training-set statistics for built-in and custom data alike.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nndiag.errors import BadInput
from nndiag.recipe import DataConfig, call_target, resolve_target

Batch = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


class TensorSplit:
    """A split held on the device as tensors: batching is indexing."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.x.device) if shuffle else None
        stop = n - n % batch_size if _drop_last(n, batch_size, shuffle, drop_last) else n
        for start in range(0, stop, batch_size):
            if order is None:
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                yield self.x[index], self.y[index]

    def take(self, n: int, generator: torch.Generator | None = None) -> "TensorSplit":
        """n examples (a seeded random choice when a generator is given) as a new split."""
        n = min(n, len(self))
        if generator is None:
            return TensorSplit(self.x[:n], self.y[:n])
        index = torch.randperm(len(self), generator=generator)[:n].to(self.x.device)
        return TensorSplit(self.x[index], self.y[index])


class StreamSplit:
    """A split too large for the device: a DataLoader with workers and pinned memory."""

    def __init__(self, dataset: Dataset, device: torch.device, num_workers: int, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.dataset, self.device, self.num_workers, self.transform = dataset, device, num_workers, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[Batch]:
        loader = DataLoader(
            self.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=_drop_last(len(self), batch_size, shuffle, drop_last),
            num_workers=self._workers(), pin_memory=self.device.type == "cuda",
            persistent_workers=False, collate_fn=_collate,
        )
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield (self.transform(x) if self.transform else x), y

    def _workers(self) -> int:
        """Worker processes that can load this dataset. A dataset class from a recipe-local module
        (imported under a private name) cannot be unpickled by workers that are spawned rather than
        forked (macOS, Windows; Linux from Python 3.14), so such data loads in this process."""
        import multiprocessing

        dataset = getattr(self.dataset, "dataset", self.dataset)  # a Subset from the validation split
        local = type(dataset).__module__.startswith("nndiag_user.")
        return 0 if local and multiprocessing.get_start_method() != "fork" else self.num_workers

    def take(self, n: int, generator: torch.Generator | None = None) -> TensorSplit:
        n = min(n, len(self))
        index = torch.randperm(len(self), generator=generator)[:n].tolist() if generator is not None else range(n)
        x, y = _collate([_item(self.dataset[i], i) for i in index])
        x = x.to(self.device)
        return TensorSplit(self.transform(x) if self.transform else x, y.to(self.device))


Split = TensorSplit | StreamSplit


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
    num_classes: int | None  # None for regression targets
    target_size: int  # values per target: 1 for class labels and scalar regression, k for (N, k) targets
    input_shape: tuple[int, ...]  # one example's shape, e.g. (64,) or (1, 8, 8)
    description: str  # one line for reports, e.g. "digits: 1437 train / 360 val, 10 classes"


# --------------------------------------------------------------------------------------------
# Built-in datasets. Each returns (train, val, info); val may be None (then split off train).
# --------------------------------------------------------------------------------------------

Pair = tuple[torch.Tensor, torch.Tensor]


def spiral(classes: int = 3, points_per_class: int = 100, noise: float = 0.2, seed: int = 0) -> tuple[Pair, None]:
    """The CS231n toy set: `classes` interleaved spiral arms in 2-D.

    One change from the course's generator: radii start at 1/points_per_class instead of 0. The
    original puts the first point of every class at (0, 0), identical inputs with different
    labels, which no model can fit (overfit-small would rightly never reach 100%).
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, points_per_class + 1)[1:]
        t = np.linspace(k * 4, (k + 1) * 4, points_per_class) + rng.standard_normal(points_per_class) * noise
        xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
        ys.append(np.full(points_per_class, k))
    return (torch.tensor(np.concatenate(xs), dtype=torch.float32), torch.tensor(np.concatenate(ys))), None


def digits(flatten: bool = False) -> tuple[Pair, None]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), pixels scaled to [0, 1].

    Read straight from the CSV that scikit-learn ships (importing sklearn.datasets costs ~1.5 s).
    """
    table = np.loadtxt(_sklearn_data_file("digits.csv.gz"), delimiter=",")
    x = torch.tensor(table[:, :-1] / 16.0, dtype=torch.float32)
    x = x if flatten else x.reshape(-1, 1, 8, 8)
    return (x, torch.tensor(table[:, -1], dtype=torch.long)), None


def _sklearn_data_file(name: str) -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("the digits dataset needs scikit-learn installed (pip install scikit-learn)", where="data.name")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise BadInput(f"scikit-learn is installed but its bundled {name} is missing at {path}", where="data.name")
    return path


def mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42, channels: bool = False) -> tuple[Pair, Pair]:
    """MNIST-1D, generated offline by the mnist1d package (40 values per example, 10 classes).

    The defaults are the package's own, so the published accuracies apply (4,000 train / 1,000 test;
    the test part is the validation split). `channels: true` gives shape (1, 40) instead of (40,).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)  # the generator reseeds numpy's global RNG; hand it back
    shape = (-1, 1, 40) if channels else (-1, 40)

    def pair(x: np.ndarray, y: np.ndarray) -> Pair:
        return torch.tensor(x, dtype=torch.float32).reshape(shape), torch.tensor(y, dtype=torch.long)

    return pair(data["x"], data["y"]), pair(data["x_test"], data["y_test"])


_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def torchvision_dataset(name: str, root: str | None = None, download: bool = False) -> tuple[Pair, Pair]:
    """MNIST, Fashion-MNIST, CIFAR-10/100 from a local `root` (`download: true` fetches them first)."""
    import torchvision

    if root is None:
        raise BadInput(f"the {name} dataset needs `root`: the folder that holds (or will hold) the files", where="data.args.root")
    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    try:
        train = cls(root=str(Path(root).expanduser()), train=True, download=download)
        test = cls(root=str(Path(root).expanduser()), train=False, download=download)
    except RuntimeError as exc:
        raise BadInput(
            f"could not load {name} from {root!r}: {exc}. Put the files there, or set data.args.download: true on a machine that is online",
            where="data.args.root",
        ) from None

    def pair(ds: Any) -> Pair:
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.dim() == 3 and name in ("mnist", "fashion-mnist") else x.permute(0, 3, 1, 2)
        return x.float().div_(255.0), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    return pair(train), pair(test)


def image_folder(root: str | None = None, val_root: str | None = None, image_size: int = 32, grayscale: bool = False) -> tuple[Dataset, Dataset | None]:
    """torchvision ImageFolder (one sub-folder per class), resized to image_size, pixels in [0, 1]."""
    import torchvision
    from torchvision import transforms

    if root is None:
        raise BadInput("the image-folder dataset needs `root`: a folder with one sub-folder per class", where="data.args.root")
    steps = [transforms.Resize((image_size, image_size))]
    if grayscale:
        steps.append(transforms.Grayscale())
    steps.append(transforms.ToTensor())
    tf = transforms.Compose(steps)
    try:
        train = torchvision.datasets.ImageFolder(str(Path(root).expanduser()), transform=tf)
        val = torchvision.datasets.ImageFolder(str(Path(val_root).expanduser()), transform=tf) if val_root else None
    except (FileNotFoundError, OSError) as exc:
        raise BadInput(f"cannot read images: {exc}", where="data.args.root") from None
    return train, val


def csv_table(path: str | None = None, label: str | None = None, features: list[str] | None = None, task: str = "auto", sep: str = ",") -> tuple[Pair, None]:
    """A CSV file: feature columns + one label column (default: the last column)."""
    import pandas as pd

    if path is None:
        raise BadInput("the csv dataset needs `path`: the CSV file to read", where="data.args.path")
    try:
        frame = pd.read_csv(Path(path).expanduser(), sep=sep)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read {path}: {exc}", where="data.args.path") from None
    label = label or frame.columns[-1]
    if label not in frame.columns:
        raise BadInput(f"no column {label!r} in {path}; columns are {list(frame.columns)}", where="data.args.label")
    features = features or [c for c in frame.columns if c != label]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise BadInput(f"no columns {missing} in {path}", where="data.args.features")
    numeric = frame[features].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in features if numeric[c].isna().any()]
    if bad:
        raise BadInput(f"feature columns {bad} in {path} are not all numbers", where="data.args.features")
    x = torch.tensor(numeric.to_numpy(), dtype=torch.float32)
    column = frame[label]
    if task not in ("auto", "classification", "regression"):
        raise BadInput("expected auto, classification or regression", where="data.args.task")
    is_numeric = pd.api.types.is_numeric_dtype(column)
    classify = task == "classification" or (task == "auto" and (not is_numeric or pd.api.types.is_integer_dtype(column)))
    if classify:
        codes, _ = pd.factorize(column, sort=True)
        y = torch.tensor(codes, dtype=torch.long)
    else:
        values = pd.to_numeric(column, errors="coerce")
        if values.isna().any():
            raise BadInput(f"task: regression needs a numeric label column; {label!r} in {path} has non-numbers", where="data.args.task")
        y = torch.tensor(values.to_numpy(), dtype=torch.float32)
    return (x, y), None


BUILTINS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "spiral": spiral,
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist": functools.partial(torchvision_dataset, "mnist"),
    "fashion-mnist": functools.partial(torchvision_dataset, "fashion-mnist"),
    "cifar10": functools.partial(torchvision_dataset, "cifar10"),
    "cifar100": functools.partial(torchvision_dataset, "cifar100"),
    "image-folder": image_folder,
    "csv": csv_table,
}


# --------------------------------------------------------------------------------------------
# Building a DataBundle from the recipe
# --------------------------------------------------------------------------------------------


def build_data(config: DataConfig, device: torch.device, seed: int, recipe_dir: Path | None = None) -> DataBundle:
    """Load the recipe's data, split off validation if needed, normalise, and place it."""
    label, raw_train, raw_val = _load(config, recipe_dir)
    train, val = _as_pair_or_dataset(raw_train, "train"), _as_pair_or_dataset(raw_val, "val") if raw_val is not None else None
    if val is None:
        train, val = _split(train, config.val_fraction, seed)
    x0, y0 = _first_example(train)
    input_shape = tuple(x0.shape)
    stats = _normalizer(train, input_shape) if config.normalize else None
    train_split = _place(train, device, config, stats)
    val_split = _place(val, device, config, stats)
    num_classes = _num_classes(train, val, y0)
    classes = f"{num_classes} classes" if num_classes else "regression targets"
    description = f"{label}: {len(train_split)} train / {len(val_split)} val, input {input_shape}, {classes}"
    return DataBundle(train_split, val_split, num_classes, y0.numel(), input_shape, description)


def _load(config: DataConfig, recipe_dir: Path | None) -> tuple[str, Any, Any]:
    if config.target is not None:
        fn = resolve_target(config.target, recipe_dir, "data.target")
        result = call_target(fn, config.args, "data.target")
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise BadInput(
                f"{config.target} must return (train, val), each a Dataset or a pair of tensors (X, y); val may be None. Got {type(result).__name__}",
                where="data.target",
            )
        return config.target, result[0], result[1]
    if config.name not in BUILTINS:
        raise BadInput(f"unknown dataset {config.name!r}; built-ins are {', '.join(BUILTINS)} (or use data.target)", where="data.name")
    check_args(BUILTINS[config.name], config.args, "data.args")
    train, val = call_target(BUILTINS[config.name], config.args, "data.args")
    return config.name, train, val


def check_args(fn: Callable[..., Any], args: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    """Reject keyword arguments that a built-in does not take, naming the key."""
    params = [p for p in inspect.signature(fn).parameters if p not in skip]
    for key in args:
        if key not in params:
            raise BadInput(f"unknown argument; expected one of: {', '.join(params) or '(none)'}", where=f"{where}.{key}")


def _as_pair_or_dataset(obj: Any, which: str) -> Pair | Dataset:
    if isinstance(obj, Dataset):
        if not hasattr(obj, "__len__"):
            raise BadInput(f"the {which} dataset must have a length (an iterable-style dataset is not supported)", where="data")
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in obj)
        if x.shape[0] != y.shape[0]:
            raise BadInput(f"the {which} inputs have {x.shape[0]} rows but the targets have {y.shape[0]}", where="data")
        if x.shape[0] == 0:
            raise BadInput(f"the {which} split is empty", where="data")
        if not x.is_floating_point():
            x = x.float()
        return x, y
    raise BadInput(f"the {which} data must be a torch Dataset or a pair (X, y) of tensors/arrays, got {type(obj).__name__}", where="data")


def _item(item: Any, index: int) -> Pair:
    """One dataset item -> (x, y). Accepts (x, y, ...) tuples and dicts with common key names."""
    if isinstance(item, dict):
        for xk, yk in (("x", "y"), ("input", "target"), ("inputs", "labels"), ("image", "label"), ("features", "label")):
            if xk in item and yk in item:
                item = (item[xk], item[yk])
                break
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise BadInput(f"dataset item {index} is a {type(item).__name__}; expected (input, target) or a dict with x/y keys", where="data")
    x, y = item[0], item[1]
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    return (x.float() if not x.is_floating_point() else x), y


def _collate(items: list[Any]) -> Pair:
    pairs = [_item(it, i) for i, it in enumerate(items)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _first_example(data: Pair | Dataset) -> Pair:
    if isinstance(data, tuple):
        return data[0][0], data[1][0]
    return _item(data[0], 0)


def _split(data: Pair | Dataset, fraction: float, seed: int) -> tuple[Pair | Dataset, Pair | Dataset]:
    n = len(data[0]) if isinstance(data, tuple) else len(data)
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise BadInput(f"only {n} examples: too few to hold out a validation split", where="data.val_fraction")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if isinstance(data, tuple):
        x, y = data
        return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
    return torch.utils.data.Subset(data, train_idx.tolist()), torch.utils.data.Subset(data, val_idx.tolist())


def _normalizer(train: Pair | Dataset, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-set mean/std: per channel for images (C, H, W), per feature otherwise."""
    if isinstance(train, tuple):
        x = train[0]
    else:
        n = min(len(train), 10_000)
        x = _collate([train[i] for i in range(n)])[0]
    x = x.float()
    dims = (0, 2, 3) if len(input_shape) == 3 else (0,)
    keep = len(input_shape) == 3
    mean = x.mean(dim=dims, keepdim=keep)
    std = x.std(dim=dims, keepdim=keep).clamp_min(1e-6)
    if keep:
        mean, std = mean[0], std[0]
    return mean, std


def _place(data: Pair | Dataset, device: torch.device, config: DataConfig, stats: tuple[torch.Tensor, torch.Tensor] | None) -> Split:
    """Hold the split on the device when it fits in data.device_max_mb, else stream it."""
    if not isinstance(data, tuple):
        x0, y0 = _first_example(data)
        size_mb = len(data) * (x0.numel() * 4 + y0.numel() * 8) / 2**20
        if size_mb <= config.device_max_mb:
            data = _collate([data[i] for i in range(len(data))])
    if isinstance(data, tuple):
        x, y = data
        if stats is not None:
            x = (x - stats[0]) / stats[1]
        return TensorSplit(x.to(device), y.to(device))
    transform = None
    if stats is not None:
        mean, std = stats[0].to(device), stats[1].to(device)
        transform = lambda batch: (batch - mean) / std  # noqa: E731
    return StreamSplit(data, device, config.num_workers, transform)


def _num_classes(train: Pair | Dataset, val: Pair | Dataset, y0: torch.Tensor) -> int | None:
    """Integer labels -> number of classes (max label + 1); float targets -> None (regression)."""
    if y0.is_floating_point() or y0.dim() > 0:
        return None
    if isinstance(train, tuple) and isinstance(val, tuple):
        top = int(max(train[1].max(), val[1].max()))
    else:
        classes = getattr(train, "classes", None) or getattr(getattr(train, "dataset", None), "classes", None)
        if classes:
            return len(classes)
        top = max(int(_item(train[i], i)[1]) for i in range(min(len(train), 5000)))
    return top + 1 if top >= 1 else 2


def input_statistics(split: Split, max_examples: int = 10_000) -> dict[str, float]:
    """Global mean/std of the inputs, and the worst per-feature mean/scale (constant features skipped)."""
    if isinstance(split, TensorSplit):
        x = split.x[:max_examples]
    else:
        x = split.take(min(max_examples, 2048)).x
    x = x.float().reshape(x.shape[0], -1)
    mean, std = x.mean(dim=0), x.std(dim=0)
    varying = std > 1e-8
    scale = (mean.abs() + std)[varying]
    return {
        "mean": float(x.mean()),
        "rms": float(x.pow(2).mean().sqrt()),
        "std": float(x.std()),
        "abs_max": float(x.abs().max()),
        "max_feature_scale": float(scale.max()) if scale.numel() else 0.0,
        "max_feature_abs_mean": float(mean[varying].abs().max()) if varying.any() else 0.0,
        "examples": float(x.shape[0]),
    }


def batches_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
