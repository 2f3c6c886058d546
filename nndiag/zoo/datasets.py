"""Built-in datasets: each returns (train, val), val None when it has no split of its own (then the
recipe's data.val_fraction is held out). Inputs come at a documented, conventional scale (pixels in
[0, 1], MNIST-1D standardised by its generator). Everything is bundled or generated offline, except the
torchvision sets, which read a local folder (`download: true` fetches them first).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from nndiag.errors import BadInput
from nndiag.zoo.sequences import tokens

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


def image_folder(
    root: str | None = None, val_root: str | None = None, image_size: int = 32, grayscale: bool = False
) -> tuple[Dataset, Dataset | None]:
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


def csv_table(
    path: str | None = None, label: str | None = None, features: list[str] | None = None, task: str = "auto", sep: str = ","
) -> tuple[Pair, None]:
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
    "tokens": tokens,  # nndiag.zoo.sequences: offline token-id tasks, as (X, y) pairs or Hugging Face-style dicts
}
