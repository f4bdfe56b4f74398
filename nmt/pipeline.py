"""tf.data input pipeline: tokenise once (or, with subword sampling, on every pass), bucket
by length, token-budget batches.

Every batch is padded to its bucket's boundary, so the training step sees only a handful
of distinct shapes (XLA compiles once per shape) while padding stays small.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, SubwordTokenizer

logger = logging.getLogger(__name__)


@dataclass
class TokenizedCorpus:
    """Subword ids of a parallel corpus; sources end in EOS, targets are BOS ... EOS."""

    source: tf.RaggedTensor  # [pairs, (ts)]
    target: tf.RaggedTensor  # [pairs, (tt + 1)]
    dropped: int = 0  # pairs removed for being longer than max_length

    @property
    def lengths(self) -> np.ndarray:
        """Padded length each pair needs: max(source length, target length - 1)."""
        return np.maximum(self.source.row_lengths().numpy(), self.target.row_lengths().numpy() - 1)

    def __len__(self) -> int:
        return int(self.source.nrows())


def tokenize_corpus(source_lines: list[str], target_lines: list[str],
                    source_tokenizer: SubwordTokenizer, target_tokenizer: SubwordTokenizer,
                    max_length: int | None = None, batch_size: int = 4096) -> TokenizedCorpus:
    """Tokenise both sides once (in large batches) and drop pairs over `max_length` tokens."""
    source = _tokenize_in_batches(source_lines, source_tokenizer, batch_size)
    target = _tokenize_in_batches(target_lines, target_tokenizer, batch_size)
    corpus = TokenizedCorpus(*_framed(source, target))
    if max_length is None:
        return corpus
    keep = corpus.lengths <= max_length
    dropped = int((~keep).sum())
    if dropped:
        logger.info("dropped %d of %d pairs longer than %d tokens", dropped, len(keep), max_length)
    return TokenizedCorpus(tf.ragged.boolean_mask(corpus.source, keep),
                           tf.ragged.boolean_mask(corpus.target, keep), dropped)


def _framed(source: tf.RaggedTensor, target: tf.RaggedTensor
            ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Subword ids [pairs, (len)] of both sides -> sources ending in EOS, targets BOS ... EOS."""
    eos = tf.fill([source.nrows(), 1], EOS_ID)
    bos = tf.fill([target.nrows(), 1], BOS_ID)
    return tf.concat([source, eos], axis=1), tf.concat([bos, target, eos], axis=1)


def _tokenize_in_batches(lines: list[str], tokenizer: SubwordTokenizer,
                         batch_size: int) -> tf.RaggedTensor:
    parts = [tokenizer.tokenize(tf.constant(lines[start:start + batch_size], dtype=tf.string))
             for start in range(0, len(lines), batch_size)]
    if not parts:
        return tf.ragged.constant([], dtype=tf.int32, ragged_rank=1)
    return tf.concat(parts, axis=0)


