"""Recipes: YAML -> typed, validated configuration, with errors that name the key and the fix.

A recipe is one YAML file (see `recipes/` and the docs' Recipes page). Every section is a dataclass below;
each field has a default and a comment giving its meaning or unit. Loading rejects unknown keys,
wrong types and impossible values with a `BadInput` that names the key path (`optim.lr`) and what
was expected. Precedence: `--set key=value` on the command line > YAML > default.

This module must not import torch: `nndiag validate` and `--help` stay fast.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import inspect
import math
import reprlib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from nndiag.errors import BadInput

DEVICES = "auto | cpu | cuda | cuda:N | mps"
LOSSES = ("cross_entropy", "multi_margin", "bce", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("none", "step", "cosine", "linear", "inverse-sqrt")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_NAME = 100  # characters in a recipe name (it names a folder; file systems allow 255 bytes per path part)
MAX_SEED = 2**32 - 1  # seeds are 32-bit: numpy's legacy seeding takes [0, 2**32), torch and Python take them too
MAX_LR = 1e3  # the largest learning rate accepted (real ones stay below ~30, even LARS at batch 32k); beyond it is a typo
MAX_EPOCHS = 1_000_000  # epochs of one run
MAX_TRIALS = 100_000  # trials of one search stage
MAX_INT = 2**53  # any other whole number: beyond it a float such as 1e30 no longer counts exactly
MAX_DEPTH = 100  # nesting levels of a recipe, aliases expanded (a real recipe has fewer than 10)
MAX_VALUES = 100_000  # values in a recipe once its YAML aliases are expanded (a real recipe has a few hundred)
QUOTE = 200  # characters of a value an error message quotes at most
RAISED = 1000  # characters of what user code raised that an error message quotes at most


def _positive(value: float) -> str | None:
    return None if value > 0 else "a number > 0"


def _at_most(limit: float, what: str) -> Callable[[float], str | None]:
    """A value > 0 and at most `limit`."""

    def check(value: float) -> str | None:
        return None if 0 < value <= limit else f"{what} > 0 and at most {int(limit):,}"

    return check


def _seed(value: int) -> str | None:
    return None if 0 <= value <= MAX_SEED else f"a whole number in [0, {MAX_SEED}] (2**32 - 1)"


def _name(value: str) -> str | None:
    return (
        None if len(value) <= MAX_NAME else f"a name of at most {MAX_NAME} characters (it names the run folder; this one has {len(value)})"
    )


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "a number >= 0"


def _fraction(value: float) -> str | None:
    return None if 0 < value < 1 else "a number strictly between 0 and 1"


def _unit_interval(value: float) -> str | None:
    return None if 0 <= value < 1 else "a number in [0, 1)"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else "one of " + ", ".join(choices)

    return check


def _device(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda", "mps"):
        return None
    if value.startswith("cuda:") and value[5:].isdigit():
        return None
    return DEVICES


def _target(value: str | None) -> str | None:
    if value is None:
        return None
    module, _, attr = value.partition(":")
    return None if module and attr else '"module:attr", e.g. "my_models:build"'


def _setting(default: Any = dataclasses.MISSING, check: Callable | None = None, **kwargs: Any) -> Any:
    """A dataclass field with an optional value check (returns what was expected, or None)."""
    metadata = {"check": check} if check else {}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


# --------------------------------------------------------------------------------------------
# The sections of a recipe. Each field: default, then a comment with its meaning or unit.
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    name: str | None = None  # built-in dataset: spiral, digits, mnist1d, tokens, mnist, fashion-mnist, cifar10, cifar100, image-folder, csv
    target: str | None = _setting(
        None, _target
    )  # or a callable "module:attr" returning (train, val): Datasets, (X, y) pairs or mappings of tensors
    args: dict[str, Any] = _setting({})  # keyword arguments for the dataset or the target
    collate: str | None = _setting(
        None, _target
    )  # a callable "module:attr" that turns a list of items into a batch (e.g. pads sequences); null = stack them
    val_fraction: float = _setting(0.2, _fraction)  # share of the training data held out when the data has no validation split
    normalize: bool = False  # standardise inputs with training-set mean/std (per feature, or per channel for images)
    device_max_mb: float = _setting(
        1024.0, _non_negative
    )  # data up to this size is held on the device as tensors; larger streams through a DataLoader
    num_workers: int = _setting(2, _non_negative)  # DataLoader workers, for streamed data only


@dataclass
class ModelConfig:
    name: str | None = None  # built-in: linear, mlp, cnn, transformer, gru, huggingface (from a config); a torchvision name (resnet18)
    target: str | None = _setting(None, _target)  # or a callable "module:attr" returning an nn.Module
    args: dict[str, Any] = _setting({})  # keyword arguments for the model or the target


@dataclass
class LossConfig:
    name: str = _setting("cross_entropy", _one_of(*LOSSES))  # cross_entropy | multi_margin (SVM hinge) | bce | mse
    margin: float = _setting(1.0, _positive)  # multi_margin only: the hinge margin (PyTorch's default 1)
    label_smoothing: float = _setting(0.0, _unit_interval)  # cross_entropy only
    target: str | None = _setting(
        None, _target
    )  # or a custom loss "module:attr": loss_fn(outputs, targets) -> scalar, or a class such as torch.nn:CrossEntropyLoss (replaces name)
    args: dict[str, Any] = _setting({})  # keyword arguments for the custom loss (a class is built with them)


@dataclass
class StepConfig:
    target: str | None = _setting(
        None, _target
    )  # a callable "module:attr": step(model, batch) -> scalar loss, or a mapping {loss, logits, targets}
    args: dict[str, Any] = _setting({})  # extra keyword arguments for the step


@dataclass
class OptimConfig:
    name: str = _setting("sgd", _one_of(*OPTIMIZERS))  # sgd | adam | adamw | rmsprop | adagrad
    lr: float = _setting(0.01, _at_most(MAX_LR, "a learning rate"))  # learning rate (peak LR when a schedule is set); at most 1000
    weight_decay: float = _setting(0.0, _non_negative)  # L2 strength (decoupled for adamw)
    momentum: float = _setting(0.0, _unit_interval)  # sgd and rmsprop only
    nesterov: bool = False  # sgd only; needs momentum > 0
    betas: list[float] = _setting([0.9, 0.999])  # adam and adamw only
    eps: float = _setting(1e-8, _positive)  # adam, adamw, rmsprop, adagrad


@dataclass
class ScheduleConfig:
    name: str = _setting("none", _one_of(*SCHEDULES))  # none | step | cosine | linear | inverse-sqrt
    warmup_steps: int = _setting(0, _non_negative)  # linear warmup from 0 over this many optimizer steps
    step_size: int = _setting(10, _positive)  # step only: epochs between decays
    gamma: float = _setting(0.1, _positive)  # step only: LR multiplier at each decay
    min_lr_ratio: float = _setting(0.0, _unit_interval)  # cosine and linear: final LR as a fraction of the peak


@dataclass
class EarlyStoppingConfig:
    patience: int | None = _setting(None, _positive)  # epochs without improvement before stopping; null = off
    metric: str = _setting("val_loss", _one_of("val_loss", "val_acc"))  # what "improvement" means
    min_delta: float = _setting(0.0, _non_negative)  # smallest change that counts as an improvement


@dataclass
class TrainConfig:
    batch_size: int = _setting(64, _positive)  # examples per optimizer step
    epochs: int = _setting(10, _at_most(MAX_EPOCHS, "a whole number of epochs"))  # passes over the training data (at most 1,000,000)
    max_steps: int | None = _setting(None, _positive)  # stop after this many optimizer steps (smoke runs); null = no limit
    eval_batch_size: int | None = _setting(None, _positive)  # batch size for evaluation; null = 4 x batch_size
    grad_clip: float | None = _setting(None, _positive)  # clip the global gradient norm to this; null = off
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class SearchParam:
    low: float | None = None  # lower bound (numeric parameters)
    high: float | None = None  # upper bound (numeric parameters)
    log: bool = False  # sample uniformly in log space (needs low > 0)
    type: str = _setting("float", _one_of("float", "int", "categorical"))  # float | int | categorical
    choices: list[Any] | None = None  # categorical only: the values to choose from


@dataclass
class StageConfig:
    trials: int = _setting(20, _at_most(MAX_TRIALS, "a whole number of trials"))  # trials in this stage (at most 100,000)
    epochs: int = _setting(2, _at_most(MAX_EPOCHS, "a whole number of epochs"))  # epochs per trial


def _default_fine() -> "StageConfig":
    return StageConfig(trials=10, epochs=10)


@dataclass
class SearchConfig:
    space: dict[str, SearchParam] = _setting({})  # recipe key path -> range, e.g. optim.lr: {low: 1e-5, high: 1e-1, log: true}
    coarse: StageConfig = field(default_factory=StageConfig)  # wide ranges, short trials (notes: 1-5 epochs)
    fine: StageConfig = field(default_factory=_default_fine)  # narrowed ranges, longer trials (notes: 10-20 epochs)
    top_k: int = _setting(3, _positive)  # fine ranges are drawn around this many best coarse trials
    metric: str = _setting(
        "auto", _one_of("auto", "val_acc", "val_loss")
    )  # what "best" means; auto = val_acc for class labels, else val_loss


@dataclass
class Recipe:
    name: str = _setting("run", _name)  # names the run folder: runs/<name>/<command>-<timestamp>/ (at most 100 characters)
    seed: int = _setting(0, _seed)  # seeds torch, numpy and python, in [0, 2**32 - 1]; same recipe and seed -> same numbers on CPU
    device: str = _setting("auto", _device)  # auto = CUDA, then MPS, then CPU
    precision: str = _setting("auto", _one_of(*PRECISIONS))  # auto = bf16 autocast on CUDA where supported, else fp32
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)  # a name, or {name, margin, label_smoothing}, or {target, args}
    step: StepConfig = field(
        default_factory=StepConfig
    )  # optional: your own step(model, batch) -> loss; it comes first, before the model's own loss and the loss section
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # a name, or {name, warmup_steps, ...}
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    # Where the recipe file lives: custom `target` modules are looked up next to it first.
    source: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what is written to the run folder)."""
        data = dataclasses.asdict(self)
        data.pop("source", None)
        return data

    def with_overrides(self, overrides: dict[str, Any]) -> "Recipe":
        """A new, validated recipe with `key.path: value` overrides applied."""
        raw = self.to_dict()
        for path, value in overrides.items():
            set_path(raw, path, value)
        return parse_recipe(raw, source=self.source)


