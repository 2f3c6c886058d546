"""The bundled recipes (`nndiag recipes`) and the starter recipe (`nndiag init`).

Where the bundled recipes live. `recipes/` at the top of the repository is the single source: it is
what users see in a clone, and `pyproject.toml` ships the same files in the wheel as data files
(`[tool.setuptools.data-files]`, installed under `<prefix>/share/nndiag/recipes`). `recipes_dir()`
looks, in order, at:
  1. $NNDIAG_RECIPES, when set (a folder of your own recipes);
  2. the `recipes/` folder next to the `nndiag` package when a pyproject.toml sits there too (a source
     checkout or an editable install);
  3. `share/nndiag/recipes` under the installation prefixes (a wheel install: the venv, the user base).
We chose data files over moving the YAML into the package so that the repository keeps one visible
`recipes/` folder that the README, the Makefile and the recipes' own comments point to.

Each bundled recipe opens with a comment block: what it is for (prose), then the commands that run
it (lines starting with `nndiag`, a trailing `# comment` allowed). `describe()` reads that block;
this module never imports torch or YAML.
"""

from __future__ import annotations

import os
import re
import site
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from nndiag.errors import BadInput

ENV_VAR = "NNDIAG_RECIPES"
SHARE = Path("share") / "nndiag" / "recipes"


def _candidates() -> list[Path]:
    found = []
    checkout = Path(__file__).resolve().parents[2]  # nndiag/config/library.py -> the checkout
    if (checkout / "pyproject.toml").is_file():  # a source checkout, not site-packages
        found.append(checkout / "recipes")
    prefixes = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None)]
    found += [Path(p) / SHARE for p in prefixes if p]
    return found


def recipes_dir() -> Path:
    """The folder of bundled recipes; BadInput (exit 2) when none is found, or when $NNDIAG_RECIPES
    names a folder without recipes (a typo there must not fall back silently)."""
    chosen = os.environ.get(ENV_VAR)
    if chosen:
        folder = Path(chosen).expanduser()
        if not (folder.is_dir() and any(folder.glob("*.yaml"))):
            raise BadInput(f"{folder} is not a folder of recipe (.yaml) files", where=ENV_VAR)
        return folder
    for folder in _candidates():
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    looked = ", ".join(str(p) for p in _candidates())
    raise BadInput(f"no bundled recipes found (looked in {looked}); set {ENV_VAR} to a folder of recipe files", where="recipes")