@dataclass
class Buckets:
    """Bucket boundaries (padded lengths) and the batch size of each bucket."""

    lengths: list[int]  # padded length of each bucket
    batch_sizes: list[int]

    @classmethod
    def from_budget(cls, boundaries: list[int], max_length: int, batch_tokens: int) -> Buckets:
        """Padded lengths from `boundaries` (capped at max_length); batch = tokens / length."""
        lengths = sorted({min(b, max_length) for b in boundaries} | {max_length})
        return cls(lengths, [max(1, batch_tokens // length) for length in lengths])

    def index(self, lengths: np.ndarray) -> np.ndarray:
        """Bucket index of each padded-length requirement."""
        return np.searchsorted(np.asarray(self.lengths), lengths, side="left")

    def padding_fraction(self, lengths_source: np.ndarray, lengths_target: np.ndarray) -> float:
        """Share of padding among all source and target positions fed to the model."""
        padded = np.asarray(self.lengths)[self.index(np.maximum(lengths_source, lengths_target))]
        real = lengths_source.sum() + lengths_target.sum()
        return float(1.0 - real / max(1, 2 * padded.sum()))

    def batches_per_epoch(self, lengths: np.ndarray, drop_remainder: bool) -> int:
        counts = np.bincount(self.index(lengths), minlength=len(self.lengths))
        sizes = np.asarray(self.batch_sizes)
        full = counts // sizes
        return int(full.sum() if drop_remainder else (full + (counts % sizes > 0)).sum())


def make_dataset(corpus: TokenizedCorpus, buckets: Buckets, shuffle: bool, seed: int = 0,
                 drop_remainder: bool | None = None, epoch: int = 0) -> tf.data.Dataset:
    """One pass of batches `((source, target_in), target_out)` of shape [batch_size(b), length(b)].

    Shuffled and with full batches only when `shuffle` (training), so the step function sees
    exactly one shape per bucket; in order with partial batches otherwise. A shuffled pass is
    in `epoch_order(len(corpus), seed, epoch)`: the same for the same seed and epoch whatever
    TensorFlow's global seed is. Training reads `training_stream`, one such pass per epoch.
    """
    drop_remainder = shuffle if drop_remainder is None else drop_remainder
    lengths = _check_fits(corpus, buckets)
    if shuffle:
        one_pass = _shuffled_pass(corpus, buckets, seed, drop_remainder)
        dataset = one_pass(tf.constant(epoch, tf.int64))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((
            corpus.source.to_tensor(), corpus.source.row_lengths(),
            corpus.target.to_tensor(), corpus.target.row_lengths()))
        dataset = _bucketed(dataset.map(_unpadded).cache(), buckets, drop_remainder)
    steps = buckets.batches_per_epoch(lengths, drop_remainder)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def training_stream(corpus: TokenizedCorpus, buckets: Buckets, seed: int,
                    first_epoch: int = 0) -> tf.data.Dataset:
    """Endless training batches: the shuffled passes `make_dataset(shuffle=True, epoch=k)` for
    k = first_epoch, first_epoch + 1, ... one after the other, so a run resumed at epoch k
    reads exactly the batches an uninterrupted run reads from epoch k on."""
    _check_fits(corpus, buckets)
    one_pass = _shuffled_pass(corpus, buckets, seed, drop_remainder=True)
    return tf.data.Dataset.counter(first_epoch).flat_map(one_pass).prefetch(tf.data.AUTOTUNE)


def _check_fits(corpus: TokenizedCorpus, buckets: Buckets) -> np.ndarray:
    """The padded length of every pair [pairs]; ValueError if one is over every bucket."""
    lengths = corpus.lengths
    if len(lengths) and lengths.max() > buckets.lengths[-1]:
        raise ValueError(f"corpus has pairs of {lengths.max()} tokens, longer than the largest "
                         f"bucket ({buckets.lengths[-1]}); tokenize with max_length")
    return lengths


def epoch_order(size: int, seed: int, epoch: int | tf.Tensor) -> tf.Tensor:
    """The indices 0 .. size - 1 [size] in the order of pass `epoch`: a stateless shuffle
    keyed by (seed, epoch), independent of TensorFlow's global seed and of earlier passes."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), seed=key)


def _shuffled_pass(corpus: TokenizedCorpus, buckets: Buckets, seed: int, drop_remainder: bool):
    """A function: epoch (int64 scalar) -> that epoch's shuffled pass over `corpus`, batched."""
    source_ids, source_starts = corpus.source.values, corpus.source.row_splits
    target_ids, target_starts = corpus.target.values, corpus.target.row_splits
    size = len(corpus)

    def pair(index):
        source = source_ids[source_starts[index]:source_starts[index + 1]]
        target = target_ids[target_starts[index]:target_starts[index + 1]]
        return source, target[:-1], target[1:]

    def one_pass(epoch):
        order = tf.data.Dataset.from_tensor_slices(epoch_order(size, seed, epoch))
        return _bucketed(order.map(pair, num_parallel_calls=tf.data.AUTOTUNE), buckets,
                         drop_remainder)

    return one_pass


def make_sampled_dataset(source_lines: list[str], target_lines: list[str],
                         source_tokenizer: SubwordTokenizer, target_tokenizer: SubwordTokenizer,
                         buckets: Buckets, alpha: float, max_length: int,
                         seed: int = 0, first_epoch: int = 0) -> tf.data.Dataset:
    """Training batches like `training_stream`, but every pass over the corpus cuts each
    sentence anew with `SubwordTokenizer.sampler(alpha)` (subword regularisation).

    Endless: pass k (from `first_epoch`) reads the corpus in `epoch_order(size, seed, k)` and
    re-cuts it; since the cuts change the lengths, the number of batches per pass varies, and
    the caller sets the epoch length (Keras's `steps_per_epoch`). Sampled pairs over
    `max_length` tokens are skipped for that pass.
    """
    sample_source = source_tokenizer.sampler(alpha)
    sample_target = target_tokenizer.sampler(alpha)
    sources = tf.constant(source_lines, dtype=tf.string)
    targets = tf.constant(target_lines, dtype=tf.string)

    def one_pass(epoch):
        order = epoch_order(len(source_lines), seed, epoch)
        return tf.data.Dataset.from_tensor_slices((tf.gather(sources, order),
                                                   tf.gather(targets, order)))

    def cut(sources, targets):
        source, target = _framed(sample_source(sources), sample_target(targets))
        return (source.to_tensor(), source.row_lengths(), target.to_tensor(),
                target.row_lengths())

    dataset = tf.data.Dataset.counter(first_epoch).flat_map(one_pass)
    dataset = dataset.batch(1024).map(cut, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.unbatch().map(_unpadded).filter(
        lambda source, target_in, _: tf.maximum(tf.shape(source)[0],
                                                tf.shape(target_in)[0]) <= max_length)
    return _bucketed(dataset, buckets, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _unpadded(source, source_length, target, target_length):
    """One padded pair -> (source, target_in, target_out): target without EOS / BOS."""
    return source[:source_length], target[:target_length - 1], target[1:target_length]


def _bucketed(dataset: tf.data.Dataset, buckets: Buckets,
              drop_remainder: bool) -> tf.data.Dataset:
    """Group `(source, target_in, target_out)` into `((source, target_in), target_out)`
    batches, each padded to its bucket's length with the bucket's batch size."""
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda source, target_in, _: tf.maximum(tf.shape(source)[0],
                                                                    tf.shape(target_in)[0]),
        bucket_boundaries=[length + 1 for length in buckets.lengths],
        bucket_batch_sizes=buckets.batch_sizes + [1],
        padded_shapes=([None], [None], [None]),
        padding_values=(PAD_ID, PAD_ID, PAD_ID),
        pad_to_bucket_boundary=True,
        drop_remainder=drop_remainder,
    )
    return dataset.map(lambda source, target_in, target_out: ((source, target_in), target_out))
