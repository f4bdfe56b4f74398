"""Tatoeba German-English (ManyThings.org `deu-eng.zip`): reading, filtering, a fixed split.

The file has no official split and repeats sentences with alternative translations (du / Sie /
ihr forms, synonyms), so a random split would put the same sentence in train and test. Here
every pair is a link between an English and a German sentence (compared after whitespace and
case folding); the connected groups of linked sentences go whole to one side, chosen by the
SHA-256 of the group's smallest folded English sentence. That is the same on every machine,
Python version and line order (no `random`, no set order), and no dev or test sentence
occurs anywhere in train.

Pure Python (no TensorFlow).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from nmt.errors import DataError

logger = logging.getLogger(__name__)

MEMBER = "deu.txt"  # `English<TAB>German` per line, inside the zip
# A group goes to dev if its hash bucket (of HASH_BUCKETS) is below DEV_BUCKETS, to test if
# below DEV_BUCKETS + TEST_BUCKETS: about 1.2 % of the pairs each, i.e. about 2,000.
HASH_BUCKETS = 10_000
DEV_BUCKETS = 120
TEST_BUCKETS = 120
# Pairs whose longer side has this many times the characters of the shorter one (and at
# least MIN_CHARS_FOR_RATIO characters) are not translations of each other.
MAX_LENGTH_RATIO = 3.0
MIN_CHARS_FOR_RATIO = 12
SPLITS = ("train", "dev", "test")


@dataclass
class TatoebaSplits:
    """The three sides of the split as `(english, german)` pair lists, plus filter counts."""

    pairs: dict[str, list[tuple[str, str]]]
    dropped: dict[str, int] = field(default_factory=dict)


def fold(sentence: str) -> str:
    """The form sentences are compared in: whitespace runs collapsed, case folded."""
    return " ".join(sentence.split()).casefold()


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Read `(english, german)` pairs straight from `deu-eng.zip` (or an unzipped `deu.txt`).

    Raises:
        DataError: not a zip with `deu.txt`, bytes that are not UTF-8, or a line that is not
            two tab-separated fields (naming its 1-based number).
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(MEMBER)
        else:
            raw = path.read_bytes()
    except KeyError:
        raise DataError(f"{path} has no '{MEMBER}' inside; is it the Tatoeba deu-eng.zip?"
                        ) from None
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read Tatoeba file {path}: {error}") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 ({error.reason})") from None
    pairs = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}: line {number} is not 'English<TAB>German'")
        pairs.append((fields[0], fields[1]))  # later versions add an attribution column
    if not pairs:
        raise DataError(f"Tatoeba file {path} holds no sentence pairs")
    return pairs


def usable(english: str, german: str) -> str | None:
    """Why a pair is not usable for training or testing (None if it is)."""
    if not english.strip() or not german.strip():
        return "empty side"
    short, long = sorted((len(english.strip()), len(german.strip())))
    if long >= MIN_CHARS_FOR_RATIO and long > MAX_LENGTH_RATIO * short:
        return "length ratio"
    return None


def filter_pairs(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Drop unusable pairs and exact repeats (after folding); return kept pairs and counts."""
    kept, dropped, seen = [], {"empty side": 0, "length ratio": 0, "duplicate": 0}, set()
    for english, german in pairs:
        reason = usable(english, german)
        key = (fold(english), fold(german))
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is not None:
            dropped[reason] += 1
            continue
        seen.add(key)
        kept.append((english, german))
    return kept, dropped


def _groups(pairs: list[tuple[str, str]]) -> list[int]:
    """Union-find over sentences: the group id (index of its root pair) of every pair."""
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_pair: dict[tuple[str, str], int] = {}
    for index, (english, german) in enumerate(pairs):
        for key in (("en", fold(english)), ("de", fold(german))):
            if key in first_pair:
                a, b = root(first_pair[key]), root(index)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_pair[key] = index
    return [root(i) for i in range(len(pairs))]


def _bucket(text: str) -> int:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HASH_BUCKETS


def split_pairs(pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Assign every group of linked pairs to train, dev or test; file order kept.

    A group's side is the hash bucket of its smallest folded English sentence, so it does not
    depend on the order of the lines either.
    """
    groups = _groups(pairs)
    key_of_group: dict[int, str] = {}
    for (english, _), group in zip(pairs, groups, strict=True):
        folded = fold(english)
        if group not in key_of_group or folded < key_of_group[group]:
            key_of_group[group] = folded
    side_of_group = {}
    for group, key in key_of_group.items():
        bucket = _bucket(key)
        side_of_group[group] = ("dev" if bucket < DEV_BUCKETS else
                                "test" if bucket < DEV_BUCKETS + TEST_BUCKETS else "train")
    sides: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for pair, group in zip(pairs, groups, strict=True):
        sides[side_of_group[group]].append(pair)
    return sides


def load_splits(path: str | Path) -> TatoebaSplits:
    """Read, filter and split the Tatoeba file at `path`."""
    kept, dropped = filter_pairs(read_pairs(path))
    splits = split_pairs(kept)
    logger.info("tatoeba: %s pairs; dropped %s", {k: len(v) for k, v in splits.items()}, dropped)
    return TatoebaSplits(splits, dropped)


_CACHE: dict[tuple[str, int, int], TatoebaSplits] = {}


def load_split(path: str | Path, split: str, src: str, tgt: str) -> tuple[list[str], list[str]]:
    """One split as `(source sentences, target sentences)` for languages `src`/`tgt` (en, de).

    The split of a file is computed once per process (it takes a few seconds).
    """
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = load_splits(path)
    pairs = _CACHE[key].pairs[split]
    column = {"en": 0, "de": 1}
    return [p[column[src]] for p in pairs], [p[column[tgt]] for p in pairs]
