"""Greedy and beam search compiled with XLA, on a few static shapes.

XLA compiles one program per input shape. `CompiledSearch` pads every batch of source ids
to a shape bucket (the source length up to the next of `SOURCE_BUCKETS`, the batch up to the
next power of four, at most the caller's batch size) and gives the search a static number of
steps for that width; each shape is compiled on first use and kept for the translator's
lifetime.
The padding never changes a sentence: padded positions are masked in the encoder and the
attention, added rows finish after one step, and each sentence's own length limit is kept.
Outputs are cut back to the caller's batch, source width and the longest hypothesis, as the
uncompiled search returns them.

A search's first call runs eagerly when it is small (at most `EAGER_HYPOTHESES` rows x beam):
searching one sentence at beam 5 eagerly took 0.2 to 0.35 s, tracing and compiling the
search for it 1.2 to 2.2 s (`bench/bench_translate.py`, 2 cores), so a one-off translation
(`translate.py "..."`) starts faster. Its second call and any larger first call trace and
compile as above.

In bfloat16, a search of `BFLOAT16_GRAPH_HYPOTHESES` or more hypotheses (rows x beam) runs as
the plain graph instead: there oneDNN multiplies in bfloat16 natively, while XLA's CPU dots
are slower than its float32 ones at those sizes. Measured on the shipped caption model, 1,000
test sentences at batch 64, 2 cores: greedy 799 sentences/s in the graph against 555 with
XLA, beam 5 223 against 183 (weights stored in bfloat16, `nmt.precision`). Smaller searches
stay compiled: at one sentence XLA is 1.6x (beam 5) to 1.9x (greedy) faster than the graph.

With `--dtype auto` (`nmt.precision`) a float32 translator hands the searches that would run
as bfloat16 graphs (`BFLOAT16_GRAPH_HYPOTHESES` or more hypotheses, counting the padded
rows) to a bfloat16 copy of its model, made at the first such search: each size runs on
what is fastest for it (one sentence: float32 with XLA; a batch: the bfloat16 graph).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from nmt.decoding import beam_search, greedy_search
from nmt.tokenizer import EOS_ID, PAD_ID

# Source widths (tokens, EOS included) that are compiled; up to MAX_SOURCE_TOKENS (200).
SOURCE_BUCKETS = (12, 16, 24, 32, 48, 64, 96, 128, 200)
# The compiled search holds the attention of every step: [steps, rows x beam, width] floats.
# A larger search (only a --max-length-ratio far above the default asks for one) runs as a
# plain graph that grows with the hypotheses instead.
MAX_COMPILED_ELEMENTS = 2 ** 26
# The most hypotheses (rows x beam) a search's first call decodes eagerly (see above).
EAGER_HYPOTHESES = 16
# From this many hypotheses on, a bfloat16 search runs as the plain graph (see above).
BFLOAT16_GRAPH_HYPOTHESES = 64


def bucket(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `size`; `size` itself when it is beyond the last."""
    index = bisect.bisect_left(buckets, size)
    return buckets[index] if index < len(buckets) else size


def batch_buckets(batch_size: int) -> tuple[int, ...]:
    """Row counts compiled for a caller whose batches hold up to `batch_size` sentences:
    powers of four below it, and `batch_size` itself. Few: a compilation costs more than
    decoding a batch's worth of padding rows."""
    buckets, rows = [], 1
    while rows < batch_size:
        buckets.append(rows)
        rows *= 4
    return (*buckets, batch_size)


def max_lengths(source: np.ndarray, max_length_ratio: float) -> np.ndarray:
    """Each sentence's output limit from its own length: ceil(ratio * length) + 5 [batch]."""
    own_lengths = np.count_nonzero(source != PAD_ID, axis=1)
    return np.ceil(max_length_ratio * own_lengths).astype(np.int32) + 5


