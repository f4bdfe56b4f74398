"""Tests for nmt.tokenizer: training, in-graph round trips, export and errors."""

from __future__ import annotations

import gzip
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from nmt import tokenizer
from nmt.errors import CheckpointError
from nmt.tokenizer import SubwordTokenizer

MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "multi30k"
TRAIN_LINES = 29_000
BATCH = 8192


def read_train(language: str) -> list[str]:
    """The Multi30k training sentences of one language, exactly as stored (no stripping)."""
    path = MULTI30K / f"train.{language}.gz"
    if not path.exists():
        pytest.fail(f"Multi30k training data not found at {path}: tests need the corpus mirror")
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as file:
        # split("\n"), not splitlines(): the latter would also split on \x85, \u2028, ...
        lines = file.read().split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def expected_round_trip(text: str) -> str:
    """What the tokenizer gives back: NFKC, then sentencepiece's space clean-up.

    sentencepiece (remove_extra_whitespaces) strips leading/trailing spaces and collapses runs
    of spaces; tabs and every other character are kept.
    """
    return re.sub(" +", " ", unicodedata.normalize("NFKC", text)).strip(" ")


def round_trip(subword: SubwordTokenizer, texts: list[str]) -> list[str]:
    """tokenize -> detokenize through the TF ops, in large batches."""
    outputs = []
    for start in range(0, len(texts), BATCH):
        ids = subword.tokenize(tf.constant(texts[start : start + BATCH]))
        outputs.extend(subword.detokenize(ids).numpy().tolist())
    return [output.decode("utf-8") for output in outputs]


@pytest.fixture(scope="module")
def corpora() -> dict[str, list[str]]:
    return {language: read_train(language) for language in ("de", "en")}


@pytest.fixture(scope="module")
def model_paths(corpora, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("spm")
    return {
        language: tokenizer.train_sentencepiece(
            sentences, folder / f"{language}.model", tokenizer.DEFAULT_VOCAB_SIZE
        )
        for language, sentences in corpora.items()
    }


@pytest.fixture(scope="module")
def tokenizers(model_paths) -> dict[str, SubwordTokenizer]:
    return {language: SubwordTokenizer.load(path) for language, path in model_paths.items()}


@pytest.fixture(scope="module")
def german(tokenizers) -> SubwordTokenizer:
    return tokenizers["de"]


def test_training_data_is_as_expected(corpora):
    assert {language: len(lines) for language, lines in corpora.items()} == {
        "de": TRAIN_LINES,
        "en": TRAIN_LINES,
    }


def test_space_clean_up_affects_known_sentences_only(corpora):
    """Document where the round trip differs from plain NFKC on the real data.

    German has 44 sentences with a no-break space, which NFKC turns into a space next to
    another space, plus 40 with leading/trailing spaces; English has one double space.
    Those sentences come back with single spaces and no edge spaces.
    """
    changed = {
        language: sum(
            expected_round_trip(line) != unicodedata.normalize("NFKC", line) for line in lines
        )
        for language, lines in corpora.items()
    }
    assert changed == {"de": 84, "en": 1}


@pytest.mark.parametrize("language", ["de", "en"])
def test_every_training_sentence_round_trips(language, corpora, tokenizers):
    lines = corpora[language]
    outputs = round_trip(tokenizers[language], lines)
    mismatches = [
        (index, line, output)
        for index, (line, output) in enumerate(zip(lines, outputs, strict=True))
        if output != expected_round_trip(line)
    ]
    assert mismatches == []


@pytest.mark.parametrize("language", ["de", "en"])
def test_training_ids_are_in_range_and_never_unknown(language, corpora, tokenizers):
    subword = tokenizers[language]
    ids = subword.tokenize(tf.constant(corpora[language])).flat_values
    assert subword.vocab_size == tokenizer.DEFAULT_VOCAB_SIZE
    assert int(tf.reduce_min(ids)) > tokenizer.EOS_ID
    assert int(tf.reduce_max(ids)) < subword.vocab_size
    assert not bool(tf.reduce_any(ids == tokenizer.UNK_ID))


@pytest.mark.parametrize(
    "text",
    [
        "Ein Mann fährt Fahrrad.",
        "Zwei Hunde spielen im Schnee, während...",
        "ÄRGER über Öl: Übermäßig große Füße?!",
        '„Hallo“, sagt er. "Ja!" (leise) – «oui»',
        "Er sagt: 'Nein.'",
        "ß→中文 😀",
        "Ǿ\u0301 ŉ ẞ",
        "a\tb",
    ],
)
def test_sentence_round_trips_exactly(text, german):
    assert round_trip(german, [text]) == [unicodedata.normalize("NFKC", text)]


def test_unseen_characters_use_byte_pieces(german):
    pieces = german.pieces("中文 😀")
    assert tokenizer.UNK_ID not in german.encode("中文 😀")
    assert "<0xF0>" in pieces
    assert german.pieces("Ein Mann") == ["▁Ein", "▁Mann"]


def test_special_ids_are_as_declared(german, model_paths):
    ids = tf.constant([tokenizer.PAD_ID, tokenizer.UNK_ID, tokenizer.BOS_ID, tokenizer.EOS_ID])
    assert german.id_to_piece(ids).numpy().tolist() == [b"<pad>", b"<unk>", b"<s>", b"</s>"]
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_paths["de"]))
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (
        0,
        1,
        2,
        3,
    )


