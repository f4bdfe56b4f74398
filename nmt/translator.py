"""Text in, text out: a trained model with its tokenizers, loaded from a run directory.

`Translator.translate` sorts sentences by length into batches, runs greedy or beam search
as one XLA-compiled program per batch shape (`nmt.compiled_search`), and returns the
translations in input order together with tokens, scores and attention weights (for plots,
alignments, JSON and the web page).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nmt import precision
from nmt.compiled_search import CompiledSearch
from nmt.config import DEFAULT_LENGTH_PENALTY, Config, check_search_options
from nmt.errors import CheckpointError, NmtError
from nmt.model import TranslationModel
from nmt.rundir import (
    BEST_WEIGHTS_FILE,
    CONFIG_FILE,
    MODEL_FILES,
    SOURCE_TOKENIZER_FILE,
    TARGET_TOKENIZER_FILE,
    TOKENIZER_FILES,
    missing_files,
    verify_checksums,
)
from nmt.sentences import is_blank
from nmt.shipped import find_model
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, SubwordTokenizer

logger = logging.getLogger(__name__)

MAX_SOURCE_TOKENS = 200  # longer inputs are truncated (with a warning), see `truncated`
SEARCHES_IN_FLIGHT = 2  # batches searched at the same time (`Translator._in_flight`)


@dataclass
class Translation:
    """One translated sentence and what the model looked at while producing it."""

    source: str
    text: str
    source_tokens: list[str]  # subword pieces, EOS included
    target_tokens: list[str]  # subword pieces, EOS included when produced
    attention: np.ndarray  # [len(target_tokens), len(source_tokens)]
    score: float  # length-normalised log-probability (beam) or log-probability (greedy)
    log_prob: float
    truncated: bool = False
    n_best: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    # Transformer only: the cross-attention of every layer and head, [layers, heads,
    # len(target_tokens), len(source_tokens)]; `attention` is one layer's head-average
    heads: np.ndarray | None = None

    def to_json(self, attention_digits: int = 5, heads: bool = False) -> dict:
        """The translation as JSON values; attention weights rounded to `attention_digits`
        decimals, as a list of [len(target_tokens)] rows of [len(source_tokens)] floats.
        `heads`: add "heads", every layer's and head's weights as nested lists [layers]
        [heads][target][source] (a Transformer's; [] for an empty sentence)."""
        record = {
            "source": self.source, "translation": self.text, "score": self.score,
            "log_prob": self.log_prob, "source_tokens": self.source_tokens,
            "target_tokens": self.target_tokens,
            "attention": np.round(self.attention, attention_digits).tolist(),
            "truncated": self.truncated,
            "n_best": [{"translation": text, "score": score} for text, score in self.n_best],
        }
        if heads:
            record["heads"] = ([] if self.heads is None
                               else np.round(self.heads, attention_digits).tolist())
        return record


class Translator:
    """A model plus its source and target tokenizers."""

    def __init__(self, config: Config, model: TranslationModel,
                 source_tokenizer: SubwordTokenizer, target_tokenizer: SubwordTokenizer,
                 name: str = "model", jit_compile: bool = True,
                 large_search_model: Callable[[], TranslationModel] | None = None):
        """`large_search_model`: makes the model that large searches run on (`--dtype auto`,
        `nmt.compiled_search`); None: every search runs on `model`."""
        self.config, self.model, self.name = config, model, name
        self._heads: tf.types.experimental.GenericFunction | None = None  # attention_heads
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self._search = CompiledSearch(model, jit_compile, large_search_model)
        self._pool: ThreadPoolExecutor | None = None  # made by the first multi-batch call

    @classmethod
    def load(cls, run_dir: str | Path, weights: str = BEST_WEIGHTS_FILE, dtype: str = "float32",
             jit_compile: bool = True) -> Translator:
        """Rebuild the model from `run_dir` (config, tokenizers and weights; `nmt.rundir`):
        a run directory, or the name of a shipped model such as "de-en" (`nmt.shipped`).
        Weights and tokenizers are checked against the run's checksums.json first (a
        damaged file raises CheckpointError naming it).

        `dtype` is the compute dtype of the search (`nmt.precision`): "float32", "bfloat16"
        (weights stored and matmuls run in bfloat16; softmax, attention weights and scores in
        float32) or "auto" (float32, and bfloat16 for large searches where the CPU has it).
        `jit_compile` compiles the search with XLA (`nmt.compiled_search`)."""
        run_dir = find_model(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {run_dir}")
        missing = missing_files(run_dir, (*MODEL_FILES, weights))
        if missing:
            raise CheckpointError(f"checkpoint {run_dir} is incomplete: {missing[0]} is missing")
        verify_checksums(run_dir, (*TOKENIZER_FILES, weights))
        config = Config.load(run_dir / CONFIG_FILE)
        model_dtype, large_search_dtype = precision.search_dtypes(dtype)
        model = inference_model(config, run_dir / weights, model_dtype)
        large_search_model = (None if large_search_dtype is None else functools.partial(
            converted_model, model, large_search_dtype))
        return cls(config, model, SubwordTokenizer.load(run_dir / SOURCE_TOKENIZER_FILE),
                   SubwordTokenizer.load(run_dir / TARGET_TOKENIZER_FILE), name=run_dir.name,
                   jit_compile=jit_compile, large_search_model=large_search_model)

    # ------------------------------------------------------------------------ search
    def search(self, source: tf.Tensor | np.ndarray, beam: int = 1, alpha: float = 0.0,
               max_length_ratio: float = 2.0, batch_size: int | None = None
               ) -> dict[str, np.ndarray]:
        """Decode a padded id batch [batch, ts]; outputs have a beam axis [batch, beam, ...].

        Each sentence may produce up to ceil(max_length_ratio * its length) + 5 tokens.
        `batch_size`: the largest batch this caller sends (default: this one's), which
        bounds the shapes compiled (`nmt.compiled_search`)."""
        if beam < 1:
            raise NmtError(f"beam size must be >= 1, received {beam}")
        check_search_options(alpha, max_length_ratio)
        source = np.asarray(source, dtype=np.int32)
        return self._search(source, beam, alpha, max_length_ratio,
                            batch_size or source.shape[0])

    def warm_up(self, beams: Iterable[int], max_length_ratio: float = 2.0) -> None:
        """Trace and compile the searches of `beams` now (for a one-sentence batch), as a
        server does before its first request; otherwise a search's first small call runs
        eagerly and its second one pays for tracing (`nmt.compiled_search`)."""
        source = padded(self.encode_sources(["Ein Test."])[0])
        for beam in beams:
            self._search(source, beam, DEFAULT_LENGTH_PENALTY, max_length_ratio, 1, eager=False)

    # ---------------------------------------------------------------------- text API
    def translate(self, texts: Sequence[str], beam: int = 5, alpha: float = DEFAULT_LENGTH_PENALTY,
                  max_length_ratio: float = 2.0, batch_size: int = 64,
                  n_best: int = 1, heads: bool = False) -> list[Translation]:
        """Translate sentences; the result has one entry per input, in input order.
        `heads`: also give every layer's and head's cross-attention (`Translation.heads`;
        a Transformer only, see `has_heads`)."""
        return [t for batch in self.translate_batches(texts, beam, alpha, max_length_ratio,
                                                      batch_size, n_best, heads=heads)
                for t in batch]

    @property
    def has_heads(self) -> bool:
        """Whether the model has layers and heads of cross-attention (a Transformer)."""
        return hasattr(self.model, "attention_heads")

    def translate_batches(self, texts: Sequence[str], beam: int = 5,
                          alpha: float = DEFAULT_LENGTH_PENALTY, max_length_ratio: float = 2.0,
                          batch_size: int = 64, n_best: int = 1, first_index: int = 0,
                          heads: bool = False) -> Iterator[list[Translation]]:
        """Like `translate`, but yields the results of `texts` chunk by chunk, in order.

        Sentences are sorted by length inside each chunk of `batch_size * 8` sentences so that
        batches are padded little; a caller streaming input gets output chunk by chunk.
        `first_index` is the 0-based input position of `texts[0]` (for warnings); `heads`
        as for `translate`.
        """
        if n_best > beam:
            raise NmtError(f"--n-best ({n_best}) cannot exceed the beam size ({beam})")
        if batch_size < 1:
            raise NmtError(f"batch size must be >= 1, received {batch_size}")
        if heads and not self.has_heads:
            raise NmtError(f"{self.name} is an RNN with one attention: per-layer, per-head "
                           "weights need a Transformer checkpoint")
        chunk = batch_size * 8
        for start in range(0, len(texts), chunk):
            yield self._translate_chunk(list(texts[start:start + chunk]), beam, alpha,
                                        max_length_ratio, batch_size, n_best,
                                        first_index + start, heads)

    def _translate_chunk(self, texts, beam, alpha, max_length_ratio, batch_size, n_best,
                         offset=0, heads=False):
        ids, truncated = self.encode_sources(texts, offset)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        groups = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        batches = [padded([ids[i] for i in indexes]) for indexes in groups]
        outputs = self._in_flight(
            lambda batch: self.search(batch, beam, alpha, max_length_ratio, batch_size), batches)
        results: list[Translation | None] = [None] * len(texts)
        for indexes, batch, output in zip(groups, batches, outputs, strict=True):
            if heads:
                output.update(self._attention_heads(batch, output))
            strings = self._batch_strings(batch, output, n_best)
            for row, index in enumerate(indexes):
                results[index] = self._translation(texts[index], len(ids[index]), output,
                                                   strings, row, truncated[index])
        return results

    def _in_flight(self, search: Callable, batches: list) -> Iterator:
        """`search` of every batch, in order; `SEARCHES_IN_FLIGHT` of them at a time when
        there are several, so that one batch's small serial steps leave the cores to
        another's matmuls (batch 64, 2 cores: greedy 1.35x in bfloat16, 1.13x in float32)."""
        if len(batches) < 2:
            return map(search, batches)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SEARCHES_IN_FLIGHT, thread_name_prefix="search")
        return self._pool.map(search, batches)

    def _attention_heads(self, batch: np.ndarray, output: dict) -> dict[str, np.ndarray]:
        """{"heads": [batch, layers, heads, tt, ts]} of the best hypotheses (a Transformer;
        teacher forced on what the search chose, which equals what its steps computed)."""
        if self._heads is None:
            ids = tf.TensorSpec([None, None], tf.int32)
            self._heads = tf.function(self.model.attention_heads, input_signature=[ids, ids],
                                      autograph=False)
        tokens = output["tokens"][:, 0]  # [batch, tt]
        target_in = np.concatenate([np.full_like(tokens[:, :1], BOS_ID), tokens[:, :-1]], 1)
        return {"heads": self._heads(tf.constant(batch), tf.constant(target_in)).numpy()}

    def encode_sources(self, texts: Sequence[str],
                       first_index: int = 0) -> tuple[list[list[int]], list[bool]]:
        """Source ids with EOS, truncated to MAX_SOURCE_TOKENS (flagged and logged)."""
        if not texts:
            return [], []
        ids, truncated = [], []
        for index, row in enumerate(self.source_tokenizer.ids_of(texts)):
            cut = len(row) > MAX_SOURCE_TOKENS - 1
            if cut:
                logger.warning("sentence %d has %d subword tokens; translating only the first "
                               "%d", first_index + index + 1, len(row), MAX_SOURCE_TOKENS - 1)
            ids.append(row[:MAX_SOURCE_TOKENS - 1] + [EOS_ID])
            truncated.append(cut)
        return ids, truncated

    def teacher_forcing_batch(self, sources: Sequence[str],
                              targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Parallel sentences as the model's training input: padded source ids with EOS
        [batch, ts] and padded target ids after BOS [batch, tt] (int32, PAD_ID = 0)."""
        source_ids, _ = self.encode_sources(sources)
        target_ids = [[BOS_ID, *row] for row in self.target_tokenizer.ids_of(targets)]
        return padded(source_ids), padded(target_ids)

    def _batch_strings(self, batch: np.ndarray, output: dict, n_best: int) -> dict:
        """Translations [batch][n_best] and source and target pieces [batch][len] of a whole
        batch (sentencepiece in Python: `SubwordTokenizer.texts_of`)."""
        tokens = output["tokens"]  # [batch, beam, tt]
        rows, _, time = tokens.shape
        texts = self.target_tokenizer.texts_of(tokens[:, :n_best].reshape(-1, time))
        return {
            "texts": [texts[row * n_best:(row + 1) * n_best] for row in range(rows)],
            "source": self.source_tokenizer.pieces_of(batch),
            "target": self.target_tokenizer.pieces_of(tokens[:, 0]),
        }

    def _translation(self, text, source_length, output, strings, row, truncated) -> Translation:
        if is_blank(text):  # an empty line (or one of NULs, zero-width spaces) stays empty
            return Translation(text, "", [], [], np.zeros((0, 0)), 0.0, 0.0, truncated)
        length = int(output["lengths"][row, 0])
        texts, scores = strings["texts"][row], output["scores"][row]
        heads = output.get("heads")
        return Translation(text, texts[0], strings["source"][row][:source_length],
                           strings["target"][row][:length],
                           output["weights"][row, 0, :length, :source_length],
                           float(scores[0]), float(output["log_probs"][row, 0]), truncated,
                           [(t, float(s)) for t, s in zip(texts, scores, strict=False)],
                           None if heads is None else heads[row, :, :, :length, :source_length])

    def pieces(self, ids: Sequence[int], target: bool = False) -> list[str]:
        """The pieces of source ids (or target ids with `target`)."""
        tokenizer = self.target_tokenizer if target else self.source_tokenizer
        return tokenizer.pieces_of([ids])[0]


def inference_model(config: Config, weights: Path, dtype: str) -> TranslationModel:
    """The model of `config` in `dtype` ("float32" or "bfloat16") with the `weights` file
    loaded and its translation tables made (`TranslationModel.prepare_for_translation`)."""
    model = precision.build_inference_model(config.model, dtype)
    try:
        model.load_weights(weights)
    except (ValueError, OSError) as error:
        raise CheckpointError(f"cannot load weights {weights}: {error}") from error
    model.prepare_for_translation()
    return model


def converted_model(model: TranslationModel, dtype: str) -> TranslationModel:
    """A copy of `model` in `dtype`, its weights cast from `model`'s in memory (the file was
    read and checked once, at load) and its translation tables made."""
    copy = precision.build_inference_model(model.config, dtype)
    copy.set_weights(model.get_weights())
    copy.prepare_for_translation()
    return copy


def padded(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Token-id rows of different lengths -> [batch, longest] int32, PAD_ID after each row."""
    return keras.utils.pad_sequences(rows, padding="post", value=PAD_ID, dtype="int32")