# --------------------------------------------------------------------------------------------
# Parsing: plain data -> dataclasses, with errors that name the key path
# --------------------------------------------------------------------------------------------

# Sections that also accept a bare string, which sets their `name` (loss: mse, schedule: cosine).
_NAME_SHORTHAND = (LossConfig, ScheduleConfig)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " (or null)"
    if origin is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _describe(value: Any) -> str:
    return quote(value, 60)


def quote(value: Any, limit: int = QUOTE) -> str:
    """`repr(value)` cut to `limit` characters: what an error message quotes of a value (never the whole of a huge one)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple, short.maxstring, short.maxother = 3, 8, 8, 8, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp` and convert it (YAML ints to floats, etc.)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp in _NAME_SHORTHAND:
            value = {"name": value}
        return _parse_section(tp, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInput(f"expected a mapping, got {_describe(value)}", where=path)
        _, value_type = typing.get_args(tp)
        if dataclasses.is_dataclass(value_type):
            return {str(k): _convert(v, value_type, f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"expected a list, got {_describe(value)}", where=path)
        (item_type,) = typing.get_args(tp) or (Any,)
        if item_type is Any:
            return list(value)
        return [_convert(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) <= MAX_INT or path == "seed":  # the seed has its own range, said by its check
                return value
            raise BadInput(f"expected a whole number of at most 2**53, got {_describe(value)}", where=path)
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; accept it
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isfinite(value):
                return value
            raise BadInput(f"expected a finite number, got {value}", where=path)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise BadInput(f"expected {_type_name(tp)}, got {_describe(value)}", where=path)


def _parse_section(cls: type, raw: Any, path: str) -> Any:
    where = path or "recipe"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(f"expected a mapping of keys to values, got {_describe(raw)}", where=where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise BadInput(
            f"unknown key; expected one of: {', '.join(fields)}",
            where=key,
        )
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = f"{path}.{name}" if path else name
        value = _convert(raw[name], hints[name], key)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            expected = check(value)
            if expected:
                raise BadInput(f"expected {expected}, got {_describe(raw[name])}", where=key)
        values[name] = value
    return cls(**values)


def _cross_checks(recipe: Recipe) -> None:
    """Rules that involve more than one key."""
    for section in ("data", "model"):
        cfg = getattr(recipe, section)
        if (cfg.name is None) == (cfg.target is None):
            raise BadInput(
                'give exactly one of `name` (a built-in) or `target` ("module:attr")',
                where=section,
            )
    if recipe.optim.nesterov and recipe.optim.momentum <= 0:
        raise BadInput("nesterov needs momentum > 0", where="optim.nesterov")
    if len(recipe.optim.betas) != 2 or not all(0 <= b < 1 for b in recipe.optim.betas):
        raise BadInput(f"expected two numbers in [0, 1), got {recipe.optim.betas}", where="optim.betas")
    for key, param in recipe.search.space.items():
        _check_search_param(recipe, key, param)


def _check_search_param(recipe: Recipe, key: str, param: SearchParam) -> None:
    where = f"search.space.{key}"
    try:
        get_path(recipe.to_dict(), key, allow_missing_leaf=True)
    except KeyError:
        raise BadInput(
            "is not a recipe key path; use dotted keys such as optim.lr, optim.weight_decay, train.batch_size or model.args.dropout",
            where=where,
        ) from None
    if param.type == "categorical":
        if not param.choices:
            raise BadInput("a categorical parameter needs a non-empty `choices` list", where=where)
        return
    if param.choices is not None:
        raise BadInput("`choices` is for `type: categorical` only", where=where)
    if param.low is None or param.high is None:
        raise BadInput("a numeric parameter needs both `low` and `high`", where=where)
    if param.low >= param.high:
        raise BadInput(f"low ({param.low}) must be below high ({param.high})", where=where)
    if param.log and param.low <= 0:
        raise BadInput(f"log: true needs low > 0, got {param.low}", where=where)
    if param.type == "int" and (param.low != int(param.low) or param.high != int(param.high)):
        raise BadInput("an int parameter needs whole-number bounds", where=where)
    check = _field_check(key)
    for end in ("low", "high"):
        expected = check(getattr(param, end)) if check is not None else None
        if expected:
            raise BadInput(f"{key} takes {expected}, so its range cannot reach {getattr(param, end):g}", where=f"{where}.{end}")


def _field_check(path: str) -> Callable[[Any], str | None] | None:
    """The value check of the recipe field at a dotted key path (optim.lr -> OptimConfig.lr's), or None."""
    cls: Any = Recipe
    check = None
    for part in path.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return None
        check = fields[part].metadata.get("check")
        cls = typing.get_type_hints(cls)[part]
    return check


# --------------------------------------------------------------------------------------------
# Reading YAML safely: duplicate keys, deep nesting and alias bombs are errors, not hangs or crashes
# --------------------------------------------------------------------------------------------


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what no recipe needs and what can hang or crash a reader: a key given twice
    in one mapping (YAML says keys are unique; PyYAML silently keeps the last), nesting deeper than MAX_DEPTH
    (PyYAML composes recursively: 5,000 levels is a RecursionError). Alias bombs are bounded after loading
    (`check_size`): PyYAML shares an aliased node, so loading one is cheap; expanding it is what explodes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"the recipe nests deeper than {MAX_DEPTH} levels; no recipe needs that many", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` merges keys that the mapping's own keys then override
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeConstructor reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {quote(key, 60)} in one mapping (first given at line {first.line + 1}); give each key once",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """YAML text -> plain data, through RecipeLoader and `check_size` (yaml.YAMLError or BadInput on refusal)."""
    data = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    check_size(data, where=None)
    return data


def check_size(data: Any, where: str | None = "recipe") -> None:
    """BadInput when `data` (YAML loaded, or a dict from Python) would expand to more than MAX_VALUES values or
    MAX_DEPTH levels, or refers to itself. Shared lists and mappings (YAML aliases) count once per use, as
    copying, printing or hashing the recipe would see them; each is measured once, so the check is cheap."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values when expanded, depth)
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        key = id(node)
        children = [v for pair in node.items() for v in pair] if isinstance(node, dict) else list(node)
        if done:
            open_.discard(key)
            inner = [sizes.get(id(c), (1, 1)) if isinstance(c, (dict, list, tuple)) else (1, 0) for c in children]
            count = 1 + sum(n for n, _ in inner)
            depth = 1 + max((d for _, d in inner), default=0)
            if count > MAX_VALUES:
                raise BadInput(
                    f"expands to more than {MAX_VALUES:,} values (YAML aliases repeat what they point to: an alias bomb?); "
                    "a recipe needs a few hundred",
                    where=where,
                )
            if depth > MAX_DEPTH:
                raise BadInput(
                    f"nests deeper than {MAX_DEPTH} levels once its YAML aliases are expanded; no recipe needs that many", where=where
                )
            sizes[key] = (count, depth)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise BadInput("refers to itself (a YAML alias inside the value it names); a recipe must be a tree of values", where=where)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list, tuple)) and id(c) not in sizes)


def parse_recipe(raw: Any, source: Path | None = None) -> Recipe:
    """Plain data (as loaded from YAML) -> a validated `Recipe`."""
    if raw is None:
        raw = {}
    check_size(raw)
    if isinstance(raw, dict) and "name" not in raw and source is not None:
        raw = {**raw, "name": source.stem[:MAX_NAME]}
    recipe = _parse_section(Recipe, raw, "")
    recipe.source = source
    _cross_checks(recipe)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, parse and validate a recipe file; apply `key=value` overrides from the command line.

    A bare name that is not a file (`quickstart`) is the bundled recipe of that name."""
    path = resolve_recipe_path(Path(path))
    try:
        raw = read_yaml(path.read_text())
    except BadInput as exc:
        raise BadInput(str(exc), where=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"is not valid YAML{at}: {problem}", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot be read: {exc}", where=str(path)) from None
    if raw is not None and not isinstance(raw, dict):
        raise BadInput("expected a YAML mapping of recipe keys at the top level", where=str(path))
    raw = raw or {}
    assignments = [(text, *parse_assignment(text)) for text in overrides or []]
    for _, key, value in assignments:
        set_path(raw, key, value)
    try:
        return parse_recipe(raw, source=path.resolve())
    except BadInput as exc:
        given = next((text for text, key, _ in reversed(assignments) if exc.where and _overlaps(exc.where, key)), None)
        raise BadInput(f"{exc} ({f'from --set {quote(given)[1:-1]}' if given else f'in {path}'})") from None


def resolve_recipe_path(path: Path) -> Path:
    """The recipe file itself, or the bundled recipe a bare name stands for; BadInput when neither exists."""
    if path.is_file():
        return path
    from nndiag.config import library

    try:
        known = {Path(r.file).stem: Path(r.file) for r in library.bundled()}
    except BadInput:  # no bundled recipes to fall back on
        known = {}
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml") and path.stem in known:
        return known[path.stem]
    also = f", or the name of a bundled recipe ({', '.join(known)})" if known else ""
    raise BadInput(f"recipe file not found (expected a YAML file such as recipes/quickstart.yaml{also})", where=str(path))


def _overlaps(where: str, key: str) -> bool:
    """Whether an error at key path `where` concerns the overridden `key` (the same key, or one inside the other)."""
    return where == key or where.startswith(key + ".") or key.startswith(where + ".")


def parse_assignment(text: str) -> tuple[str, Any]:
    """'optim.lr=0.1' -> ('optim.lr', 0.1); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"expected KEY=VALUE such as optim.lr=0.1, got {text!r}", where="--set")
    try:
        return key.strip(), read_yaml(value)
    except BadInput as exc:
        raise BadInput(f"the value of {key.strip()!r}: {exc}", where="--set") from None
    except yaml.YAMLError:
        raise BadInput(f"the value of {key!r} is not valid YAML: {value!r}", where="--set") from None


# --------------------------------------------------------------------------------------------
# Dotted key paths (used by --set and by search spaces)
# --------------------------------------------------------------------------------------------


def get_path(raw: dict[str, Any], path: str, allow_missing_leaf: bool = False) -> Any:
    """Value at `a.b.c` in nested dicts. Free-form `args` mappings may lack the leaf."""
    node: Any = raw
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        free_form = i > 0 and parts[i - 1] == "args"
        if allow_missing_leaf and isinstance(node, dict) and (free_form or i == len(parts) - 1 and not node):
            return None
        raise KeyError(path)
    return node


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating mappings on the way; a string section becomes {name}."""
    parts = path.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # loss: mse  ->  loss: {name: mse}
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {} if child is None else child
        if not isinstance(child, dict):
            raise BadInput(f"cannot set a key inside a {type(child).__name__}", where=path)
        node[part] = child
        node = child
    node[parts[-1]] = value


# --------------------------------------------------------------------------------------------
# Targets: "module:attr", looked up next to the recipe first
# --------------------------------------------------------------------------------------------


def resolve_target(spec: str, base_dir: Path | None, where: str) -> Callable[..., Any]:
    """Import `module:attr`; a module file next to the recipe wins over installed modules."""
    module_name, _, attr = spec.partition(":")
    module = None
    if base_dir is not None:
        candidate = base_dir / (module_name.replace(".", "/") + ".py")
        if candidate.is_file():
            module = _import_file(candidate, module_name, where)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            looked = (
                f" (looked for {module_name.replace('.', '/')}.py next to the recipe in {base_dir} and on sys.path)" if base_dir else ""
            )
            raise BadInput(f"cannot import module {module_name!r}{looked}: {exc}", where=where) from None
        except (Exception, SystemExit, GeneratorExit) as exc:  # the user's module raised (or exited) while importing
            raise BadInput(f"importing {module_name!r} failed: {raised(exc)}", where=where) from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise BadInput(f"module {module_name!r} has no attribute {attr!r}", where=where) from None
    if not callable(obj):
        raise BadInput(f"{spec!r} is not callable (expected a function or class)", where=where)
    return obj


def _import_file(path: Path, module_name: str, where: str) -> types.ModuleType:
    unique = f"nndiag_user.{module_name}.{abs(hash(str(path)))}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # let the user's module import its neighbours
    try:
        sys.modules[unique] = module
        spec.loader.exec_module(module)
    except (Exception, SystemExit, GeneratorExit) as exc:
        sys.modules.pop(unique, None)
        raise BadInput(f"importing {path} failed: {raised(exc)}", where=where) from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def call_target(fn: Callable[..., Any], args: dict[str, Any], where: str) -> Any:
    """Call a user target with keyword arguments; a bad argument is the user's input error."""
    try:
        return fn(**args)
    except BadInput:
        raise
    except (Exception, SystemExit, GeneratorExit) as exc:  # the user's code raised (or exited): their input, without a traceback
        name = getattr(fn, "__name__", repr(fn))
        call = f"calling {name!r} with " if name != "<lambda>" else ""
        raise BadInput(f"{call}args {quote(args)} failed: {raised(exc)}", where=where) from None


def raised(exc: BaseException) -> str:
    """What a user's code raised, for a message: `ValueError: ...` (its text cut to QUOTE characters); SystemExit and
    GeneratorExit say that the code tried to end the program, which a builder must not do."""
    text = str(exc)
    text = text if len(text) <= RAISED else text[: RAISED - 3] + "..."
    if isinstance(exc, (SystemExit, GeneratorExit)):
        return f"it raised {type(exc).__name__}({text}) (it must return its object, or raise an exception; not end the program)"
    return f"{type(exc).__name__}: {text}"


def check_args(fn: Callable[..., Any], args: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    """Reject keyword arguments that a built-in does not take, naming the key (a builder with **kwargs checks its own)."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    params = [p for p in parameters if p not in skip]
    for key in args:
        if key not in params:
            raise BadInput(f"unknown argument; expected one of: {', '.join(params) or '(none)'}", where=f"{where}.{key}")
