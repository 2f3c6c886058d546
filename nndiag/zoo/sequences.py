"""Sequences: offline token-id tasks, small token models and Hugging Face models built from a config.

Everything here is generated or built locally, deterministic from a seed, with no download:

  tokens(...)        two tasks on token ids, as (X, y) tensor pairs or Hugging Face-style dicts
                     first    sequence classification: which of K marker tokens occurs first
                     reverse  token-level: write the prompt back reversed; ignored positions are -100
  transformer(...)   Embedding + learned positions + pre-norm nn.TransformerEncoder + a linear head
  gru(...)           Embedding + nn.GRU + a linear head
  huggingface(...)   a `transformers` model from `AutoConfig.for_model(model_type, **config)`
                     (transformers is an optional extra, imported only when this is called)

The model builders follow nndiag's builder signature `fn(input_shape, num_outputs, **args)`, where
`input_shape` is one example's shape, (T,) for token ids. Their `forward(input_ids,
attention_mask=None, labels=None)` returns logits, (B, num_outputs) or (B, T, num_outputs) with
`per_token=True`; given `labels` it returns {"loss", "logits"} as Hugging Face models do, so a dict
batch can be passed to it as keyword arguments. Their output layers start small (std OUTPUT_INIT_STD),
so the initial cross-entropy is close to ln C (ln V per token), the weight-init lecture's first check.

Token ids: PAD_ID = 0, SEP_ID = 1, BLANK_ID = 2; content tokens are NUM_SPECIAL .. vocab_size - 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nndiag.errors import BadInput

PAD_ID = 0  # padding after a sequence's end; attention_mask is 0 there
SEP_ID = 1  # separates the prompt from the answer slots (task "reverse")
BLANK_ID = 2  # an answer slot the model must fill (task "reverse")
NUM_SPECIAL = 3  # ids below this are special; content tokens are NUM_SPECIAL .. vocab_size - 1
IGNORE_INDEX = -100  # target id that PyTorch's cross-entropy (and Hugging Face) ignore

TASKS = ("first", "reverse")
FORMATS = ("pairs", "dict")
FIRST_REPEATS = 2  # task "first": each marker occurs 1 or 2 times (the same number for every marker of a sequence)
MIN_LENGTH_FRACTION = 0.5  # real lengths are uniform in [this x seq_len, seq_len]; the rest is padding
EMBED_INIT_STD = 0.02  # transformer: std of token and position embeddings (GPT-2's, BERT's initializer_range)
OUTPUT_INIT_STD = 0.02  # std of the output layer's weights (BERT's initializer_range): logits start near 0, loss near ln C

HF_TASKS = {  # nndiag name -> transformers auto class
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "causal-lm": "AutoModelForCausalLM",
}


# --------------------------------------------------------------------------------------------
# Offline token datasets
# --------------------------------------------------------------------------------------------


def tokens(
    task: str = "first",
    num_samples: int = 4000,
    seq_len: int = 24,
    vocab_size: int = 16,
    num_classes: int | None = None,
    train_split: float = 0.8,
    seed: int = 0,
    format: str = "pairs",
) -> tuple[Any, Any]:
    """A token-id task generated offline, split into (train, val).

    Args:
        task: "first" (sequence classification) or "reverse" (token-level, targets (N, T)).
            first: K = `num_classes` marker tokens (ids 3 .. 3+K-1) each occur the same number of
              times (1 or 2) at random positions among noise tokens; the label is the marker that
              occurs first. Every marker is present equally often, so a bag-of-words model is at
              chance (1/K): the order is the whole signal.
            reverse: a prompt of n content tokens (n uniform in 1 .. (seq_len - 1) // 2), then SEP,
              then n BLANK slots, then PAD. The target at the i-th slot is the prompt's i-th token
              from the end; every other position (prompt, SEP, padding) is -100. The logits are
              (N, T, vocab_size), so the loss at init is ln(vocab_size).
        num_samples: examples generated in all (train + val).
        seq_len: T, tokens per example including padding; "first" sequences have a real length
            uniform in [seq_len / 2, seq_len] and are padded with PAD_ID (0) to T.
        vocab_size: V, number of token ids (0 .. V-1), including the 3 special ids.
        num_classes: "first" only: K, the number of markers = classes (default 4). "reverse" has
            vocab_size classes per position.
        train_split: fraction of the examples in the training split; the rest is validation.
        seed: seeds the generator; the same arguments always give the same tensors.
        format: "pairs": each split is (X, y), X int64 (N, T), y int64 (N,) for "first" or (N, T)
            for "reverse". "dict": each split is {"input_ids", "attention_mask", "labels"}, int64
            tensors of N rows (attention_mask is 1 on real tokens, 0 on padding), as Hugging Face
            datasets yield.
    """
    _check_token_args(task, num_samples, seq_len, vocab_size, num_classes, train_split, format)
    gen = torch.Generator().manual_seed(seed)
    if task == "first":
        x, y = _first_task(num_samples, seq_len, vocab_size, num_classes or 4, gen)
    else:
        x, y = _reverse_task(num_samples, seq_len, vocab_size, gen)
    n_train = round(num_samples * train_split)
    return _split(x[:n_train], y[:n_train], format), _split(x[n_train:], y[n_train:], format)


def _check_token_args(
    task: str, num_samples: int, seq_len: int, vocab_size: int, num_classes: int | None, train_split: float, format: str
) -> None:
    def bad(key: str, expected: str, got: Any) -> BadInput:
        return BadInput(f"expected {expected}, got {got!r}", where=f"data.args.{key}")

    if task not in TASKS:
        raise bad("task", f"one of {', '.join(TASKS)}", task)
    if format not in FORMATS:
        raise bad("format", f"one of {', '.join(FORMATS)}", format)
    if not 0 < train_split < 1:
        raise bad("train_split", "a fraction in (0, 1)", train_split)
    if not isinstance(num_samples, int) or round(num_samples * train_split) < 1 or round(num_samples * train_split) >= num_samples:
        raise bad("num_samples", "an integer large enough for a non-empty train and val split (e.g. 4000)", num_samples)
    if task == "reverse":
        if num_classes is not None:
            raise bad("num_classes", "no value for task reverse (its classes are the vocab_size token ids)", num_classes)
        if not isinstance(seq_len, int) or seq_len < 3:
            raise bad("seq_len", "an integer >= 3 for task reverse (prompt, SEP, one answer slot)", seq_len)
        if not isinstance(vocab_size, int) or vocab_size < NUM_SPECIAL + 2:
            raise bad("vocab_size", f"an integer >= {NUM_SPECIAL + 2} ({NUM_SPECIAL} special ids and 2 content tokens)", vocab_size)
        return
    k = 4 if num_classes is None else num_classes
    if not isinstance(k, int) or k < 2:
        raise bad("num_classes", "an integer >= 2 (the number of marker tokens)", num_classes)
    if not isinstance(vocab_size, int) or vocab_size < NUM_SPECIAL + k + 1:
        raise bad(
            "vocab_size",
            f"an integer >= {NUM_SPECIAL + k + 1} ({NUM_SPECIAL} special ids, {k} markers, at least one noise token)",
            vocab_size,
        )
    if not isinstance(seq_len, int) or math.ceil(seq_len * MIN_LENGTH_FRACTION) < k * FIRST_REPEATS:
        raise bad(
            "seq_len",
            f"an integer >= {math.ceil(k * FIRST_REPEATS / MIN_LENGTH_FRACTION)} (room for {FIRST_REPEATS} of each of {k} markers)",
            seq_len,
        )


def _lengths(n: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    low = math.ceil(seq_len * MIN_LENGTH_FRACTION)
    return torch.randint(low, seq_len + 1, (n,), generator=gen)


def _first_task(n: int, seq_len: int, vocab_size: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = _lengths(n, seq_len, gen)
    pos = torch.arange(seq_len)
    real = pos < lengths[:, None]
    x = torch.randint(NUM_SPECIAL + k, vocab_size, (n, seq_len), generator=gen)  # noise tokens
    x[~real] = PAD_ID
    # Marker slots: the first k * repeats positions of a random order of each row's real positions.
    keys = torch.rand(n, seq_len, generator=gen).masked_fill(~real, 2.0)
    order = keys.argsort(dim=1)
    repeats = torch.randint(1, FIRST_REPEATS + 1, (n,), generator=gen)
    for j in range(k * FIRST_REPEATS):
        rows = (repeats * k > j).nonzero().squeeze(1)
        x[rows, order[rows, j]] = NUM_SPECIAL + j % k
    is_marker = (x >= NUM_SPECIAL) & (x < NUM_SPECIAL + k)
    first = torch.where(is_marker, pos, seq_len).argmin(dim=1)
    y = x.gather(1, first[:, None]).squeeze(1) - NUM_SPECIAL
    return x, y


def _reverse_task(n: int, seq_len: int, vocab_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    prompt = torch.randint(1, (seq_len - 1) // 2 + 1, (n,), generator=gen)[:, None]
    content = torch.randint(NUM_SPECIAL, vocab_size, (n, seq_len), generator=gen)
    pos = torch.arange(seq_len)[None, :]
    x = torch.full((n, seq_len), PAD_ID)
    x = torch.where(pos < prompt, content, x)
    x = torch.where(pos == prompt, SEP_ID, x)
    slot = (pos > prompt) & (pos <= 2 * prompt)
    x = torch.where(slot, BLANK_ID, x)
    source = (2 * prompt - pos).clamp(0, seq_len - 1)  # slot i (at prompt + 1 + i) answers prompt[n - 1 - i]
    y = torch.where(slot, content.gather(1, source), IGNORE_INDEX)
    return x, y


def _split(x: torch.Tensor, y: torch.Tensor, format: str) -> Any:
    if format == "pairs":
        return x, y
    return {"input_ids": x, "attention_mask": (x != PAD_ID).long(), "labels": y}


# --------------------------------------------------------------------------------------------
# Token models
# --------------------------------------------------------------------------------------------


class _TokenModel(nn.Module):
    """Shared by the token models: padding mask, pooling, head, and the HF-style `labels` output."""

    def __init__(self, vocab_size: int, d_model: int, width: int, num_outputs: int, pooling: str, pad_id: int | None, per_token: bool):
        super().__init__()
        self.pooling, self.pad_id, self.per_token = pooling, pad_id, per_token
        self.embed = nn.Embedding(vocab_size, d_model)
        self.head = nn.Linear(width, num_outputs)  # width: size of the encoder's states
        nn.init.normal_(self.head.weight, std=OUTPUT_INIT_STD)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Any:
        keep = self._keep(input_ids, attention_mask)
        states = self.encode(input_ids, keep)  # (B, T, d); (B, 1 + T, d) with a CLS token first
        if self.per_token:
            logits = self.head(states[:, 1:] if self.pooling == "cls" else states)  # one row per input token, CLS dropped
        else:
            logits = self.head(self._pool(states, keep))
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX)
        return {"loss": loss, "logits": logits}

    def _keep(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B, T) bool, True on real tokens; None when nothing is masked."""
        if attention_mask is not None:
            return attention_mask.bool()
        return None if self.pad_id is None else input_ids != self.pad_id

    def _pool(self, states: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if self.pooling == "cls":
            return states[:, 0]
        if self.pooling == "last":  # the state at the last real token (padding comes after it)
            last = (
                (keep.sum(1) - 1).clamp(min=0)
                if keep is not None
                else torch.full(states.shape[:1], states.shape[1] - 1, device=states.device)
            )
            return states[torch.arange(states.shape[0], device=states.device), last]
        if keep is None:
            return states.mean(1)
        weights = keep.to(states.dtype).unsqueeze(-1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def encode(self, input_ids: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class TokenTransformer(_TokenModel):
    """Embedding + learned positions + pre-norm Transformer encoder + final LayerNorm + Linear."""

    def __init__(
        self,
        seq_len: int,
        num_outputs: int,
        vocab_size: int,
        d_model: int,
        heads: int,
        layers: int,
        dim_feedforward: int,
        dropout: float,
        pooling: str,
        pad_id: int | None,
        per_token: bool,
    ):
        super().__init__(vocab_size, d_model, d_model, num_outputs, pooling, pad_id, per_token)
        self.max_len = seq_len
        extra = 1 if pooling == "cls" else 0
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * EMBED_INIT_STD) if extra else None
        self.pos = nn.Parameter(torch.randn(1, seq_len + extra, d_model) * EMBED_INIT_STD)  # learned positions
        nn.init.normal_(self.embed.weight, std=EMBED_INIT_STD)  # same scale as the positions, so order is visible from step 0
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def encode(self, input_ids: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if input_ids.shape[1] > self.max_len:
            raise ValueError(f"this transformer was built for sequences of up to {self.max_len} tokens; the batch has {input_ids.shape[1]}")
        h = self.embed(input_ids)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            keep = None if keep is None else F.pad(keep, (1, 0), value=True)  # the CLS token is always real
        h = h + self.pos[:, : h.shape[1]]
        h = self.norm(self.encoder(h, src_key_padding_mask=None if keep is None else ~keep))
        return h


class TokenGRU(_TokenModel):
    """Embedding + (bidirectional) GRU + Linear."""

    def __init__(
        self,
        num_outputs: int,
        vocab_size: int,
        d_model: int,
        hidden: int,
        layers: int,
        dropout: float,
        bidirectional: bool,
        pooling: str,
        pad_id: int | None,
        per_token: bool,
    ):
        super().__init__(vocab_size, d_model, hidden * (2 if bidirectional else 1), num_outputs, pooling, pad_id, per_token)
        self.rnn = nn.GRU(d_model, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional)

    def encode(self, input_ids: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        h = self.embed(input_ids)
        if keep is None or not self.rnn.bidirectional:
            return self.rnn(h)[0]  # left to right, padding after the tokens cannot reach them
        # Right to left must start at each sequence's last real token, not at the end of the padding.
        lengths = keep.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=h.shape[1])[0]


def transformer(
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int = 16,
    d_model: int = 64,
    heads: int = 4,
    layers: int = 2,
    dim_feedforward: int | None = None,
    dropout: float = 0.0,
    pooling: str = "mean",
    pad_id: int | None = PAD_ID,
    per_token: bool = False,
) -> nn.Module:
    """A small Transformer encoder on token ids of shape (T,) = `input_shape`.

    Args:
        vocab_size: number of token ids the embedding holds (every id in the data must be below it).
        d_model: width of the embeddings and of every layer.
        heads: attention heads per layer (must divide d_model).
        layers: encoder layers (pre-norm, GELU, batch_first).
        dim_feedforward: width of each layer's feed-forward block (default 2 x d_model).
        dropout: dropout probability inside the encoder layers.
        pooling: "mean" (over real tokens), "cls" (a learned token prepended) or "last" (the last
            real token's state); ignored with per_token.
        pad_id: token id treated as padding (masked out of attention and pooling) when the batch
            has no attention_mask; null to mask nothing.
        per_token: logits at every position, (B, T, num_outputs), for token-level tasks.
    """
    seq_len = _seq_len(input_shape)
    _check_model_args(vocab_size, d_model, layers, dropout, pooling, ("mean", "cls", "last"))
    if not isinstance(heads, int) or heads < 1 or d_model % heads:
        raise BadInput(f"expected a positive number of heads that divides d_model={d_model}, got {heads!r}", where="model.args.heads")
    ff = 2 * d_model if dim_feedforward is None else dim_feedforward
    if not isinstance(ff, int) or ff < 1:
        raise BadInput(f"expected a positive integer, got {dim_feedforward!r}", where="model.args.dim_feedforward")
    return TokenTransformer(seq_len, num_outputs, vocab_size, d_model, heads, layers, ff, dropout, pooling, pad_id, per_token)


def gru(
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int = 16,
    d_model: int = 32,
    hidden: int = 64,
    layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    pooling: str = "last",
    pad_id: int | None = PAD_ID,
    per_token: bool = False,
) -> nn.Module:
    """A GRU on token ids of shape (T,) = `input_shape`.

    Args:
        vocab_size: number of token ids the embedding holds (every id in the data must be below it).
        d_model: embedding width.
        hidden: GRU state size per direction.
        layers: stacked GRU layers.
        dropout: dropout between GRU layers (needs layers >= 2).
        bidirectional: also read right to left (the head sees 2 x hidden).
        pooling: "last" (the state at the last real token) or "mean" (over real tokens); ignored
            with per_token.
        pad_id: token id treated as padding (excluded from pooling) when the batch has no
            attention_mask; null to treat every token as real. Padding must come after the tokens.
        per_token: logits at every position, (B, T, num_outputs), for token-level tasks.
    """
    _seq_len(input_shape)
    _check_model_args(vocab_size, d_model, layers, dropout, pooling, ("last", "mean"))
    if not isinstance(hidden, int) or hidden < 1:
        raise BadInput(f"expected a positive integer, got {hidden!r}", where="model.args.hidden")
    return TokenGRU(num_outputs, vocab_size, d_model, hidden, layers, dropout, bidirectional, pooling, pad_id, per_token)


def _seq_len(input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise BadInput(
            f"token models take one sequence of token ids per example, shape (T,); the data has {tuple(input_shape)}", where="model.name"
        )
    return int(input_shape[0])


def _check_model_args(vocab_size: int, d_model: int, layers: int, dropout: float, pooling: str, poolings: tuple[str, ...]) -> None:
    for key, value in (("vocab_size", vocab_size), ("d_model", d_model), ("layers", layers)):
        if not isinstance(value, int) or value < 1:
            raise BadInput(f"expected a positive integer, got {value!r}", where=f"model.args.{key}")
    if not 0 <= dropout < 1:
        raise BadInput(f"expected a number in [0, 1), got {dropout!r}", where="model.args.dropout")
    if pooling not in poolings:
        raise BadInput(f"expected one of {', '.join(poolings)}, got {pooling!r}", where="model.args.pooling")


# --------------------------------------------------------------------------------------------
# Hugging Face models from a config (no download)
# --------------------------------------------------------------------------------------------


def huggingface(
    input_shape: tuple[int, ...], num_outputs: int, model_type: str = "bert", task: str = "sequence-classification", **config: Any
) -> nn.Module:
    """A `transformers` model built from a config with random weights: nothing is downloaded.

    `AutoConfig.for_model(model_type, **config)` then `AutoModelFor<task>.from_config(...)`.
    Args:
        model_type: a transformers model type, e.g. "bert", "distilbert", "gpt2".
        task: "sequence-classification" (num_labels = num_outputs), "token-classification"
            (num_labels = num_outputs, labels (B, T) with -100 ignored) or "causal-lm" (vocab_size
            defaults to num_outputs; the model shifts labels by one itself).
        **config: the config's own fields, checked against the model type's defaults (an unknown
            key is an error, not silently stored). Unset fields keep transformers' defaults, which
            for BERT are the full 110M-parameter model: pass a tiny config, e.g. {hidden_size: 32,
            num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, vocab_size: 16,
            max_position_embeddings: 32}.
    The model is called with a dict batch as keyword arguments (input_ids, attention_mask, labels)
    and returns an output with `.loss` (when labels are given) and `.logits`. Needs the optional
    extra: pip install 'nndiag[hf]'.
    """
    transformers = _import_transformers()
    if task not in HF_TASKS:
        raise BadInput(f"expected one of {', '.join(HF_TASKS)}, got {task!r}", where="model.args.task")
    try:
        defaults = transformers.AutoConfig.for_model(model_type)
    except (ValueError, KeyError):
        raise BadInput(
            f"transformers has no model type {model_type!r} (e.g. bert, distilbert, roberta, gpt2)", where="model.args.model_type"
        ) from None
    known = defaults.to_dict()
    for key in config:
        if key in ("num_labels", "id2label", "label2id"):
            raise BadInput("the number of labels comes from the data and the loss (num_outputs); remove it", where=f"model.args.{key}")
        if key not in known and not hasattr(defaults, key):
            raise BadInput(
                f"{model_type} configs have no field {key!r}; known fields: {', '.join(sorted(k for k in known if not k.startswith('_')))}",
                where=f"model.args.{key}",
            )
    config = dict(config)
    if task == "causal-lm":
        if config.setdefault("vocab_size", num_outputs) != num_outputs:
            raise BadInput(
                f"a causal LM predicts vocab_size={config['vocab_size']} classes but the loss expects {num_outputs}",
                where="model.args.vocab_size",
            )
        if "is_decoder" in known:
            config.setdefault("is_decoder", True)
    else:
        config["num_labels"] = num_outputs
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **config)
        model = getattr(transformers, HF_TASKS[task]).from_config(hf_config)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"transformers could not build a {model_type} for {task} from {config}: {exc}", where="model.args") from None
    positions = getattr(hf_config, "max_position_embeddings", None)
    if input_shape and isinstance(positions, int) and input_shape[-1] > positions:
        raise BadInput(
            f"sequences of {input_shape[-1]} tokens need max_position_embeddings >= {input_shape[-1]}, got {positions}",
            where="model.args.max_position_embeddings",
        )
    return model


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise BadInput(
            "Hugging Face models need the transformers package, which is not installed: pip install 'nndiag[hf]' (or pip install transformers)",
            where="model.name",
        ) from None
    return transformers
