"""Tatoeba German-English: the registry entry, reading the zip, filters and the fixed split.

The split tests run on the real file (the mirror beside the repository root): no dev or test
sentence may occur in train, and the split must be the same on every machine.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import zipfile
from pathlib import Path

import pytest

from nmt import data, tatoeba
from nmt.errors import DataError

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tatoeba-deu-eng"
ZIP = MIRROR / "deu-eng.zip"
# SHA-256 over the dev and test pairs ("English\tGerman\n" each, in file order): pinned so
# that a change of the split (hashing, grouping, filters) on any machine fails here.
SPLIT_DIGESTS = {
    "dev": "8477c60620d9629d06f013abc6976505780a926327d195660c3f713de3fbe5e9",  # 1,981 pairs
    "test": "dae0e8c1722afbb16909487fdb0220804e6ca18f15de8f091da0c12dc2870f04",  # 2,003 pairs
}


@pytest.fixture(scope="module")
def splits() -> tatoeba.TatoebaSplits:
    if not ZIP.is_file():
        pytest.fail(f"the Tatoeba mirror is missing at {ZIP}; tests need it")
    return tatoeba.load_splits(ZIP)


def _digest(pairs: list[tuple[str, str]]) -> str:
    text = "".join(f"{english}\t{german}\n" for english, german in pairs)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_registry_entry_pins_the_mirror_checksum() -> None:
    spec = data.get_corpus("tatoeba")
    assert spec.languages == ("en", "de") and spec.archive == "deu-eng.zip"
    expected = (MIRROR / "SHA256SUMS").read_text().split()[0]
    assert spec.sha256 == {"deu-eng.zip": expected} == {"deu-eng.zip": data.sha256_file(ZIP)}
    assert "de48b7027f7318d77010a6e08ed928c10748c23d" in spec.url("deu-eng.zip")
    assert spec.resolve_split("valid") == "dev"


def test_no_dev_or_test_sentence_occurs_in_train(splits) -> None:
    train = splits.pairs["train"]
    english = {tatoeba.fold(e) for e, _ in train}
    german = {tatoeba.fold(g) for _, g in train}
    held_out = {}
    for side in ("dev", "test"):
        pairs = splits.pairs[side]
        assert 1900 <= len(pairs) <= 2100
        assert not [p for p in pairs if tatoeba.fold(p[0]) in english]
        assert not [p for p in pairs if tatoeba.fold(p[1]) in german]
        held_out[side] = ({tatoeba.fold(e) for e, _ in pairs}, {tatoeba.fold(g) for _, g in pairs})
    assert not held_out["dev"][0] & held_out["test"][0]
    assert not held_out["dev"][1] & held_out["test"][1]


def test_every_usable_pair_lands_on_exactly_one_side(splits) -> None:
    kept, dropped = tatoeba.filter_pairs(tatoeba.read_pairs(ZIP))
    assert len(tatoeba.read_pairs(ZIP)) == 169_813
    assert sum(len(p) for p in splits.pairs.values()) == len(kept) == 169_813 - sum(
        dropped.values())
    assert splits.dropped == dropped and dropped["empty side"] == 0
    assert 0 < dropped["duplicate"] < 100 and 0 < dropped["length ratio"] < 100


def test_split_is_pinned(splits) -> None:
    """The same bytes on every machine and Python version: the digests are fixed."""
    for side, digest in SPLIT_DIGESTS.items():
        assert _digest(splits.pairs[side]) == digest, side


def test_split_does_not_depend_on_line_order(splits) -> None:
    kept, _ = tatoeba.filter_pairs(tatoeba.read_pairs(ZIP))
    random.Random(3).shuffle(kept)
    shuffled = tatoeba.split_pairs(kept)
    for side in tatoeba.SPLITS:
        assert sorted(shuffled[side]) == sorted(splits.pairs[side])


def test_alternative_translations_stay_together() -> None:
    # "Geh!" links "Go." and "Leave."; "Verlass mich." links "Leave." on: one group.
    pairs = [("Go.", "Geh!"), ("Leave.", "Geh!"), ("Leave.", "Verlass mich."),
             ("leave. ", "Lass es."), ("Stop.", "Halt!")]
    groups = tatoeba._groups(pairs)
    assert groups[:4] == [0, 0, 0, 0] and groups[4] == 4
    for _ in range(20):  # whatever side the group gets, all four pairs get it
        sides = tatoeba.split_pairs(pairs)
        where = {side for side, members in sides.items() if ("Go.", "Geh!") in members}
        (side,) = where
        assert {("Leave.", "Geh!"), ("Leave.", "Verlass mich."), ("leave. ", "Lass es.")} <= set(
            sides[side])


def test_filters_say_why() -> None:
    pairs = [("Hi.", "Hallo!"), ("Hi.", "  "), ("Hi. ", "hallo!"),
             ("Yes.", "Ja, das habe ich doch schon gesagt, dass ich komme."),
             ("Tom.", "Tom.")]
    kept, dropped = tatoeba.filter_pairs(pairs)
    assert kept == [("Hi.", "Hallo!"), ("Tom.", "Tom.")]
    assert dropped == {"empty side": 1, "length ratio": 1, "duplicate": 1}


def test_load_split_reads_the_zip_through_data_dir(tmp_path: Path) -> None:
    shutil.copy(ZIP, tmp_path / "deu-eng.zip")
    de, en = data.load_split("tatoeba", "test", "de", "en", data_dir=tmp_path)
    en2, de2 = data.load_split("tatoeba", "test", "en", "de", data_dir=tmp_path)
    assert (de, en) == (de2, en2) and len(de) == len(en) > 1900
    assert all(line.strip() for line in de + en)


def test_wrong_zip_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "deu-eng.zip", "w") as archive:
        archive.writestr("deu.txt", "Hi.\tHallo!\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_split("tatoeba", "train", "de", "en", data_dir=tmp_path)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("fra.txt", "Hi.\tSalut !\n")
    with pytest.raises(DataError, match="has no 'deu.txt'"):
        tatoeba.read_pairs(tmp_path / "other.zip")
    (tmp_path / "bad.txt").write_text("Hi.\tHallo!\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not 'English<TAB>German'"):
        tatoeba.read_pairs(tmp_path / "bad.txt")


def test_several_corpora_and_their_folders() -> None:
    assert data.corpus_names("multi30k+tatoeba") == ["multi30k", "tatoeba"]
    assert data.corpus_names(["tatoeba"]) == ["tatoeba"]
    for bad, message in (("multi30k+", "empty corpus name"), ("tatoeba+tatoeba", "twice"),
                         ("multi30k+wmt", "unknown corpus 'wmt'")):
        with pytest.raises(DataError, match=message):
            data.corpus_names(bad)
    both = ["multi30k=/a", "tatoeba=/b"]
    assert data.data_dir_for(both, "tatoeba", "multi30k+tatoeba") == "/b"
    assert data.data_dir_for("multi30k=/a,tatoeba=/b", "multi30k", "multi30k+tatoeba") == "/a"
    assert data.data_dir_for(["multi30k=/a"], "tatoeba", "multi30k+tatoeba") is None
    assert data.data_dir_for("/a", "multi30k", "multi30k") == "/a"
    assert data.data_dir_for(None, "multi30k", "multi30k+tatoeba") is None
    with pytest.raises(DataError, match="NAME=DIR"):
        data.data_dir_for("/a", "multi30k", "multi30k+tatoeba")
