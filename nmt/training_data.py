"""The data of a training run: text, tokenizers, tokenised corpora and their batches.

`prepare_data` reads the corpora (registry corpora or plain files, `nmt.data`), trains or
reloads the run's sentencepiece models and tokenises everything once; it returns what it
learned (the vocabulary sizes are its tokenizers') and leaves the config alone:
`with_vocab_sizes` makes the run's config of it. `make_batches` cuts the bucketed batches
(`nmt.pipeline`) that `nmt.training.train` feeds to Keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from nmt import data as corpus_data
from nmt.config import Config, DataConfig
from nmt.errors import DataError
from nmt.pipeline import (
    Buckets,
    TokenizedCorpus,
    make_dataset,
    make_sampled_dataset,
    tokenize_corpus,
    training_stream,
)
from nmt.rundir import SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE, record_checksums
from nmt.tokenizer import SubwordTokenizer, train_sentencepiece

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenised training and validation data plus the raw validation text for BLEU."""

    source_tokenizer: SubwordTokenizer
    target_tokenizer: SubwordTokenizer
    train: TokenizedCorpus
    valid: TokenizedCorpus
    valid_sources: list[str]
    valid_references: list[str]
    empty_pairs_dropped: int
    train_sources: list[str] = field(default_factory=list)  # raw text, for subword sampling
    train_targets: list[str] = field(default_factory=list)
    # corpus name -> (sources, references) of its validation set; several with --corpus a+b
    valid_sets: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # corpus name -> its tokenised validation set, for a loss per corpus (several corpora only)
    valid_per_corpus: dict[str, TokenizedCorpus] = field(default_factory=dict)


# Where a process reads the corpus from: each worker of a distributed run keeps its own.
CORPUS_LOCATION = ("data_dir", "cache_dir", "train_src", "train_tgt", "valid_src", "valid_tgt")


def load_text(d: DataConfig) -> tuple[list[str], list[str], dict[str, tuple[list[str], list[str]]],
                                     int]:
    """Training sentences (the union of the corpora, or plain files) and each corpus's
    validation sentences, empty pairs out.

    Returns:
        (train sources, train targets, corpus name -> (valid sources, valid targets),
        number of empty pairs dropped). Plain validation files are named "valid".
    """
    if d.valid_src is None and d.train_src:
        raise DataError("a plain-text training corpus needs --valid-src and --valid-tgt too")
    train_src, train_tgt, valid, empty = [], [], {}, 0
    if d.train_src:
        train_src, train_tgt = corpus_data.read_parallel(d.train_src, d.train_tgt)
        train_src, train_tgt = train_src[:d.train_limit], train_tgt[:d.train_limit]
    else:
        for name in corpus_data.corpus_names(d.corpus):
            folder = corpus_data.data_dir_for(d.data_dir, name, d.corpus)
            src, tgt = corpus_data.load_split(name, "train", d.src, d.tgt, d.cache_dir, folder)
            train_src += src[:d.train_limit]
            train_tgt += tgt[:d.train_limit]
            if d.valid_src is None:
                valid[name] = corpus_data.load_split(name, "valid", d.src, d.tgt, d.cache_dir,
                                                     folder)
    if d.valid_src:
        valid = {"valid": corpus_data.read_parallel(d.valid_src, d.valid_tgt)}
    train_src, train_tgt, empty = corpus_data.drop_empty_pairs(train_src, train_tgt)
    if not train_src:
        raise DataError("the training corpus has no non-empty sentence pairs")
    for name, (src, tgt) in list(valid.items()):
        src, tgt, dropped = corpus_data.drop_empty_pairs(src[:d.valid_limit], tgt[:d.valid_limit])
        if not src:
            raise DataError(f"the validation corpus ({name}) has no non-empty sentence pairs")
        valid[name], empty = (src, tgt), empty + dropped
    return train_src, train_tgt, valid, empty


