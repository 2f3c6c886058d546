"""Small real models and token data for the tests of "any model, any batch" (no mocks).

Also importable as a recipe target module: tests copy this file next to a recipe and point
`data.target` / `model.target` / `step.target` / `loss.target` at its functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 20  # token ids 1..19; 0 is padding
CLASSES = 3


def token_pairs(n: int = 240, length: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int64 (n, length), labels int64 (n,)): the label is the most frequent token class (id mod 3),
    which a bag-of-embeddings model can learn."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    counts = torch.stack([(ids % CLASSES == c).sum(dim=1) for c in range(CLASSES)], dim=1)
    return ids, counts.argmax(dim=1)


def make_token_pairs(n: int = 240) -> tuple:
    """A data target: (train, val) as (X, y) pairs of token ids."""
    ids, labels = token_pairs(n)
    cut = n * 3 // 4
    return (ids[:cut], labels[:cut]), (ids[cut:], labels[cut:])


def make_token_dicts(n: int = 240) -> tuple:
    """A data target: (train, val) as mappings of tensors, Hugging Face style."""
    ids, labels = token_pairs(n)
    cut = n * 3 // 4
    columns = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v[:cut] for k, v in columns.items()}, {k: v[cut:] for k, v in columns.items()}


def make_token_dicts_without_labels(n: int = 240) -> tuple:
    train, val = make_token_dicts(n)
    return {k: v for k, v in train.items() if k != "labels"}, {k: v for k, v in val.items() if k != "labels"}


class EmbeddingClassifier(nn.Module):
    """Embedding -> mean over positions -> Linear: takes token ids."""

    def __init__(self, vocab: int = VOCAB, width: int = 32, classes: int = CLASSES):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


def build_embedding(width: int = 32) -> nn.Module:
    return EmbeddingClassifier(width=width)


def tiny_bert(classes: int = CLASSES) -> nn.Module:
    """BertForSequenceClassification from a tiny config: no download."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=classes,
    )
    return BertForSequenceClassification(config)


class TwoHeads(nn.Module):
    """A shared trunk with a class head and a regression head (needs a custom step)."""

    def __init__(self, features: int = 2, classes: int = 3):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(features, 64), nn.ReLU())
        self.classes = nn.Linear(64, classes)
        self.radius = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.classes(h), self.radius(h).squeeze(1)


def build_two_heads() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads()


def two_head_step(model: nn.Module, batch: tuple) -> dict:
    """Cross-entropy on the class head plus a small MSE on the radius head; logits for the checks."""
    x, y = batch
    logits, radius = model(x)
    loss = F.cross_entropy(logits, y) + 0.1 * F.mse_loss(radius, x.norm(dim=1))
    return {"loss": loss, "logits": logits, "targets": y}


class TinyLM(nn.Module):
    """A token-level model: logits (B, T, V) for next-token prediction."""

    def __init__(self, vocab: int = VOCAB, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)
        nn.init.normal_(self.head.weight, std=0.01)  # near-uniform predictions at init

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(ids))))


def lm_pairs(n: int = 200, length: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, length) with padding (0) after a random length; targets = the next token, -100 on padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length + 1), generator=g)
    lengths = torch.randint(4, length + 1, (n,), generator=g)
    positions = torch.arange(length + 1)
    ids[positions[None, :] > lengths[:, None]] = 0
    inputs, targets = ids[:, :-1].clone(), ids[:, 1:].clone()
    targets[targets == 0] = -100
    return inputs, targets


# -- broken pieces, each a bad input --------------------------------------------------------------


def step_non_scalar(model: nn.Module, batch: tuple) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x)[0], y, reduction="none")


def step_non_tensor(model: nn.Module, batch: tuple) -> float:
    x, y = batch
    return float(F.cross_entropy(model(x)[0], y))


def step_no_loss(model: nn.Module, batch: tuple) -> dict:
    x, y = batch
    return {"logits": model(x)[0], "targets": y}


def loss_three_args(outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(outputs, targets, reduction="none") * weights).mean()


def pad_collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads variable-length (ids, label) items with 0 to the longest in the batch."""
    ids = nn.utils.rnn.pad_sequence([torch.as_tensor(i) for i, _ in items], batch_first=True)
    return ids, torch.tensor([int(y) for _, y in items])


class VariableLength(torch.utils.data.Dataset):
    """Items of different lengths: cannot be stacked without a collate function."""

    def __init__(self, n: int = 160, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(3, 12, (1,), generator=g))
            ids = torch.randint(1, VOCAB, (length,), generator=g)
            self.items.append((ids, int(ids[0]) % CLASSES))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return self.items[i]


def make_variable_length() -> tuple:
    return VariableLength(160, 0), VariableLength(40, 1)
