"""Subword vocabularies: sentencepiece training and an in-graph tensorflow-text tokenizer.

Vocabularies are learned from the training sentences with ``sentencepiece`` and applied with
``tensorflow_text.SentencepieceTokenizer`` inside the TensorFlow graph, so an exported model
maps strings to strings with no Python pre- or post-processing. The serialized model proto is
an attribute of the tokenizer's resource op, so it travels inside every SavedModel that holds a
:class:`SubwordTokenizer`.

Normalisation is Unicode NFKC (``normalization_rule_name="nfkc"``) plus sentencepiece's
whitespace clean-up: leading and trailing spaces are removed and runs of spaces become one.
So ``detokenize(tokenize(s))`` equals ``re.sub(" +", " ", unicodedata.normalize("NFKC", s))
.strip(" ")``. Tabs and other characters are kept; characters missing from the vocabulary are
spelled as UTF-8 byte pieces (``byte_fallback``), so nothing becomes ``<unk>``.

Source and target languages get separate vocabularies (the model has separate embeddings), each
of ``DEFAULT_VOCAB_SIZE`` pieces unless configured otherwise.

Why 4,000 pieces for Multi30k. Measured with :func:`train_sentencepiece` (unigram) on the 29,000
training sentences of each language, then tokenising those sentences. Every vocabulary includes
the 4 special and 256 byte pieces; "rare" counts learned pieces used fewer than 5 times:

    ====  ==============  ================================  ===========================
    lang  words/sentence  pieces/sentence at 3k/4k/5k/8k    rare pieces at 3k/4k/5k/8k
    ====  ==============  ================================  ===========================
    de    11.12           16.59 / 15.82 / 15.34 / 14.61     12 / 16 / 279 / 2,616
    en    11.90           15.06 / 14.64 / 14.41 / 14.12     7 / 110 / 821 / 3,955
    fr    12.48           17.66 / 17.12 / 16.82 / 16.39     11 / 170 / 847 / 3,692
    cs     9.05           14.87 / 13.98 / 13.42 / 12.51     9 / 10 / 12 / 1,634
    ====  ==============  ================================  ===========================

At 4k at least 95 % of the learned pieces occur 5 or more times in every language (en 97 %,
fr 95 %), so nearly every embedding and output row gets enough training signal. Beyond 4k the
sentences barely get shorter (en 4k to 8k: -0.5 pieces per sentence) while rare pieces grow
fast (en: 110 to 3,955, half of the 8k vocabulary; English saturates near 8.2k pieces, where
almost every word is one piece). German and Czech would tolerate 5k to 6k: raise
``DataConfig.src_vocab_size`` for them. A small vocabulary also follows the advice
for low-resource NMT (Sennrich & Zhang 2019, "Revisiting Low-Resource Neural Machine
Translation"; Gowda & May 2020, "Finding the Optimal Vocabulary Size for NMT").
"""

from __future__ import annotations

import io
import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import sentencepiece
import tensorflow as tf

from nmt.errors import CheckpointError, DataError
from nmt.files import atomic_write_bytes

if TYPE_CHECKING:
    import tensorflow_text

logger = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
PAD_PIECE = "<pad>"
UNK_PIECE = "<unk>"
BOS_PIECE = "<s>"
EOS_PIECE = "</s>"

DEFAULT_VOCAB_SIZE = 4000
MODEL_TYPES = ("unigram", "bpe", "char", "word")