def prepare_data(config: Config, run_dir: Path, text_from: DataConfig | None = None
                 ) -> PreparedData:
    """Load text, train (or reload) the tokenizers in `run_dir`, tokenise everything once.

    `config` is not changed: the vocabulary sizes the tokenizers learned are in the result
    (`with_vocab_sizes` makes the run's config of them). `text_from`: where the corpus is
    read from (default `config.data`; a worker reads its own files with the chief's settings).
    """
    train_src, train_tgt, valid_text, empty = load_text(text_from or config.data)
    tokenizers = []
    for lines, name, size in ((train_src, SOURCE_TOKENIZER_FILE, config.data.src_vocab_size),
                              (train_tgt, TARGET_TOKENIZER_FILE, config.data.tgt_vocab_size)):
        path = run_dir / name
        if not path.exists():
            train_sentencepiece(lines, path, size, seed=config.train.seed)
            record_checksums(run_dir, [name])
        tokenizers.append(SubwordTokenizer.load(path))
    source_tokenizer, target_tokenizer = tokenizers
    max_length = config.data.max_length
    train = tokenize_corpus(train_src, train_tgt, source_tokenizer, target_tokenizer, max_length)
    valid_src = [line for src, _ in valid_text.values() for line in src]
    valid_tgt = [line for _, tgt in valid_text.values() for line in tgt]
    valid = tokenize_corpus(valid_src, valid_tgt, source_tokenizer, target_tokenizer, max_length)
    if len(train) == 0:
        raise DataError(f"every training pair is longer than data.max_length={max_length} "
                        "subword tokens; raise --max-length")
    per_corpus = {}
    if len(valid_text) > 1:
        per_corpus = {name: tokenize_corpus(src, tgt, source_tokenizer, target_tokenizer,
                                            max_length) for name, (src, tgt) in valid_text.items()}
    return PreparedData(source_tokenizer, target_tokenizer, train, valid, valid_src, valid_tgt,
                        empty, train_src, train_tgt, valid_text, per_corpus)


def with_vocab_sizes(config: Config, data: PreparedData) -> Config:
    """A copy of `config` whose model has the vocabulary sizes of `data`'s tokenizers."""
    model = dataclasses.replace(config.model, src_vocab_size=data.source_tokenizer.vocab_size,
                                tgt_vocab_size=data.target_tokenizer.vocab_size)
    return dataclasses.replace(config, model=model)


@dataclass
class Batches:
    """The batched datasets of a run."""

    buckets: Buckets
    steps: int  # batches per epoch: a pass over the best segmentations, sampled cuts or not
    train_from: Callable[[int], tf.data.Dataset]  # epoch k -> endless batches from epoch k:
    # ((source [batch, ts], target_in [batch, tt]), target_out), the same whatever the
    # global seed, so a resumed run reads what an uninterrupted one would
    valid: tf.data.Dataset
    padding: float  # share of padding tokens in the training batches


def make_batches(config: Config, data: PreparedData) -> Batches:
    """Bucketed training (shuffled, or re-cut by subword sampling) and validation batches."""
    t = config.train
    buckets = Buckets.from_budget(t.bucket_boundaries, config.data.max_length, t.batch_tokens)
    steps = buckets.batches_per_epoch(data.train.lengths, drop_remainder=True)
    if steps == 0:
        raise DataError(f"the training set ({len(data.train)} pairs) gives no full batch of "
                        f"--batch-tokens {t.batch_tokens}; lower it")
    if t.subword_sampling:
        def train_from(epoch: int) -> tf.data.Dataset:
            return make_sampled_dataset(data.train_sources, data.train_targets,
                                        data.source_tokenizer, data.target_tokenizer, buckets,
                                        t.subword_sampling, config.data.max_length, t.seed,
                                        first_epoch=epoch)
        logger.info("subword sampling: every pass re-cuts the training pairs (alpha %g)",
                    t.subword_sampling)
    else:
        def train_from(epoch: int) -> tf.data.Dataset:
            return training_stream(data.train, buckets, t.seed, first_epoch=epoch)
    valid_set = make_dataset(data.valid, buckets, shuffle=False)
    padding = buckets.padding_fraction(data.train.source.row_lengths().numpy(),
                                       data.train.target.row_lengths().numpy() - 1)
    logger.info("%d training pairs (%d too long dropped, %d empty dropped), %d validation "
                "pairs (%d too long for the validation loss; BLEU uses all); %d batches per "
                "epoch, padding %.1f%%", len(data.train), data.train.dropped,
                data.empty_pairs_dropped, len(data.valid), data.valid.dropped, steps,
                100 * padding)
    return Batches(buckets, steps, train_from, valid_set, padding)


def corpus_fingerprint(data: PreparedData) -> bytes:
    """SHA-256 of the tokenised training and validation corpora (ids and row splits)."""
    digest = hashlib.sha256()
    for corpus in (data.train, data.valid):
        for ragged in (corpus.source, corpus.target):
            digest.update(ragged.flat_values.numpy().tobytes())
            digest.update(ragged.row_splits.numpy().tobytes())
    return digest.digest()