def test_id_to_piece_keeps_ragged_shape(german):
    ids = german.tokenize(tf.constant(["Ein Mann", "Hunde spielen im Schnee"]))
    pieces = german.id_to_piece(ids)
    assert pieces.shape.as_list() == ids.shape.as_list()
    assert pieces.row_lengths().numpy().tolist() == ids.row_lengths().numpy().tolist()
    assert pieces[0].numpy().tolist() == [b"\xe2\x96\x81Ein", b"\xe2\x96\x81Mann"]


@pytest.mark.parametrize("jit_compile", [None, False])
def test_works_inside_tf_function(jit_compile, german):
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", ""]

    @tf.function(jit_compile=jit_compile)
    def ids_and_text(batch: tf.Tensor) -> tuple[tf.RaggedTensor, tf.Tensor]:
        ids = german.tokenize(batch)
        return ids, german.detokenize(ids)

    ids, text = ids_and_text(tf.constant(sentences))
    assert ids.dtype == tf.int32
    assert ids.shape[0] == 3 and ids.row_lengths().numpy()[2] == 0
    assert int(tf.reduce_min(ids.flat_values)) >= 0
    assert int(tf.reduce_max(ids.flat_values)) < german.vocab_size
    assert text.numpy().tolist() == [sentence.encode("utf-8") for sentence in sentences]


def test_dense_detokenize_stops_at_eos_and_drops_pad_and_bos(german):
    first = german.encode("Ein Mann fährt Fahrrad.")
    second = german.encode("Ein Hund.")
    junk = german.encode("Katze Vogel")
    rows = [
        [tokenizer.BOS_ID, *first, tokenizer.EOS_ID, *junk],
        [tokenizer.BOS_ID, *second, tokenizer.PAD_ID, tokenizer.EOS_ID, tokenizer.EOS_ID, *junk],
        [tokenizer.EOS_ID, *junk],
    ]
    width = max(len(row) for row in rows)
    dense = tf.constant([row + [tokenizer.PAD_ID] * (width - len(row)) for row in rows], tf.int64)
    expected = [b"Ein Mann f\xc3\xa4hrt Fahrrad.", b"Ein Hund.", b""]
    assert german.detokenize(dense).numpy().tolist() == expected
    ragged = tf.ragged.constant(rows, dtype=tf.int32)
    assert german.detokenize(ragged).numpy().tolist() == expected


ODD_TEXTS = ["Ein Mann fährt Fahrrad.", "", "   ", "  zwei   Leerzeichen  ", "a\tb", "\x00\x00",
             "\u200b", "ß→中文 😀", "Ǿ\u0301 ŉ ẞ", '„Hallo“, sagt er. (leise) – «oui»',
             "Katze\x1fVogel", "\ufeffBOM"]


def test_python_twins_give_the_in_graph_ids(german, corpora):
    texts = corpora["de"][:3000] + ODD_TEXTS
    assert german.ids_of(texts) == german.tokenize(tf.constant(texts)).to_list()
    assert german.ids_of([]) == []


