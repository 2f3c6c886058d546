"""nndiag.zoo.sequences: the offline token tasks, the token models and the Hugging Face builder."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from nndiag.errors import BadInput
from nndiag.zoo import sequences
from nndiag.zoo.sequences import BLANK_ID, IGNORE_INDEX, NUM_SPECIAL, PAD_ID, SEP_ID, gru, huggingface, tokens, transformer

SMALL = {"num_samples": 200, "seq_len": 16, "vocab_size": 12}


def loss_at_init(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(x)
    return float(F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=IGNORE_INDEX)), logits.shape[-1]


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def test_first_pairs_shapes_dtypes_and_split():
    (x, y), (vx, vy) = tokens("first", **SMALL, train_split=0.75)
    assert x.shape == (150, 16) and vx.shape == (50, 16) and y.shape == (150,) and vy.shape == (50,)
    assert x.dtype == y.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < 12 and set(y.tolist()) <= {0, 1, 2, 3}


def test_first_label_is_the_marker_that_occurs_first_and_counts_carry_no_signal():
    (x, y), _ = tokens("first", num_samples=300, seq_len=20, vocab_size=14, num_classes=3, seed=5)
    markers = range(NUM_SPECIAL, NUM_SPECIAL + 3)
    for row, label in zip(x.tolist(), y.tolist()):
        first = next(t for t in row if t in markers)
        assert label == first - NUM_SPECIAL
        counts = {row.count(m) for m in markers}
        assert len(counts) == 1 and counts <= {1, 2}  # every marker equally often: a bag of words cannot tell
        length = row.index(PAD_ID) if PAD_ID in row else len(row)
        assert length >= 10 and all(t == PAD_ID for t in row[length:]) and PAD_ID not in row[:length]
    assert torch.bincount(y, minlength=3).min() > 60  # classes roughly balanced (100 each expected)


def test_same_seed_same_tensors_other_seed_other_tensors():
    for task in sequences.TASKS:
        a, b, c = tokens(task, **SMALL, seed=3), tokens(task, **SMALL, seed=3), tokens(task, **SMALL, seed=4)
        assert all(torch.equal(s, t) for s, t in zip(a[0] + a[1], b[0] + b[1]))
        assert not torch.equal(a[0][0], c[0][0])


def test_reverse_targets_are_the_reversed_prompt_and_minus_100_elsewhere():
    (x, y), _ = tokens("reverse", num_samples=100, seq_len=13, vocab_size=10, seed=1)
    assert x.shape == y.shape == (80, 13) and x.dtype == y.dtype == torch.int64
    for row, target in zip(x.tolist(), y.tolist()):
        n = row.index(SEP_ID)
        prompt = row[:n]
        assert 1 <= n <= 6 and all(NUM_SPECIAL <= t < 10 for t in prompt)
        assert row[n + 1 : 2 * n + 1] == [BLANK_ID] * n and row[2 * n + 1 :] == [PAD_ID] * (13 - 2 * n - 1)
        assert target[n + 1 : 2 * n + 1] == prompt[::-1]
        assert target[: n + 1] == [IGNORE_INDEX] * (n + 1) and target[2 * n + 1 :] == [IGNORE_INDEX] * (13 - 2 * n - 1)


@pytest.mark.parametrize("task", sequences.TASKS)
def test_dict_format_matches_pairs(task):
    pairs = tokens(task, **SMALL)
    dicts = tokens(task, **SMALL, format="dict")
    for (x, y), d in zip(pairs, dicts):
        assert set(d) == {"input_ids", "attention_mask", "labels"}
        assert all(v.dtype == torch.int64 and len(v) == len(x) for v in d.values())
        assert torch.equal(d["input_ids"], x) and torch.equal(d["labels"], y)
        assert torch.equal(d["attention_mask"], (x != PAD_ID).long()) and 0 < int(d["attention_mask"].sum()) < x.numel()


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"task": "parity"}, "task"),
        ({"format": "hf"}, "format"),
        ({"task": "reverse", "num_classes": 3}, "num_classes"),
        ({"num_classes": 1}, "num_classes"),
        ({"vocab_size": 7}, "vocab_size"),  # 3 special + 4 markers leaves no noise token
        ({"seq_len": 10}, "seq_len"),  # 4 markers x 2 need 8 real tokens; the shortest has 5
        ({"task": "reverse", "seq_len": 2}, "seq_len"),
        ({"num_samples": 1}, "num_samples"),
        ({"train_split": 1.0}, "train_split"),
    ],
)
def test_bad_dataset_arguments_name_the_key(kwargs, key):
    with pytest.raises(BadInput) as err:
        tokens(**{"num_samples": 100, **kwargs})
    assert err.value.where == f"data.args.{key}"


# ---------------------------------------------------------------------------------------------
# Token models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("builder", [transformer, gru])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_classifier_forward_shape_and_initial_loss_near_ln_c(builder, pooling):
    torch.manual_seed(0)
    (x, y), _ = tokens("first", **SMALL)
    model = builder((16,), 4, vocab_size=12, pooling=pooling)
    loss, classes = loss_at_init(model, x, y)
    assert classes == 4 and abs(loss - math.log(4)) < 0.1
    out = model(x[:5])
    assert out.shape == (5, 4) and out.dtype == torch.float32


@pytest.mark.parametrize("builder", [transformer, gru])
def test_per_token_logits_and_initial_loss_near_ln_v(builder):
    torch.manual_seed(0)
    (x, y), _ = tokens("reverse", **SMALL)
    model = builder((16,), 12, vocab_size=12, per_token=True)
    assert model(x[:3]).shape == (3, 16, 12)
    loss, classes = loss_at_init(model, x, y)
    assert classes == 12 and abs(loss - math.log(12)) < 0.1


def test_cls_pooling_and_labels_give_a_hugging_face_style_output():
    torch.manual_seed(0)
    d, _ = tokens("reverse", **SMALL, format="dict")
    model = transformer((16,), 12, vocab_size=12, per_token=True, pooling="cls")
    out = model(**d)
    assert set(out) == {"loss", "logits"} and out["logits"].shape == (160, 16, 12)
    counted = d["labels"] != IGNORE_INDEX
    expected = F.cross_entropy(out["logits"][counted], d["labels"][counted])
    assert torch.allclose(out["loss"], expected)
    cls = transformer((16,), 4, vocab_size=12, pooling="cls")
    assert cls(d["input_ids"][:2]).shape == (2, 4)


@pytest.mark.parametrize(
    "builder, args", [(transformer, {}), (transformer, {"pooling": "last"}), (gru, {}), (gru, {"bidirectional": True, "pooling": "mean"})]
)
def test_padding_is_ignored_with_a_pad_id_and_not_without(builder, args):
    torch.manual_seed(0)
    (x, _), _ = tokens("first", **SMALL)
    short = x[(x == PAD_ID).sum(1) >= 4][:8]  # rows with at least 4 padding tokens at the end
    model = builder((16,), 4, vocab_size=12, **args).eval()
    with torch.no_grad():
        assert torch.allclose(model(short), model(short[:, :-4]), atol=1e-5)  # less padding, same logits
        mask = (short != PAD_ID).long()
        assert torch.allclose(model(short, attention_mask=mask), model(short), atol=1e-5)
        blind = builder((16,), 4, vocab_size=12, **{**args, "pad_id": None, "pooling": "mean"}).eval()
        assert not torch.allclose(blind(short), blind(short[:, :-4]), atol=1e-5)


@pytest.fixture
def one_thread():
    """Real training in a test: one torch thread (on a shared 2-core CPU, 2 threads run ~10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_gru_learns_first_where_a_bag_of_words_stays_near_chance(one_thread):
    torch.manual_seed(0)
    (x, y), (vx, vy) = tokens("first", num_samples=2000, seq_len=16, vocab_size=12)
    model = gru((16,), 4, vocab_size=12)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        for index in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        assert (model(vx).argmax(1) == vy).float().mean() >= 0.9
    bag, vbag = (F.one_hot(t, 12).sum(1).float() for t in (x, vx))  # token counts: all a linear model could use
    linear = torch.nn.Linear(12, 4)
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(300):
        loss = F.cross_entropy(linear(bag), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert (linear(vbag).argmax(1) == vy).float().mean() < 0.4  # chance is 0.25


@pytest.mark.parametrize(
    "builder, shape, args, key",
    [
        (transformer, (16,), {"heads": 3}, "heads"),
        (transformer, (16,), {"dim_feedforward": 0}, "dim_feedforward"),
        (transformer, (16,), {"pooling": "max"}, "pooling"),
        (gru, (16,), {"pooling": "cls"}, "pooling"),
        (gru, (16,), {"hidden": 0}, "hidden"),
        (gru, (16,), {"dropout": 1.0}, "dropout"),
        (transformer, (16,), {"vocab_size": 0}, "vocab_size"),
        (transformer, (1, 8, 8), {}, None),
    ],
)
def test_bad_model_arguments_name_the_key(builder, shape, args, key):
    with pytest.raises(BadInput) as err:
        builder(shape, 4, **args)
    assert err.value.where == (f"model.args.{key}" if key else "model.name")


def test_transformer_rejects_sequences_longer_than_it_was_built_for():
    model = transformer((8,), 4, vocab_size=12)
    with pytest.raises(ValueError, match="up to 8 tokens"):
        model(torch.ones(2, 9, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# Hugging Face models from a config
# ---------------------------------------------------------------------------------------------

TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 12,
    "max_position_embeddings": 16,
}


def test_huggingface_sequence_classification_from_config():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    d, _ = tokens("first", **SMALL, format="dict")
    model = huggingface((16,), 4, **TINY_BERT)
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_labels == 4
    model.eval()
    with torch.no_grad():
        out = model(**d)
    assert out.logits.shape == (160, 4) and abs(float(out.loss) - math.log(4)) < 0.1


@pytest.mark.parametrize("task, cls", [("token-classification", "BertForTokenClassification"), ("causal-lm", "BertLMHeadModel")])
def test_huggingface_token_level_tasks_ignore_minus_100(task, cls):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    d, _ = tokens("reverse", **SMALL, format="dict")
    model = huggingface((16,), 12, task=task, **TINY_BERT).eval()
    assert type(model).__name__ == cls
    with torch.no_grad():
        out = model(**d)
    assert out.logits.shape == (160, 16, 12) and abs(float(out.loss) - math.log(12)) < 0.1


@pytest.mark.parametrize(
    "args, key",
    [
        ({"hidden_sise": 32}, "hidden_sise"),
        ({"num_labels": 3}, "num_labels"),
        ({"model_type": "no-such-model"}, "model_type"),
        ({"task": "translation"}, "task"),
        ({"max_position_embeddings": 8}, "max_position_embeddings"),
        ({"task": "causal-lm", "vocab_size": 30}, "vocab_size"),
    ],
)
def test_huggingface_bad_config_names_the_key(args, key):
    pytest.importorskip("transformers")
    with pytest.raises(BadInput) as err:
        huggingface((16,), 12, **{**TINY_BERT, **args})
    assert err.value.where == f"model.args.{key}"


def test_huggingface_without_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(BadInput, match=r"pip install 'nndiag\[hf\]'") as err:
        huggingface((16,), 4, **TINY_BERT)
    assert err.value.where == "model.name"
