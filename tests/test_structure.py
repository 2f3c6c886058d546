"""The structure and loss checks check-loss runs on one batch: each on a model written the way people write the
bug, beside its fixed twin that must stay quiet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nndiag
from nndiag.zoo.datasets import digits

STRUCTURE_CODES = {
    "frozen-parameters",
    "no-gradient",
    "not-in-optimizer",
    "outputs-bounded",
    "symmetric-units",
    "eval-not-deterministic",
    "batch-dependence",
    "loss-broadcasts",
    "loss-scales-with-batch",
    "regularization-dominates",
}


@pytest.fixture(scope="module")
def data():
    (x, y), _ = digits(flatten=True)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return x[:512], y[:512]


def mlp(last: nn.Module | None = None, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)]
    return nn.Sequential(*layers, *([last] if last is not None else []))


def found(result) -> dict[str, str]:
    return {f.code: f.severity for f in result.findings if f.code in STRUCTURE_CODES}


def test_a_healthy_mlp_and_a_batchnorm_cnn_raise_nothing(data):
    x, y = data
    assert found(nndiag.check_loss(mlp(), (x, y))) == {}
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(512, 10),
    )
    result = nndiag.check_loss(cnn, (x, y), optimizer=torch.optim.SGD(cnn.parameters(), lr=0.1, weight_decay=1e-4))
    assert found(result) == {} and result.status == "pass", result.findings


def test_frozen_parameters_scale_with_how_little_trains(data):
    x, y = data
    model = mlp()
    model[0].requires_grad_(False)  # 4,160 of 4,810 values frozen: a backbone-like share, reported only
    assert found(nndiag.check_loss(model, (x, y), optimizer=torch.optim.Adam(model[2].parameters())))["frozen-parameters"] == "info"
    model = mlp()
    for p in [model[0].weight, model[0].bias, model[2].weight]:
        p.requires_grad_(False)
    assert found(nndiag.check_loss(model, (x, y), optimizer=torch.optim.Adam([model[2].bias])))["frozen-parameters"] == "warn"
    model = mlp().requires_grad_(False)
    assert found(nndiag.check_loss(model, (x, y), step=lambda m, b: F.cross_entropy(m(b[0]), b[1])))["frozen-parameters"] == "fail"


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features, self.head = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.features(x)).detach())  # the bug: the features never learn


def test_a_detach_in_forward_leaves_the_first_layer_without_gradient(data):
    x, y = data
    result = nndiag.check_loss(Detached(), (x, y))
    finding = next(f for f in result.findings if f.code == "no-gradient")
    assert finding.severity == "fail" and finding.evidence["no_gradient"] == ["features.weight", "features.bias"]
    detached_loss = nndiag.check_loss(mlp(), (x, y), step=lambda m, b: torch.tensor(F.cross_entropy(m(b[0]), b[1]).item()))
    assert found(detached_loss)["no-gradient"] == "fail" and "no-gradient" not in found(nndiag.check_loss(mlp(), (x, y)))


def test_parameters_left_out_of_the_users_optimizer(data):
    x, y = data
    model = mlp()
    result = nndiag.check_loss(model, (x, y), optimizer=torch.optim.SGD(model[2].parameters(), lr=0.1))
    finding = next(f for f in result.findings if f.code == "not-in-optimizer")
    assert finding.severity == "fail" and finding.evidence["not_in_optimizer"] == ["0.weight", "0.bias"]
    whole = mlp()
    assert "not-in-optimizer" not in found(nndiag.check_loss(whole, (x, y), optimizer=torch.optim.SGD(whole.parameters(), lr=0.1)))
    # the other steps use the user's optimizer too: overfit-small cannot memorise with the first layer untrained
    # (it fails or warns), and the optimizer is handed back with its own parameters only
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    nndiag.overfit_small(model, (x, y), optimizer=optimizer, steps=50)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2]


def test_an_activation_after_the_last_layer_bounds_the_outputs(data):
    x, y = data
    assert found(nndiag.check_loss(mlp(nn.ReLU()), (x, y)))["outputs-bounded"] == "warn"
    assert found(nndiag.check_loss(mlp(nn.Softmax(dim=1)), (x, y)))["outputs-bounded"] == "fail"
    assert "outputs-bounded" not in found(nndiag.check_loss(mlp(), (x, y)))


def test_hidden_layers_that_stay_identical_are_symmetric_but_a_zero_layer_before_a_random_one_is_fine(data):
    x, y = data
    deep = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.zeros_(deep[0].weight)
    nn.init.zeros_(deep[2].weight)  # nothing flows back into layer 0: its zero rows get zero gradients and stay equal
    finding = next(f for f in nndiag.check_loss(deep, (x, y)).findings if f.code == "symmetric-units")
    assert finding.severity == "fail" and finding.evidence["layers"] == ["0"]
    constant = mlp()
    for p in constant.parameters():
        nn.init.constant_(p, 0.01)  # every unit of every layer alike: the same activations, the same gradients
    assert found(nndiag.check_loss(constant, (x, y)))["symmetric-units"] == "fail"
    one_zero = mlp()
    nn.init.zeros_(one_zero[0].weight)  # the random layer after it sends each unit its own gradient
    assert "symmetric-units" not in found(nndiag.check_loss(one_zero, (x, y)))
    last = mlp()
    nn.init.zeros_(last[2].weight)
    assert "symmetric-units" not in found(nndiag.check_loss(last, (x, y)))


class LoRALinear(nn.Module):
    """A frozen base layer plus a trainable low-rank update B @ A whose B starts at zero (as PEFT initialises it)."""

    def __init__(self, features: int, rank: int = 4):
        super().__init__()
        self.base = nn.Linear(features, features).requires_grad_(False)
        self.a = nn.Linear(features, rank, bias=False)
        self.b = nn.Linear(rank, features, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x):
        return self.base(x) + self.b(self.a(x))


def test_a_lora_adapter_whose_b_starts_at_zero_is_not_symmetric(data):
    x, y = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), LoRALinear(64), nn.ReLU(), nn.Linear(64, 10))
    assert "symmetric-units" not in found(nndiag.check_loss(model, (x, y)))


class AlwaysDropout(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.functional, self.dropout = nn.Linear(64, 64), nn.Linear(64, 10), functional, nn.Dropout(0.5)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(F.dropout(h, 0.5, training=True) if self.functional else self.dropout(h))


def test_dropout_left_on_at_evaluation(data):
    x, y = data
    assert found(nndiag.check_loss(AlwaysDropout(functional=True), (x, y)))["eval-not-deterministic"] == "fail"
    assert "eval-not-deterministic" not in found(nndiag.check_loss(AlwaysDropout(functional=False), (x, y)))


class MixesExamples(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h - h.mean(dim=0))  # statistics over the batch, at evaluation too


def test_outputs_that_depend_on_the_rest_of_the_batch(data):
    x, y = data
    assert found(nndiag.check_loss(MixesExamples(), (x, y)))["batch-dependence"] == "fail"
    assert "batch-dependence" not in found(nndiag.check_loss(mlp(), (x, y)))
    half = mlp().to(torch.bfloat16)  # weights in bf16: other batch sizes round differently, by design not a bug
    assert "batch-dependence" not in found(nndiag.check_loss(half, (x, y)))
    assert found(nndiag.check_loss(MixesExamples().to(torch.bfloat16), (x, y)))["batch-dependence"] == "fail"


def test_the_passes_compared_run_in_full_fp32_and_the_settings_come_back():
    from nndiag.training import engine
    from nndiag.training.scoring import Scorer

    scorer = Scorer(way="loss", autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with engine.exact_math(scorer):
        with scorer.autocast():
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # no bf16 autocast inside
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with scorer.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_a_regression_loss_that_broadcasts_b1_against_b(data):
    x, _ = data
    target = x[:, :3].sum(dim=1)  # (B,)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))  # (B, 1)
    broadcast = nndiag.check_loss(model, (x, target), loss=lambda out, t: ((out - t) ** 2).mean())
    finding = next(f for f in broadcast.findings if f.code == "loss-broadcasts")
    assert finding.severity == "fail" and finding.evidence["broadcast"] == [32, 32]
    fixed = nndiag.check_loss(model, (x, target), loss=lambda out, t: ((out.squeeze(-1) - t) ** 2).mean())
    assert "loss-broadcasts" not in found(fixed)
    warned = nndiag.check_loss(model, (x, target), loss=F.mse_loss)  # PyTorch's own warning is read too
    assert "loss-broadcasts" in found(warned)


def test_a_summed_loss_scales_with_the_batch(data):
    x, y = data
    assert found(nndiag.check_loss(mlp(), (x, y), loss=nn.CrossEntropyLoss(reduction="sum")))["loss-scales-with-batch"] == "warn"
    assert "loss-scales-with-batch" not in found(nndiag.check_loss(mlp(), (x, y), loss=nn.CrossEntropyLoss()))


def test_weight_decay_that_dominates_the_loss(data):
    x, y = data
    model = mlp()
    heavy = nndiag.check_loss(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1.0))
    assert found(heavy)["regularization-dominates"] == "warn"
    decoupled = nndiag.check_loss(model, (x, y), optimizer=torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=1.0))
    assert found(decoupled)["regularization-dominates"] == "warn"
    usual = nndiag.check_loss(model, (x, y), optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))
    assert "regularization-dominates" not in found(usual)
    assert usual.metrics["l2_penalty"] is None and usual.metrics["weight_decay_kind"] == "decoupled"  # AdamW adds no L2 term


def test_the_usual_resnet_weight_decay_is_not_dominating():
    """ResNet-18 with SGD(weight_decay=5e-4), the CIFAR recipe: its L2 term (~3) is above ln 10, but its gradient is a
    few percent of the data's, so the decay does not overwhelm the loss."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    result = nndiag.check_loss(
        model,
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4),
    )
    assert result.metrics["l2_penalty"] > math.log(10)  # the L2 term alone would call it dominating
    assert "regularization-dominates" not in found(result), result.findings


def test_the_checks_hand_the_model_back_as_found(data):
    x, y = data
    model = AlwaysDropout(functional=False)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nndiag.check_loss(model, (x, y))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