def test_python_twins_give_the_in_graph_strings_and_pieces(german, corpora):
    """texts_of and pieces_of equal detokenize and id_to_piece on model-like output: the
    ids of real and odd sentences (byte pieces included), then EOS, PAD, BOS and junk."""
    ids = german.ids_of(corpora["de"][3000:5000] + ODD_TEXTS)
    rng = np.random.default_rng(0)
    rows = []
    for row in ids:
        junk = rng.integers(0, german.vocab_size, size=int(rng.integers(0, 6))).tolist()
        special = rng.choice([tokenizer.EOS_ID, tokenizer.PAD_ID, tokenizer.BOS_ID])
        rows.append([*row[:3], int(special), *row[3:], tokenizer.EOS_ID, *junk])
    width = max(map(len, rows))
    dense = np.array([row + [tokenizer.PAD_ID] * (width - len(row)) for row in rows], np.int32)
    in_graph = [t.decode("utf-8") for t in german.detokenize(tf.constant(dense)).numpy()]
    assert german.texts_of(dense) == in_graph
    assert german.texts_of(rows) == in_graph
    assert german.texts_of([[tokenizer.BOS_ID, *ids[0], tokenizer.EOS_ID]]) == [corpora["de"][3000]]
    pieces = german.id_to_piece(tf.constant(dense)).numpy()
    assert german.pieces_of(dense) == [[p.decode("utf-8") for p in row] for row in pieces]
    assert german.pieces_of([[]]) == [[]]


def test_load_gives_identical_ids(german, model_paths, corpora):
    reloaded = SubwordTokenizer.load(model_paths["de"])
    sample = tf.constant(corpora["de"][:2000])
    assert reloaded.vocab_size == german.vocab_size
    assert reloaded.tokenize(sample).to_list() == german.tokenize(sample).to_list()
    assert reloaded.model_proto == model_paths["de"].read_bytes()


class _RoundTrip(tf.Module):
    """A minimal string-to-string module, like the exported translator."""

    def __init__(self, subword: SubwordTokenizer) -> None:
        super().__init__()
        self.subword = subword

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self.subword.tokenize(texts)
        return {"ids": ids.to_tensor(default_value=-1), "text": self.subword.detokenize(ids)}


def test_survives_saved_model_export(model_paths, corpora, tmp_path):
    copy = tmp_path / "de.model"
    copy.write_bytes(model_paths["de"].read_bytes())
    module = _RoundTrip(SubwordTokenizer.load(copy))
    texts = tf.constant([*corpora["de"][:200], "ß→中文 😀", ""])
    before = module(texts)
    tf.saved_model.save(module, str(tmp_path / "export"))
    copy.unlink()  # the vocabulary must travel inside the SavedModel

    restored = tf.saved_model.load(str(tmp_path / "export"))
    after = restored(texts)
    assert after["text"].numpy().tolist() == before["text"].numpy().tolist()
    assert after["ids"].numpy().tolist() == before["ids"].numpy().tolist()
    assert after["text"][-2].numpy().decode("utf-8") == "ß→中文 😀"


def test_training_is_deterministic_and_atomic(corpora, model_paths, tmp_path):
    again = tokenizer.train_sentencepiece(
        corpora["de"], tmp_path / "again.model", tokenizer.DEFAULT_VOCAB_SIZE
    )
    assert again.read_bytes() == model_paths["de"].read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["again.model"]


def test_tiny_corpus_gives_smaller_vocabulary(tmp_path):
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."] * 3
    path = tokenizer.train_sentencepiece(sentences, tmp_path / "sub" / "tiny.model", 8000)
    subword = SubwordTokenizer.load(path)
    assert 260 < subword.vocab_size < 8000
    assert round_trip(subword, ["Ein Hund fährt Ski!"]) == ["Ein Hund fährt Ski!"]


def test_missing_model_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "de.model"
    with pytest.raises(CheckpointError, match=re.escape(str(missing))):
        SubwordTokenizer.load(missing)


def test_corrupt_model_file_names_the_file(tmp_path):
    corrupt = tmp_path / "de.model"
    corrupt.write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match=re.escape(str(corrupt))):
        SubwordTokenizer.load(corrupt)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"model_type": "wordpiece"}, "model_type"),
        ({"vocab_size": 3}, "vocab_size"),
        ({"character_coverage": 0.0}, "character_coverage"),
    ],
)
def test_bad_training_arguments_are_rejected(arguments, message, tmp_path):
    options = {"vocab_size": 100, **arguments}
    with pytest.raises(ValueError, match=message):
        tokenizer.train_sentencepiece(["Ein Mann."], tmp_path / "x.model", **options)
    assert not any(tmp_path.iterdir())