class CompiledSearch:
    """Search functions of one model: one traced graph per (beam, length ratio), which XLA
    compiles for each padded shape on first use and keeps.

    Args:
        model: a `nmt.model.TranslationModel`.
        jit_compile: False runs the search as one plain graph for any shape, unpadded (the
            code before XLA; for comparison and for training's validation).
        large_search_model: makes the (bfloat16) model that searches of
            `BFLOAT16_GRAPH_HYPOTHESES` or more hypotheses run on (see above); None: all
            run on `model`.
    """

    def __init__(self, model, jit_compile: bool = True,
                 large_search_model: Callable[[], Any] | None = None):
        self.model, self.jit_compile = model, jit_compile
        self._functions: dict[tuple[int, float, bool], Callable] = {}
        self._called: set[tuple[int, float]] = set()  # (beam, ratio) searched before
        self._lock = threading.Lock()  # translators search two batches at a time
        self._make_large_search_model = large_search_model
        self._large_search: CompiledSearch | None = None  # made on first use

    def __call__(self, source: np.ndarray, beam: int, alpha: float, max_length_ratio: float,
                 batch_size: int, eager: bool | None = None) -> dict[str, np.ndarray]:
        """Decode source ids [batch, ts] (batch <= batch_size). `eager`: search without
        tracing (True) or traced (False); None decides as the module docstring says.

        Returns:
            tokens [batch, beam, tt], weights [batch, beam, tt, ts], scores, log_probs and
            lengths [batch, beam]; tt is the longest hypothesis.
        """
        batch, width = source.shape
        rows = bucket(batch, batch_buckets(max(batch_size, batch)))
        if (self._make_large_search_model is not None
                and rows * beam >= BFLOAT16_GRAPH_HYPOTHESES):
            return self._large_searcher()(source, beam, alpha, max_length_ratio, batch_size,
                                          eager)
        limits = max_lengths(source, max_length_ratio)
        if eager is None:
            eager = ((beam, max_length_ratio) not in self._called
                     and batch * beam <= EAGER_HYPOTHESES)
        self._called.add((beam, max_length_ratio))
        if eager:
            output = _search(self.model, tf.constant(source), tf.constant(limits),
                             tf.constant(alpha, tf.float32), beam, None)
            return _cut(output, beam, batch, width)
        padded_width = bucket(width, SOURCE_BUCKETS)
        steps = math.ceil(max_length_ratio * padded_width) + 5
        compiled = (self.jit_compile and not self._graph_is_faster(rows * beam)
                    and rows * beam * steps * padded_width <= MAX_COMPILED_ELEMENTS)
        if compiled:
            source, limits = _padded(source, limits, rows, padded_width)
        function = self._function(beam, max_length_ratio, compiled)
        output = function(tf.constant(source), tf.constant(limits), tf.constant(alpha, tf.float32))
        return _cut(output, beam, batch, width)

    def _large_searcher(self) -> CompiledSearch:
        """The search over the large-search model (`--dtype auto`), made on first use."""
        with self._lock:
            if self._large_search is None:
                self._large_search = CompiledSearch(self._make_large_search_model(),
                                                    self.jit_compile)
        return self._large_search

    def _graph_is_faster(self, hypotheses: int) -> bool:
        """Whether the plain graph beats XLA for this many hypotheses (see above)."""
        return (self.model.compute_dtype == "bfloat16"
                and hypotheses >= BFLOAT16_GRAPH_HYPOTHESES)

    def _function(self, beam: int, max_length_ratio: float, compiled: bool) -> Callable:
        key = (beam, max_length_ratio, compiled)
        with self._lock:
            return self._functions.get(key) or self._new_function(key)

    def _new_function(self, key: tuple[int, float, bool]) -> Callable:
        beam, max_length_ratio, compiled = key
        model = self.model

        def search(source, limits, alpha):
            # A compile-time constant for XLA, which sees the source's static shape.
            steps = static_steps(source, max_length_ratio) if compiled else None
            return _search(model, source, limits, alpha, beam, steps)

        signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
                     tf.TensorSpec([], tf.float32)]
        # No autograph: the search is written with tf.while_loop already, and converting
        # it and every Keras call inside made tracing take about 4x as long.
        self._functions[key] = tf.function(search, input_signature=signature,
                                           jit_compile=compiled, autograph=False)
        return self._functions[key]


def _search(model, source: tf.Tensor, limits: tf.Tensor, alpha: tf.Tensor, beam: int,
            max_steps: tf.Tensor | None) -> dict[str, tf.Tensor]:
    """Greedy search for `beam` 1, beam search otherwise (`nmt.decoding`)."""
    if beam == 1:
        return greedy_search(model, source, limits, max_steps=max_steps)
    return beam_search(model, source, limits, beam, alpha, max_steps=max_steps)


def static_steps(source: tf.Tensor, max_length_ratio: float) -> tf.Tensor:
    """ceil(ratio * ts) + 5 for source [batch, ts], in float64 as `max_lengths` computes each
    sentence's limit, so that no sentence's limit exceeds it."""
    width = tf.cast(tf.shape(source)[1], tf.float64)
    return tf.cast(tf.math.ceil(tf.constant(max_length_ratio, tf.float64) * width), tf.int32) + 5


def _padded(source: np.ndarray, limits: np.ndarray, rows: int, width: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """`source` [batch, ts] padded to [rows, width] and its `limits` [batch] to [rows]. Added
    rows are empty sentences (EOS) that stop after one step; padded columns are PAD, which
    the encoder and the attention mask."""
    batch = source.shape[0]
    padded = np.full((rows, width), PAD_ID, dtype=np.int32)
    padded[:batch, :source.shape[1]] = source
    padded[batch:, 0] = EOS_ID
    padded_limits = np.ones(rows, dtype=np.int32)
    padded_limits[:batch] = limits
    return padded, padded_limits


def _cut(output: dict[str, tf.Tensor], beam: int, batch: int, width: int
         ) -> dict[str, np.ndarray]:
    """The caller's rows, source width and time steps of a padded search's output, with a
    beam axis [batch, beam, ...] for greedy search too (its log_probs are its scores)."""
    result = {key: value.numpy()[:batch] for key, value in output.items()}
    if beam == 1:
        result = {key: value[:, None] for key, value in result.items()}
        result["log_probs"] = result["scores"]
    steps = int(result["lengths"].max()) if batch else 0
    result["tokens"] = result["tokens"][:, :, :steps]
    result["weights"] = result["weights"][:, :, :steps, :width]
    return result