@dataclass
class RecipeInfo:
    name: str  # the file's stem, e.g. "quickstart"
    file: str  # its path
    description: str  # the first sentence of the opening comment: what it is for
    command: str  # the command that runs it: the opening comment's `nndiag babysit ...` line, else its first command
    commands: list[str]  # every command in the opening comment

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`])")


def describe(path: Path) -> RecipeInfo:
    """Read a recipe's opening comment block: prose (what it is for), then `nndiag ...` commands."""
    prose, commands = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("nndiag "):
            commands.append(re.split(r"\s+#", text, maxsplit=1)[0].strip())
        elif text and not commands:
            prose.append(text)
    description = _SENTENCE_END.split(" ".join(prose), maxsplit=1)[0] if prose else ""
    main = next((c for c in commands if c.split()[1:2] == ["babysit"]), commands[0] if commands else "")
    return RecipeInfo(path.stem, str(path), description, main, commands)


def bundled(here: Path | None = None) -> list[RecipeInfo]:
    """Every bundled recipe, by name, with commands that run from `here` (default: the working directory)."""
    return [runnable_from(describe(p), here) for p in sorted(recipes_dir().glob("*.yaml"))]


def runnable_from(info: RecipeInfo, here: Path | None = None) -> RecipeInfo:
    """`info` with commands that work from the folder `here`: a path to the recipe's own file that does not exist
    from there (`recipes/quickstart.yaml` outside a clone) becomes the recipe's bare name (`quickstart`), which
    every command resolves to the bundled file."""
    here = here if here is not None else Path.cwd()
    own = Path(info.file).name

    def fix(command: str) -> str:
        words = command.split(" ")
        return " ".join(info.name if Path(w).name == own and not (here / w).is_file() else w for w in words)

    return RecipeInfo(info.name, info.file, info.description, fix(info.command), [fix(c) for c in info.commands])


def find(name: str) -> Path:
    """The bundled recipe called `name` (file stem, with or without .yaml)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = recipes_dir() / f"{stem}.yaml"
    if not path.is_file():
        names = ", ".join(r.name for r in bundled())
        raise BadInput(f"no bundled recipe {name!r}; bundled recipes are: {names}", where="--from")
    return path


# --------------------------------------------------------------------------------------------
# The starter recipe and the example targets that `nndiag init` writes
# --------------------------------------------------------------------------------------------

STARTER = Template("""\
# $name: a starter recipe for your own model and data, written by `nndiag init`.
# Point data.target and model.target at your code (modules next to this file are found first),
# then check it and run the steps:
#   nndiag validate $path
#   nndiag check-loss $path
#   nndiag overfit-small $path
#   nndiag babysit $path
name: $name                   # names the run folder: runs/<name>/<command>-<timestamp>/
seed: 0                       # seeds torch, numpy and python: same recipe + seed -> same numbers on CPU
device: auto                  # auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:1 | mps
precision: auto               # auto (bf16 autocast on capable CUDA) | fp32 | bf16

data:
  target: my_data:make        # "module:function" returning (train, val): each a Dataset or a pair (X, y); val may be None
  # name: digits              # ... or a built-in dataset instead of target: spiral, digits, mnist1d, cifar10, csv, ...
  args: {n: 2000, features: 16, classes: 4}  # keyword arguments passed to the function
  val_fraction: 0.2           # share of train held out when the function returns val = None
  normalize: false            # true: standardise inputs with training mean/std (nndiag never rescales silently)
  device_max_mb: 1024         # data up to this size (MB) is held on the device; larger streams through a DataLoader
  num_workers: 2              # DataLoader workers, streamed data only
  collate: null               # "module:function" turning a list of items into a batch (e.g. padding sequences); null = stack them

model:
  target: my_models:build     # "module:function" returning a torch.nn.Module
  # name: mlp                 # ... or a built-in model instead of target: linear, mlp, cnn, or a torchvision name (resnet18)
  args: {in_features: 16, classes: 4, hidden: 64}  # keyword arguments passed to the function

loss:
  name: cross_entropy         # cross_entropy | multi_margin (SVM hinge) | bce | mse
  margin: 1.0                 # multi_margin only: the hinge margin
  label_smoothing: 0.0        # cross_entropy only, in [0, 1)
  target: null                # or your own "module:function": loss_fn(outputs, targets) -> scalar (replaces name)
  args: {}                    # keyword arguments for the custom loss

step:                         # optional: your own step(model, batch) -> loss or {loss, logits, targets}
  target: null                # "module:function"; null = the model's own loss (dict batches), else the loss above
  args: {}                    # extra keyword arguments for the step

optim:
  name: adam                  # sgd | adam | adamw | rmsprop | adagrad
  lr: 1.0e-3                  # learning rate (the peak when a schedule is set); find one with nndiag lr-find
  weight_decay: 0.0           # L2 strength (decoupled for adamw); check-loss turns it off, then checks it raises the loss
  momentum: 0.0               # sgd and rmsprop only
  nesterov: false             # sgd only; needs momentum > 0
  betas: [0.9, 0.999]         # adam and adamw only
  eps: 1.0e-8                 # adam, adamw, rmsprop, adagrad

schedule:
  name: none                  # none | step | cosine | linear | inverse-sqrt
  warmup_steps: 0             # linear warm-up over this many optimizer steps
  step_size: 10               # step only: epochs between decays
  gamma: 0.1                  # step only: LR multiplier at each decay
  min_lr_ratio: 0.0           # cosine and linear: final LR as a fraction of the peak

train:
  batch_size: 64              # examples per optimizer step
  epochs: 10                  # passes over the training data
  max_steps: null             # stop after this many optimizer steps (smoke runs); null = no limit
  eval_batch_size: null       # evaluation batch size; null = 4 x batch_size
  grad_clip: null             # clip the global gradient norm to this; null = off
  early_stopping:
    patience: null            # epochs without improvement before stopping; null = off
    metric: val_loss          # val_loss | val_acc
    min_delta: 0.0            # smallest change that counts as an improvement

search:
  space:                      # recipe key -> range; log: true samples uniformly in log space
    optim.lr: {low: 1.0e-5, high: 1.0e-1, log: true}            # the notes: search the LR in log space
    optim.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}  # regularization strength, log space too
    model.args.hidden: {low: 16, high: 256, log: true, type: int}  # any model.args key; type: float | int | categorical (with choices)
  coarse: {trials: 12, epochs: 2}   # wide ranges, short trials (the notes: 1-5 epochs)
  fine: {trials: 6, epochs: 10}     # narrowed around the best coarse trials, longer (10-20 epochs)
  top_k: 3                    # fine ranges are drawn around this many best coarse trials
  metric: auto                # auto (val_acc for class labels, else val_loss) | val_acc | val_loss
""")

MY_DATA = '''\
"""Example data for an nndiag recipe (written by `nndiag init --with-targets`): replace with yours.

nndiag calls `make(**data.args)` and expects `(train, val)`: each a torch Dataset whose items are
`(input, target)`, or a pair of tensors/arrays `(X, y)`; `val` may be None (then nndiag holds out
data.val_fraction of train). Classification targets are integer class indices.
"""

import torch


def make(n: int = 2000, features: int = 16, classes: int = 4, noise: float = 1.0, seed: int = 0):
    """`classes` Gaussian clusters in `features` dimensions, inputs with mean 0 and std about 1."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=g) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + noise * torch.randn(n, features, generator=g)
    x = (x - x.mean(0)) / x.std(0)
    cut = int(0.8 * n)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
'''

MY_MODELS = '''\
"""Example model for an nndiag recipe (written by `nndiag init --with-targets`): replace with yours.

nndiag calls `build(**model.args)` and expects a torch.nn.Module whose output has one score per class
(cross_entropy, multi_margin) or one value per target (bce, mse).
"""

from torch import nn


def build(in_features: int = 16, classes: int = 4, hidden: int = 64, depth: int = 2):
    """An MLP: `depth` hidden layers of `hidden` ReLU units, then a linear layer with one output per class."""
    layers, width = [], in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)
'''


def init_files(path: Path, with_targets: bool = False, source: Path | None = None) -> dict[Path, str]:
    """What `nndiag init` writes: path -> text. `source`: copy a bundled recipe instead of the starter."""
    stem = path.parent.name if path.name == "recipe.yaml" and path.parent.name else path.stem  # init DIR writes DIR/recipe.yaml
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "my-recipe"
    if source is not None:
        files = {path: _copied(source, name, _shown(path))}
    else:
        files = {path: STARTER.substitute(name=name, path=_shown(path))}
    if with_targets:
        files[path.parent / "my_data.py"] = MY_DATA
        files[path.parent / "my_models.py"] = MY_MODELS
    return files


def _copied(source: Path, name: str, shown: str) -> str:
    """A bundled recipe as the user's own: its `name:` is the new file's, its opening comment says where it
    came from (without what only held for the bundled copy, such as "the recipe `make demo` runs"),
    and its commands point at the new path."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    prose, rest = [], 0
    for rest, line in enumerate(lines):  # noqa: B007 (rest: where the prose ended, read after the loop)
        text = line.lstrip("#").strip()
        if not line.startswith("#") or text.startswith("nndiag "):
            break
        prose.append(text)
    sentences = [s for s in _SENTENCE_END.split(" ".join(prose)) if s and "make demo" not in s]
    header = f"# {name}: your copy of the bundled recipe `{source.stem}` (nndiag init --from {source.stem}). {' '.join(sentences)}".rstrip()
    body = "".join(line.replace(f"recipes/{source.name}", shown) if line.startswith("#") else line for line in lines[rest:])
    body = re.sub(r"(?m)^name:.*$", f"name: {name}", body, count=1)
    return header + "\n" + body


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