def train_sentencepiece(
    sentences: Sequence[str],
    path: str | Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed: int = 0,
) -> Path:
    """Learn a sentencepiece model from in-memory sentences and write it atomically.

    Training is deterministic (single thread, no sampling of the input, fixed seed), so the
    same sentences give a byte-identical model file.

    Args:
        sentences: training sentences, one per item.
        path: where to write the ``.model`` file; its folder is created if needed.
        vocab_size: number of pieces, including the 4 special and 256 byte-fallback pieces.
            A soft limit: tiny corpora yield fewer pieces instead of failing.
        model_type: one of ``MODEL_TYPES``.
        character_coverage: fraction of characters covered by the vocabulary; the rest are
            spelled with byte pieces.
        seed: seed of sentencepiece's random generator.

    Returns:
        The path of the written model file.
    """
    _check_training_arguments(sentences, vocab_size, model_type, character_coverage)
    proto = io.BytesIO()
    sentencepiece.set_random_generator_seed(seed)
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=proto,
            **_trainer_options(vocab_size, model_type, character_coverage),
        )
    except RuntimeError as error:  # e.g. fewer pieces than distinct characters
        reason = str(error).split("]")[-1].strip()
        message = f"cannot learn a {vocab_size}-piece vocabulary for {path}: {reason}"
        raise DataError(message) from error
    path = atomic_write_bytes(Path(path), proto.getvalue())
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    logger.info(
        "Learned %d sentencepiece pieces (%s, asked for %d) from %d sentences into %s",
        processor.get_piece_size(), model_type, vocab_size, len(sentences), path,
    )
    return path


