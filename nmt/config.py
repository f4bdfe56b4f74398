"""One configuration object for a run: model, data and training settings, saved as JSON.

A run directory holds `config.json`; `Config.load` on it is enough to rebuild the model
(together with the tokenizer models saved beside it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt.errors import ConfigError
from nmt.files import atomic_write_text

# GNMT length-penalty alpha of beam search when none is given (`--length-penalty`). Chosen on
# Multi30k val (beam 5) with the dot-attention model released in commit 2eddcd0, since
# replaced: 1.0 gave the best BLEU (39.47; 39.19 at 0.6, 39.03 at 1.4) and a higher chrF than
# 0.6. The figures are that model's, not the current release's (see README and metrics.json).
DEFAULT_LENGTH_PENALTY = 1.0
# The longest translation is ceil(ratio x source tokens) + 5 steps, an int32 in the graph; at
# this ratio a 200-token source may already run to 200,005 steps.
MAX_LENGTH_RATIO = 1000.0


def check_search_options(length_penalty: float, max_length_ratio: float,
                         names: tuple[str, str] = ("length penalty", "max_length_ratio")
                         ) -> None:
    """Refuse decoding options that would decode nonsense (NaN, inf, an int32 overflow).

    Args:
        length_penalty: GNMT alpha, finite and >= 0.
        max_length_ratio: longest translation per source token, in (0, MAX_LENGTH_RATIO].
        names: how the caller calls the two options (the CLI: its flags).

    Raises:
        ConfigError: naming the option, what was expected and what was received.
    """
    penalty_name, ratio_name = names
    if not math.isfinite(length_penalty) or length_penalty < 0:
        raise ConfigError(f"{penalty_name} must be >= 0 and finite, received "
                          f"{length_penalty}")
    if not math.isfinite(max_length_ratio) or not 0 < max_length_ratio <= MAX_LENGTH_RATIO:
        raise ConfigError(f"{ratio_name} must be > 0 and <= {MAX_LENGTH_RATIO:g}, received "
                          f"{max_length_ratio}")

LR_SCHEDULES = ("constant", "inverse_sqrt", "cosine")
ARCHITECTURES = ("rnn", "transformer")
CELLS = ("gru", "lstm")
POSITIONS = ("sinusoidal", "learned")


@dataclass
class ModelConfig:
    """Architecture of the encoder-decoder; vocabulary sizes come from the tokenizers."""

    src_vocab_size: int = 4000
    tgt_vocab_size: int = 4000
    embedding_dim: int = 256
    encoder_units: int = 256  # per direction: encoder states have 2 * encoder_units features
    encoder_layers: int = 1
    decoder_units: int = 512
    decoder_layers: int = 1
    score: str = "general"
    attention_mode: str = "soft"
    attention_units: int = 256  # hidden size of the additive (MLP) score
    hard_temperature: float = 1.0  # Gumbel-softmax temperature of hard attention in training
    input_feeding: bool = False
    tie_embeddings: bool = False
    dropout: float = 0.2
    # Training drops whole source and target words (their embedding vectors) with this
    # probability (Gal & Ghahramani 2016; Sennrich & Zhang 2019); 0 = off
    word_dropout: float = 0.0
    # The defaults below mean the recurrent model every checkpoint before them holds.
    architecture: str = "rnn"  # "rnn" (the fields above) or "transformer" (the fields below)
    cell: str = "gru"  # recurrent cell of the RNN encoder and decoder: "gru" or "lstm"
    # Transformer only (nmt.transformer); `score`, `attention_mode`, `attention_units`,
    # `hard_temperature`, `dropout`, `word_dropout` and `tie_embeddings` apply to it too
    layers: int = 3  # encoder layers, and as many decoder layers
    model_dim: int = 256  # embedding and residual-stream size
    heads: int = 4  # attention heads; each has model_dim / heads features
    ffn_dim: int = 1024  # hidden size of the position-wise feed-forward network
    positions: str = "sinusoidal"  # "sinusoidal" or "learned" position embeddings
    max_positions: int = 512  # rows of learned position embeddings (later positions reuse
    # the last row)
    share_embeddings: bool = False  # one embedding for source and target (equal vocabularies)
    # cross-attention layer whose head-average is the translation's alignment matrix (plots,
    # alignments); None = the penultimate layer (or the only one), see nmt.transformer
    alignment_layer: int | None = None

    def validate(self) -> None:
        """Raise ConfigError for values the model cannot be built from."""
        from nmt import attention  # local import: attention imports keras

        for name in ("src_vocab_size", "tgt_vocab_size", "embedding_dim", "encoder_units",
                     "encoder_layers", "decoder_units", "decoder_layers", "attention_units",
                     "layers", "model_dim", "heads", "ffn_dim", "max_positions"):
            _require(getattr(self, name) >= 1, f"model.{name}", ">= 1", getattr(self, name))
        for name, allowed in (("architecture", ARCHITECTURES), ("cell", CELLS),
                              ("positions", POSITIONS)):
            _require(getattr(self, name) in allowed, f"model.{name}", f"one of {list(allowed)}",
                     getattr(self, name))
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "a value in [0, 1)", self.dropout)
        _require(0.0 <= self.word_dropout < 1.0, "model.word_dropout", "a value in [0, 1)",
                 self.word_dropout)
        _require(self.hard_temperature > 0, "model.hard_temperature", "> 0", self.hard_temperature)
        for name, check in (("score", attention.check_score),
                            ("attention_mode", attention.check_mode)):
            try:  # the attention layer's own check, with the field's name in front
                check(getattr(self, name))
            except ValueError as error:
                raise ConfigError(f"model.{name}: {error}") from None
        if self.architecture == "transformer":
            self._validate_transformer()
            return
        key_dim = 2 * self.encoder_units
        if attention.SCORES[self.score].needs_equal_dims and key_dim != self.decoder_units:
            raise ConfigError(
                f"model.score={self.score!r} compares decoder and encoder states directly, so "
                f"decoder_units must equal 2 * encoder_units; received decoder_units="
                f"{self.decoder_units}, encoder_units={self.encoder_units}. Use score 'general' "
                "or 'additive' for different sizes.")

    def _validate_transformer(self) -> None:
        """The Transformer's own constraints (every score compares per-head vectors of equal
        size, so the RNN's size check does not apply)."""
        for name, rnn_only in (("input_feeding", self.input_feeding),
                               ("cell", self.cell != "gru")):
            if rnn_only:  # a flag the Transformer would silently ignore
                raise ConfigError(f"model.{name} applies to architecture 'rnn' only; received "
                                  f"{getattr(self, name)!r} with architecture 'transformer'")
        if self.model_dim % self.heads:
            raise ConfigError(f"model.model_dim: expected a multiple of model.heads="
                              f"{self.heads}, received {self.model_dim}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(f"model.share_embeddings needs equal vocabularies; received "
                              f"src_vocab_size={self.src_vocab_size}, tgt_vocab_size="
                              f"{self.tgt_vocab_size}")
        layer = self.alignment_layer
        _require(layer is None or 0 <= layer < self.layers, "model.alignment_layer",
                 f"None or a layer index in [0, {self.layers})", layer)


