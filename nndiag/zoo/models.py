"""Built-in models and initialisations, torchvision models by name, and custom targets.

Every builder receives the data's `input_shape` and the `num_outputs` the loss needs, plus the
recipe's `model.args`. Initialisations follow the weight-init lecture (CS231n, Neural Networks Part 2):
  default  PyTorch's own (Kaiming-uniform with a = sqrt(5))
  xavier   normal, std = sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio; = 1/sqrt(D_in) for square layers)
  kaiming  normal, std = sqrt(2 / fan_in) (He et al.; for ReLU-family activations)
  normal   normal with std = `init_std` (the lecture's 0.01 * randn and 0.05 * randn cases)
Biases start at zero for every init except `default`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nndiag.config.recipe import ModelConfig, call_target, check_args, quote, resolve_target
from nndiag.errors import BadInput
from nndiag.zoo.sequences import gru, huggingface, transformer

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
INITS = ("default", "xavier", "kaiming", "normal")


def _widths(value: Any, where: str) -> list[int]:
    """Layer widths: a whole number >= 1, or a list of them (true/false are not widths, although Python counts them as ints)."""
    widths = [value] if isinstance(value, (int, bool)) else value
    if not isinstance(widths, (list, tuple)) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise BadInput(f"expected a list of whole-number layer widths >= 1, such as [64, 64], got {quote(value)}", where=where)
    return list(widths)


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise BadInput(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}", where="model.args.activation")
    return ACTIVATIONS[name]()


def init_weights(model: nn.Module, init: str, activation: str = "relu", std: float | None = None) -> None:
    """Apply one of INITS to every Linear and Conv layer of `model`."""
    if init not in INITS:
        raise BadInput(f"unknown init {init!r}; expected one of {', '.join(INITS)}", where="model.args.init")
    if init == "default":
        return
    if init == "normal" and (std is None or std <= 0):
        raise BadInput("init: normal needs init_std > 0 (e.g. 0.01)", where="model.args.init_std")
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        if init == "xavier":
            nn.init.xavier_normal_(m.weight)
        elif init == "kaiming":
            slope = 0.01 if activation == "leaky_relu" else 0.0
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu" if slope else "relu")
        else:
            nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def linear(
    input_shape: tuple[int, ...], num_outputs: int, init: str = "default", init_std: float | None = None, bias: bool = True
) -> nn.Module:
    """A linear classifier (softmax / SVM / logistic regression, by the loss)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs, bias=bias))
    init_weights(model, init, "relu", init_std)
    return model


def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    hidden: list[int] | int = (100,),  # type: ignore[assignment]
    activation: str = "relu",
    init: str = "default",
    init_std: float | None = None,
    dropout: float = 0.0,
    batchnorm: bool = False,
    bias: bool = True,
) -> nn.Module:
    """Fully connected: Flatten -> [Linear -> (BatchNorm) -> activation -> (Dropout)] x len(hidden) -> Linear."""
    hidden = _widths(hidden, "model.args.hidden")
    if not 0 <= dropout < 1:
        raise BadInput(f"expected a number in [0, 1), got {dropout}", where="model.args.dropout")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=bias))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_outputs, bias=bias))
    model = nn.Sequential(*layers)
    init_weights(model, init, activation, init_std)
    return model


def cnn(
    input_shape: tuple[int, ...],
    num_outputs: int,
    channels: list[int] = (32, 64),  # type: ignore[assignment]
    kernel_size: int = 3,
    activation: str = "relu",
    init: str = "default",
    init_std: float | None = None,
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """A small CNN: [Conv -> (BatchNorm) -> activation -> MaxPool(2)] per entry of `channels`,
    then global average pooling and a Linear head. 2-D convolutions for (C, H, W) inputs, 1-D for
    (C, L) or (L,) inputs (e.g. MNIST-1D)."""
    if len(input_shape) == 3:
        conv, norm, pool, flat = nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
        size = min(input_shape[1:])
    elif len(input_shape) in (1, 2):
        conv, norm, pool, flat = nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
        size = input_shape[-1]
    else:
        raise BadInput(f"cnn takes inputs of shape (C, H, W), (C, L) or (L,); the data has {input_shape}", where="model.name")
    channels = _widths(channels, "model.args.channels")
    layers: list[nn.Module] = [] if len(input_shape) != 1 else [_Unsqueeze()]
    in_ch = input_shape[0] if len(input_shape) > 1 else 1
    for out_ch in channels:
        layers.append(conv(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=not batchnorm))
        if batchnorm:
            layers.append(norm(out_ch))
        layers.append(_activation(activation))
        if size >= 4:
            layers.append(pool(2))
            size //= 2
        in_ch = out_ch
    layers += [flat(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_ch, num_outputs))
    model = nn.Sequential(*layers)
    init_weights(model, init, activation, init_std)
    return model


class _Unsqueeze(nn.Module):
    """(N, L) -> (N, 1, L): lets a 1-D CNN read flat sequences."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


BUILTINS = {"linear": linear, "mlp": mlp, "cnn": cnn, "transformer": transformer, "gru": gru, "huggingface": huggingface}
KEYWORD_INPUTS = ("transformer", "gru", "huggingface")  # built-ins that also take dict batches (input_ids, attention_mask, labels)


def build_model(
    config: ModelConfig, input_shape: tuple[int, ...] | None, num_outputs: int, recipe_dir: Path | None = None, structured: bool = False
) -> nn.Module:
    """The recipe's model: a built-in, a torchvision model by name, or a custom target.
    `structured`: the batches' inputs are a dict (input_ids, attention_mask), not one tensor."""
    if config.target is not None:
        fn = resolve_target(config.target, recipe_dir, "model.target")
        model = call_target(fn, config.args, "model.target")
        if not isinstance(model, nn.Module):
            raise BadInput(f"{config.target} must return a torch.nn.Module, got {type(model).__name__}", where="model.target")
        return model
    name = config.name or ""
    if input_shape is None or structured and name not in KEYWORD_INPUTS:
        raise BadInput(
            f"the built-in model {name!r} reads (inputs, targets) batches with one input tensor; these batches are "
            f"structured (e.g. dicts): use model.name {', '.join(KEYWORD_INPUTS)} or your own model.target",
            where="model.name",
        )
    if name in BUILTINS:
        builder = BUILTINS[name]
        for reserved in ("input_shape", "num_outputs"):
            if reserved in config.args:
                raise BadInput(f"{reserved} comes from the data and the loss; remove it", where=f"model.args.{reserved}")
        check_args(builder, config.args, "model.args", skip=("input_shape", "num_outputs"))
        return call_target(lambda **kw: builder(input_shape, num_outputs, **kw), config.args, "model.args")
    return _torchvision_model(name, config.args, input_shape, num_outputs)


def _torchvision_model(name: str, args: dict[str, Any], input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise BadInput(
            f"unknown model {name!r}; built-ins are {', '.join(BUILTINS)}, or a torchvision classification model such as resnet18 (or use model.target)",
            where="model.name",
        )
    if args.get("weights"):
        raise BadInput(
            "pretrained weights need a download; nndiag builds torchvision models from scratch (weights: null)", where="model.args.weights"
        )
    kwargs = {"num_classes": num_outputs, **{k: v for k, v in args.items() if k != "weights"}}
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"torchvision could not build {name} with {kwargs}: {exc}", where="model.args") from None
    if len(input_shape) != 3 or input_shape[0] != 3:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and len(input_shape) == 3 and first.in_channels != input_shape[0]:
            raise BadInput(
                f"{name} expects {first.in_channels}-channel images but the data has shape {input_shape}",
                where="model.name",
            )
    return model
