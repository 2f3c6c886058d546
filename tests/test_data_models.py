"""Data: built-ins, splits, normalisation, custom targets, streaming. Models: builders and inits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SPIRAL_MLP, recipe_dict
from torch import nn

from nndiag.config.recipe import DataConfig, ModelConfig
from nndiag.errors import BadInput
from nndiag.training.splits import StreamSplit, TensorSplit, build_data
from nndiag.zoo.datasets import spiral
from nndiag.zoo.models import build_model, init_weights

CPU = torch.device("cpu")


def test_spiral_has_no_shared_origin_point():
    (x, y), _ = spiral(classes=3, points_per_class=50)
    assert x.shape == (150, 2) and set(y.tolist()) == {0, 1, 2}
    assert len({tuple(row) for row in x.tolist()}) == 150  # every input distinct


def test_digits_shape_scale_and_split():
    data = build_data(DataConfig(name="digits"), CPU, seed=0)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.val) == 1797 and len(data.val) == round(1797 * 0.2)
    assert float(data.train.x.min()) >= 0 and float(data.train.x.max()) <= 1


def test_split_is_seeded():
    a = build_data(DataConfig(name="digits"), CPU, seed=1)
    b = build_data(DataConfig(name="digits"), CPU, seed=1)
    c = build_data(DataConfig(name="digits"), CPU, seed=2)
    assert torch.equal(a.val.y, b.val.y) and not torch.equal(a.val.y, c.val.y)


def test_mnist1d_uses_its_own_test_split():
    data = build_data(DataConfig(name="mnist1d", args={"num_samples": 1000}), CPU, seed=0)
    assert data.input_shape == (40,) and data.num_classes == 10
    assert (len(data.train), len(data.val)) == (800, 200)


def test_normalize_standardises_with_training_statistics():
    data = build_data(DataConfig(name="digits", normalize=True), CPU, seed=0)
    per_channel = data.train.x
    assert abs(float(per_channel.mean())) < 1e-4 and float(per_channel.std()) == pytest.approx(1.0, abs=1e-3)


def test_csv_dataset(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["a,b,label"] + [f"{u:.3f},{v:.3f},{'cat' if u > 0 else 'dog'}" for u, v in rng.standard_normal((50, 2))]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    data = build_data(DataConfig(name="csv", args={"path": str(tmp_path / "t.csv"), "label": "label"}), CPU, seed=0)
    assert data.num_classes == 2 and data.input_shape == (2,)
    with pytest.raises(BadInput, match="data.args.label"):
        build_data(DataConfig(name="csv", args={"path": str(tmp_path / "t.csv"), "label": "nope"}), CPU, seed=0)


def test_unknown_dataset_and_argument():
    with pytest.raises(BadInput, match="data.name"):
        build_data(DataConfig(name="imagenet"), CPU, seed=0)
    with pytest.raises(BadInput, match="data.args.colours"):
        build_data(DataConfig(name="spiral", args={"colours": 3}), CPU, seed=0)


def test_torchvision_dataset_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(BadInput, match="download: true"):
        build_data(DataConfig(name="mnist", args={"root": str(tmp_path)}), CPU, seed=0)


class DictDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.full((3,), float(i)), "label": i % 2}


def test_large_dataset_streams_and_small_one_is_held_as_tensors(monkeypatch):
    import nndiag.training.splits as data_module

    monkeypatch.setattr(data_module, "BUILTINS", {**data_module.BUILTINS, "dicts": lambda: (DictDataset(), None)})
    held = build_data(DataConfig(name="dicts"), CPU, seed=0)
    streamed = build_data(DataConfig(name="dicts", device_max_mb=0.0, num_workers=0), CPU, seed=0)
    assert isinstance(held.train, TensorSplit) and isinstance(streamed.train, StreamSplit)
    xs = torch.cat([x for x, _ in streamed.train.batches(8)])
    assert torch.equal(xs, held.train.x) and streamed.num_classes == 2
    assert isinstance(streamed.train.take(5), TensorSplit)


@pytest.mark.parametrize(
    "init,activation,std", [("kaiming", "relu", math.sqrt(2 / 512)), ("normal", "tanh", 0.01), ("xavier", "tanh", math.sqrt(2 / 1024))]
)
def test_inits_follow_the_lecture(init, activation, std):
    model = build_model(
        ModelConfig(
            name="mlp", args={"hidden": [512, 512], "activation": activation, "init": init, "init_std": 0.01 if init == "normal" else None}
        ),
        (512,),
        10,
    )
    weight = model[3].weight.detach()  # the second hidden layer: 512 -> 512
    assert float(weight.std()) == pytest.approx(std, rel=0.05)
    assert float(model[3].bias.detach().abs().max()) == 0


def test_mlp_options_and_errors():
    model = build_model(
        ModelConfig(name="mlp", args={"hidden": [16], "dropout": 0.3, "batchnorm": True, "activation": "gelu"}), (1, 8, 8), 10
    )
    kinds = [type(m) for m in model]
    assert nn.BatchNorm1d in kinds and nn.Dropout in kinds and nn.GELU in kinds
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    with pytest.raises(BadInput, match="model.args.activation"):
        build_model(ModelConfig(name="mlp", args={"activation": "swish"}), (4,), 2)
    with pytest.raises(BadInput, match="init_std"):
        build_model(ModelConfig(name="mlp", args={"init": "normal"}), (4,), 2)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40), (40,)])
def test_cnn_handles_images_and_sequences(shape):
    model = build_model(ModelConfig(name="cnn", args={"channels": [8, 16]}), shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_torchvision_model_by_name():
    model = build_model(ModelConfig(name="resnet18"), (3, 32, 32), 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(BadInput, match="3-channel"):
        build_model(ModelConfig(name="resnet18"), (1, 8, 8), 10)
    with pytest.raises(BadInput, match="model.name"):
        build_model(ModelConfig(name="resnet9000"), (3, 32, 32), 10)


def test_init_weights_rejects_unknown_init():
    with pytest.raises(BadInput, match="model.args.init"):
        init_weights(nn.Linear(2, 2), "orthogonal")


def test_experiment_describes_itself(build):
    exp = build(recipe_dict(SPIRAL_MLP))
    described = exp.describe()
    assert "spiral" in described["data"] and "parameters" in described["model"] and described["device"] == "cpu"


def test_recipe_local_datasets_load_in_process_when_workers_would_be_spawned(monkeypatch):
    import multiprocessing

    local = type("Local", (DictDataset,), {"__module__": "nndiag_user.my_data.123"})
    split = StreamSplit(local(), CPU, num_workers=2)
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda *a, **k: "spawn")
    assert split._workers() == 0
    assert StreamSplit(DictDataset(), CPU, num_workers=2)._workers() == 2
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda *a, **k: "fork")
    assert split._workers() == 2