@dataclass
class DataConfig:
    """Where the parallel corpus comes from and how it is cut into subwords."""

    # built-in corpus, or several trained on as one: "multi30k+tatoeba" or a list of names
    corpus: str | list[str] = "multi30k"
    src: str = "de"
    tgt: str = "en"
    # local folder with the corpus files (no download); with several corpora one NAME=DIR
    # entry per corpus (a list, or comma-separated)
    data_dir: str | list[str] | None = None
    cache_dir: str = "data"  # download cache
    train_src: str | None = None  # plain-text corpus instead of a built-in one
    train_tgt: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    src_vocab_size: int = 4000  # requested sentencepiece sizes (see nmt.tokenizer)
    tgt_vocab_size: int = 4000
    max_length: int = 64  # subword tokens per side; longer training pairs are dropped
    train_limit: int | None = None  # use only the first N training pairs (tests, quick runs)
    valid_limit: int | None = None

    def validate(self) -> None:
        """Raise ConfigError for inconsistent data options."""
        _require(self.max_length >= 2, "data.max_length", ">= 2", self.max_length)
        from nmt.data import corpus_names
        from nmt.errors import DataError

        try:
            if self.train_src is None:  # plain files name their own corpus
                corpus_names(self.corpus)
        except DataError as error:
            raise ConfigError(f"data.corpus: {error}") from None
        for name in ("src_vocab_size", "tgt_vocab_size"):
            _require(getattr(self, name) >= 16, f"data.{name}", ">= 16", getattr(self, name))
        pairs = [(self.train_src, self.train_tgt), (self.valid_src, self.valid_tgt)]
        for a, b in pairs:
            if (a is None) != (b is None):
                raise ConfigError("data: give both --train-src and --train-tgt (and both "
                                  "--valid-src and --valid-tgt), or neither")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a training run."""

    epochs: int = 20
    time_budget: float | None = None  # minutes of wall time; stops after the current batch
    batch_tokens: int = 4096  # target tokens per batch (padding included)
    learning_rate: float = 2e-3
    lr_schedule: str = "inverse_sqrt"
    warmup_steps: int = 400
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    seed: int = 1234
    patience: int = 4  # epochs without a better validation BLEU before stopping
    jit_compile: bool = True
    # 16-bit computation (bfloat16 on CPUs, float16 with loss scaling on GPUs); weights,
    # attention softmax and loss stay float32
    mixed_precision: bool = False
    bucket_boundaries: list[int] = field(default_factory=lambda: [12, 16, 20, 26, 34, 48, 64])
    valid_beam: int = 1  # decoding used for validation BLEU (1 = greedy)
    # Subword regularisation (Kudo 2018): alpha of sentencepiece sampling, each pass over the
    # training corpus cuts every sentence anew; 0 = always the single best segmentation
    subword_sampling: float = 0.0
    # Exponential moving average of the weights (Polyak averaging, nmt.averaging): validation
    # and the saved weights use the average; 0 = off, else the decay per step (e.g. 0.999)
    ema_decay: float = 0.0

    def validate(self) -> None:
        """Raise ConfigError for values training cannot run with."""
        _require(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        _require(self.time_budget is None or self.time_budget > 0, "train.time_budget",
                 "> 0 minutes", self.time_budget)
        _require(self.batch_tokens >= 16, "train.batch_tokens", ">= 16", self.batch_tokens)
        _require(self.learning_rate > 0, "train.learning_rate", "> 0", self.learning_rate)
        _require(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
                 f"one of {list(LR_SCHEDULES)}", self.lr_schedule)
        _require(self.warmup_steps >= 0, "train.warmup_steps", ">= 0", self.warmup_steps)
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "a value in [0, 1)",
                 self.label_smoothing)
        _require(self.clip_norm > 0, "train.clip_norm", "> 0", self.clip_norm)
        _require(self.patience >= 1, "train.patience", ">= 1", self.patience)
        _require(self.valid_beam >= 1, "train.valid_beam", ">= 1", self.valid_beam)
        _require(0.0 <= self.subword_sampling <= 1.0, "train.subword_sampling",
                 "0 (off) or an alpha in (0, 1]", self.subword_sampling)
        _require(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "0 (off) or a decay in (0, 1)",
                 self.ema_decay)
        bounds = self.bucket_boundaries
        _require(bool(bounds) and all(b >= 2 for b in bounds) and bounds == sorted(set(bounds)),
                 "train.bucket_boundaries", "increasing lengths >= 2", bounds)


@dataclass
class Config:
    """Everything needed to rebuild and rerun a model: the tree of the three sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        """Check every section; return self so calls chain."""
        self.model.validate()
        self.data.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a (possibly partial) nested dict; unknown fields raise ConfigError."""
        return _from_dict(cls, data, "").validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temporary file, then rename)."""
        return atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a config JSON file; bad JSON or fields raise ConfigError naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ConfigError(f"config file not found: {path}") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} is not valid JSON: {error}") from error
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error


def _require(ok: bool, name: str, expected: str, received: Any) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, received {received!r}")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Recursively build dataclass `cls` from `data`, type-checking every field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected an object, received {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config field {prefix}{unknown[0]!r}; valid fields here: "
                          f"{sorted(fields)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _from_dict(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _check_type(value, hint, f"{prefix}{name}")
    return cls(**values)


def _check_type(value: Any, hint: Any, name: str) -> Any:
    """Accept `value` if it fits the type hint (ints are accepted for floats)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return value
        origin = typing.get_origin(option)
        if origin is list and isinstance(value, list):
            (item_type,) = typing.get_args(option)
            return [_check_type(item, item_type, name) for item in value]
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool) and type(value) is option:
            return value
    raise ConfigError(f"{name}: expected {_type_name(hint)}, received {value!r}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