def _check_training_arguments(
    sentences: Sequence[str], vocab_size: int, model_type: str, character_coverage: float
) -> None:
    """Raise ValueError, naming expected and received values, for unusable training arguments."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"Expected model_type one of {MODEL_TYPES}. Received: {model_type!r}")
    if vocab_size <= EOS_ID + 1:
        raise ValueError(f"Expected vocab_size > {EOS_ID + 1}. Received: vocab_size={vocab_size}")
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(
            "Expected character_coverage in (0, 1]. "
            f"Received: character_coverage={character_coverage}"
        )
    if not any(sentence.strip() for sentence in sentences):
        raise ValueError("Expected at least one non-empty training sentence. Received none.")


def _trainer_options(vocab_size: int, model_type: str, character_coverage: float) -> dict:
    """Sentencepiece trainer options shared by every vocabulary nmt learns."""
    return {
        "vocab_size": vocab_size,
        "model_type": model_type,
        "character_coverage": character_coverage,
        # Unicode NFKC only; the default "nmt_nfkc" also rewrites control and space characters.
        "normalization_rule_name": "nfkc",
        # Characters outside the vocabulary are spelled as UTF-8 bytes, so they round-trip.
        "byte_fallback": True,
        # Tiny corpora (tests) yield fewer pieces instead of "Vocabulary size too high".
        "hard_vocab_limit": False,
        # Determinism: one thread, every sentence used, no shuffling.
        "num_threads": 1,
        "input_sentence_size": 0,
        "shuffle_input_sentence": False,
        "max_sentence_length": 1 << 16,
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
        "pad_piece": PAD_PIECE,
        "unk_piece": UNK_PIECE,
        "bos_piece": BOS_PIECE,
        "eos_piece": EOS_PIECE,
        "minloglevel": 2,
    }


_OP_NUMBERS = itertools.count()


class SubwordTokenizer(tf.Module):
    """In-graph sentencepiece tokenizer: strings to ids and back, usable in ``tf.function``.

    The model proto lives in the tensorflow-text resource op, so saving a ``tf.Module`` that
    holds this tokenizer exports the vocabulary with it.
    """

    def __init__(self, model_proto: bytes, name: str | None = None) -> None:
        """Wrap a serialized sentencepiece model.

        Args:
            model_proto: contents of a ``.model`` file written by :func:`train_sentencepiece`.
            name: name of the ``tf.Module``.

        Raises:
            ValueError: if ``model_proto`` is not a sentencepiece model with nmt's special ids.
        """
        super().__init__(name=name)
        # The same model in sentencepiece's own processor, for the Python-side methods
        # (`ids_of`, `texts_of`, `pieces_of`); not a TensorFlow object, so never exported.
        self._processor = _checked_processor(model_proto)
        self._vocab_size = self._processor.get_piece_size()
        self._model_proto = bytes(model_proto)
        # A name of its own: loading a SavedModel shares resource ops by name, and every
        # unnamed tokenizer's op has the same one, so a source and a target tokenizer saved
        # together would come back as one vocabulary.
        self._op_name = f"sentencepiece_{next(_OP_NUMBERS)}"
        self._in_graph_tokenizer = None  # made on first use: see `in_graph`

    @property
    def in_graph(self) -> tensorflow_text.SentencepieceTokenizer:
        """tensorflow-text's tokenizer of this model, for `tokenize`, `detokenize` and
        `id_to_piece`. Made on first use, outside any function being traced: a translator
        uses only the Python methods, and a start that needs no tensorflow-text saves its
        import (`nmt.quiet`)."""
        if self._in_graph_tokenizer is None:
            text = _tensorflow_text()
            with tf.init_scope():
                self._in_graph_tokenizer = text.SentencepieceTokenizer(
                    model=self._model_proto, out_type=tf.int32, name=self._op_name)
        return self._in_graph_tokenizer

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        """Read a ``.model`` file written by :func:`train_sentencepiece`.

        Raises:
            CheckpointError: if the file is missing or is not a usable sentencepiece model.
        """
        path = Path(path)
        try:
            model_proto = path.read_bytes()
        except OSError as error:
            raise CheckpointError(
                f"Cannot read sentencepiece model {path}: {error.strerror}"
            ) from error
        try:
            return cls(model_proto)
        except ValueError as error:
            raise CheckpointError(f"Bad sentencepiece model {path}: {error}") from error

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special and byte pieces included; every id is below this."""
        return self._vocab_size

    @property
    def model_proto(self) -> bytes:
        """The serialized sentencepiece model (the contents of its ``.model`` file)."""
        return self._model_proto

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Split a batch of strings into subword ids, without BOS or EOS.

        Args:
            texts: ``[batch]`` tf.string.

        Returns:
            ``[batch, (len)]`` int32 ragged ids.
        """
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        return self.in_graph.tokenize(texts)

    def sampler(self, alpha: float) -> Callable[[tf.Tensor], tf.RaggedTensor]:
        """A ``tokenize`` that draws a new segmentation on every call (subword regularisation,
        Kudo 2018): any segmentation of the unigram lattice, with probability proportional to
        P(segmentation) ** alpha, so a smaller ``alpha`` gives more varied, finer cuts. Made
        once, outside any ``tf.function``; the draws do not follow TensorFlow's seeds.

        Raises:
            ValueError: unless 0 < alpha <= 1.
        """
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Expected a sampling alpha in (0, 1]. Received: alpha={alpha}")
        tokenizer = _tensorflow_text().SentencepieceTokenizer(
            model=self._model_proto, out_type=tf.int32, nbest_size=-1, alpha=alpha,
            name=f"sentencepiece_sampler_{next(_OP_NUMBERS)}")

        def tokenize(texts: tf.Tensor) -> tf.RaggedTensor:
            return tokenizer.tokenize(tf.convert_to_tensor(texts, dtype=tf.string))

        return tokenize

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Join subword ids back into strings.

        Everything from the first EOS on is dropped, as are PAD and BOS ids, so decoder output
        can be passed in directly.

        Args:
            ids: ``[batch, len]`` dense or ``[batch, (len)]`` ragged integer ids.

        Returns:
            ``[batch]`` tf.string.
        """
        return self.in_graph.detokenize(strip_special_ids(ids))

    def id_to_piece(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor | tf.RaggedTensor:
        """Map ids to their pieces (``"▁Mann"``, ``"<0xE4>"``), same shape as ``ids``."""
        if isinstance(ids, tf.RaggedTensor):
            return ids.with_flat_values(self.id_to_piece(ids.flat_values))
        return self.in_graph.id_to_string(tf.cast(ids, tf.int32))

    # Python-side twins of tokenize, detokenize and id_to_piece: the same sentencepiece
    # model in its own processor, with the same results (tests compare them). A translator
    # calls these once per batch: an eager TensorFlow op costs more than the work (on a
    # loaded core the in-graph detokenize of one sentence took 2.8 ms; these three took
    # 0.02 ms for its string and its source and target pieces).
    def ids_of(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids as `tokenize` gives them (no BOS or EOS)."""
        return self._processor.encode(list(texts)) if len(texts) else []

    def texts_of(self, rows: Iterable[Sequence[int]]) -> list[str]:
        """Each row of ids joined into a string as `detokenize` does: everything from the
        first EOS on is dropped, as are PAD and BOS ids. `rows`: lists or an int array
        [batch, len]."""
        rows = [_plain_ids(row) for row in _lists(rows)]
        return self._processor.decode(rows) if rows else []  # decode([]) gives one ""

    def pieces_of(self, rows: Iterable[Sequence[int]]) -> list[list[str]]:
        """Each row of ids as pieces (``"▁Mann"``, ``"<0xE4>"``), as `id_to_piece` gives them."""
        return [self._processor.id_to_piece(row) for row in _lists(rows)]

    def encode(self, text: str) -> list[int]:
        """Ids of one sentence (`ids_of`, for tests and plots)."""
        return self.ids_of([text])[0]

    def pieces(self, text: str) -> list[str]:
        """Pieces of one sentence (`pieces_of`, for tests and plots)."""
        return self.pieces_of([self.encode(text)])[0]


def _tensorflow_text():
    """The tensorflow_text module, imported on first use as quietly as TensorFlow was
    (`nmt.quiet`): its op libraries write to stderr while they load."""
    if "tensorflow_text" not in sys.modules:
        from nmt.quiet import native_stderr_captured

        with native_stderr_captured():
            import tensorflow_text  # noqa: F401
    return sys.modules["tensorflow_text"]


def _lists(rows: Iterable[Sequence[int]]) -> list[list[int]]:
    """Rows of ids as lists of Python ints (from lists or a numpy array [batch, len])."""
    return rows.tolist() if hasattr(rows, "tolist") else [list(map(int, row)) for row in rows]


def _plain_ids(row: list[int]) -> list[int]:
    """`row` up to its first EOS, without PAD and BOS ids (as `strip_special_ids`). Not left
    to sentencepiece's decode, which skips control ids too but then no longer joins the
    byte pieces on either side of one into a character."""
    if EOS_ID in row:
        row = row[:row.index(EOS_ID)]
    return [i for i in row if i != PAD_ID and i != BOS_ID]


def strip_special_ids(ids: tf.Tensor | tf.RaggedTensor) -> tf.RaggedTensor:
    """Cut each row at its first EOS and drop PAD and BOS ids.

    Args:
        ids: ``[batch, len]`` dense or ``[batch, (len)]`` ragged integer ids.

    Returns:
        ``[batch, (len)]`` int32 ragged ids containing no special id but UNK.
    """
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(default_value=PAD_ID)
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    before_eos = tf.math.cumsum(tf.cast(ids == EOS_ID, tf.int32), axis=-1) == 0
    keep = before_eos & (ids != PAD_ID) & (ids != BOS_ID)
    return tf.ragged.boolean_mask(ids, keep)


def _checked_processor(model_proto: bytes) -> sentencepiece.SentencePieceProcessor:
    """A processor of a serialized model, after checking nmt's special ids."""
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model_proto)
    except (RuntimeError, TypeError, OSError) as error:
        raise ValueError(f"not a sentencepiece model proto ({error})") from error
    expected = {PAD_ID: PAD_PIECE, UNK_ID: UNK_PIECE, BOS_ID: BOS_PIECE, EOS_ID: EOS_PIECE}
    received = {i: processor.id_to_piece(i) for i in expected if i < processor.get_piece_size()}
    if received != expected:
        raise ValueError(f"expected special pieces {expected}, received {received}")
    return processor
