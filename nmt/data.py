"""Corpus access: the built-in corpus registry, download + checksum, local folders, parallel text.

Pure Python (no TensorFlow), so the CLIs, tests and benchmarks can read corpora cheaply.
Every problem with the data itself (missing file, wrong checksum, undecodable bytes,
misaligned files) raises `nmt.errors.DataError` with a message meant for the person
running the tool.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nmt.errors import DataError
from nmt.files import atomic_path

logger = logging.getLogger(__name__)

# First retry waits this long, then 2x, 4x, ... (tests set it near zero).
RETRY_DELAY_SECONDS = 1.0
DOWNLOAD_TIMEOUT_SECONDS = 60.0
CHUNK_BYTES = 64 * 1024
# Set to "1" to draw the download progress bar even when stderr is not a terminal.
FORCE_PROGRESS_ENV = "NMT_PROGRESS"

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus lives and which files make it up.

    Attributes:
        name: registry key, also the sub-folder of the download cache.
        url_pattern: download address with a `{filename}` placeholder.
        languages: language codes the corpus has, e.g. `("en", "de")`.
        splits: split name -> language -> file name (`<split>.<lang>.gz`).
        sha256: file name -> pinned SHA-256 hex digest, or None when no checksum is known.
        aliases: alternative split names -> canonical split name.
        archive: the one file that holds every split (Tatoeba's zip, split by
            `nmt.tatoeba`), or None when each split and language is a file of its own.
    """

    name: str
    url_pattern: str
    languages: tuple[str, ...]
    splits: dict[str, dict[str, str]]
    sha256: dict[str, str | None]
    aliases: dict[str, str]
    archive: str | None = None

    def url(self, filename: str) -> str:
        """Return the download address of one file of this corpus."""
        return self.url_pattern.format(filename=filename)

    def resolve_split(self, split: str) -> str:
        """Map an alias (e.g. `valid`) to its canonical split name; DataError if unknown."""
        canonical = self.aliases.get(split, split)
        if canonical not in self.splits:
            choices = ", ".join([*self.splits, *self.aliases])
            raise DataError(
                f"unknown split '{split}' for corpus '{self.name}'; expected one of: {choices}"
            )
        return canonical

    def filename(self, split: str, lang: str) -> str:
        """Return the file name holding language `lang` of `split`; DataError if there is none."""
        canonical = self.resolve_split(split)
        if lang not in self.languages:
            raise DataError(
                f"unknown language '{lang}' for corpus '{self.name}'; "
                f"expected one of: {', '.join(self.languages)}"
            )
        files = self.splits[canonical]
        if lang not in files:
            raise DataError(
                f"split '{canonical}' of corpus '{self.name}' has no '{lang}' file; "
                f"languages in this split: {', '.join(files)}"
            )
        return files[lang]


# In `sha256sum` format, copied from a verified mirror of the upstream raw files.
_MULTI30K_SHA256SUMS = """\
d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f  train.en.gz
726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6  train.de.gz
622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c  train.fr.gz
a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077  train.cs.gz
14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28  val.en.gz
f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a  val.de.gz
ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9  val.fr.gz
b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc  val.cs.gz
611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9  test_2016_flickr.en.gz
9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8  test_2016_flickr.de.gz
6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90  test_2016_flickr.fr.gz
200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1  test_2016_flickr.cs.gz
"""


def _parse_sha256sums(text: str) -> dict[str, str]:
    """Parse `sha256sum` output (`<hex>  <filename>` per line) into filename -> hex digest."""
    pairs = (line.split() for line in text.splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def _multi30k_spec() -> CorpusSpec:
    """Build the Multi30k task-1 spec (raw files of github.com/multi30k/dataset)."""
    split_languages = {
        "train": ("en", "de", "fr", "cs"),
        "val": ("en", "de", "fr", "cs"),
        "test_2016_flickr": ("en", "de", "fr", "cs"),
        "test_2017_flickr": ("en", "de", "fr"),
        "test_2017_mscoco": ("en", "de", "fr"),
        "test_2018_flickr": ("en", "de", "fr", "cs"),
    }
    splits = {
        split: {lang: f"{split}.{lang}.gz" for lang in langs}
        for split, langs in split_languages.items()
    }
    # The later test sets have no known checksum yet: they map to None.
    pinned = _parse_sha256sums(_MULTI30K_SHA256SUMS)
    sha256 = {name: pinned.get(name) for files in splits.values() for name in files.values()}
    return CorpusSpec(
        name="multi30k",
        url_pattern=(
            "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{filename}"
        ),
        languages=("en", "de", "fr", "cs"),
        splits=splits,
        sha256=sha256,
        aliases={"valid": "val", "test": "test_2016_flickr"},
    )


# The 2018-05-13 ManyThings.org file, kept at a commit-addressed (immutable) address.
_TATOEBA_URL = ("https://raw.githubusercontent.com/rioyshky/translation/"
                "de48b7027f7318d77010a6e08ed928c10748c23d/{filename}")
_TATOEBA_ZIP = "deu-eng.zip"
_TATOEBA_SHA256 = "b7688f84f99fa33c17397c14d8bd9cef1fdeb2ee0bf50074767023aee8926e28"


def _tatoeba_spec() -> CorpusSpec:
    """Tatoeba German-English: one zip, split into train/dev/test by `nmt.tatoeba`."""
    splits = {split: {"en": _TATOEBA_ZIP, "de": _TATOEBA_ZIP} for split in ("train", "dev", "test")}
    return CorpusSpec(
        name="tatoeba",
        url_pattern=_TATOEBA_URL,
        languages=("en", "de"),
        splits=splits,
        sha256={_TATOEBA_ZIP: _TATOEBA_SHA256},
        aliases={"valid": "dev", "val": "dev"},
        archive=_TATOEBA_ZIP,
    )


CORPORA: dict[str, CorpusSpec] = {"multi30k": _multi30k_spec(), "tatoeba": _tatoeba_spec()}


def corpus_names(corpus: str | list[str]) -> list[str]:
    """The corpora of a `--corpus` value: `"multi30k+tatoeba"` or a list; each one checked."""
    names = corpus.split("+") if isinstance(corpus, str) else list(corpus)
    names = [name.strip() for name in names]
    if not names or any(not name for name in names):
        raise DataError(f"empty corpus name in {corpus!r}; write e.g. multi30k+tatoeba")
    if len(set(names)) != len(names):
        raise DataError(f"corpus {corpus!r} names a corpus twice")
    for name in names:
        get_corpus(name)
    return names


def get_corpus(corpus: str) -> CorpusSpec:
    """Return the registered spec of `corpus`; DataError listing the known corpora if unknown."""
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus '{corpus}'; expected one of: {', '.join(sorted(CORPORA))}")
    return CORPORA[corpus]


def data_dir_for(data_dir: str | list[str] | None, corpus: str,
                 corpora: str | list[str]) -> str | None:
    """The local folder of `corpus` from `--data-dir`: None (download), one plain folder
    (one corpus only), or `NAME=DIR` entries (one per corpus; a list or comma-separated)."""
    if data_dir is None:
        return None
    entries = data_dir if isinstance(data_dir, list) else [data_dir]
    named, plain = {}, []
    for entry in entries:
        for part in entry.split(",") if "=" in entry else [entry]:
            name, sep, folder = part.partition("=")
            if sep and name.strip() in CORPORA:
                named[name.strip()] = folder
            else:
                plain.append(part)
    if plain and (named or len(plain) > 1 or len(corpus_names(corpora)) > 1):
        raise DataError(f"--data-dir {', '.join(plain)}: with several corpora give one "
                        "--data-dir NAME=DIR per corpus, e.g. --data-dir multi30k=DIR1 "
                        "--data-dir tatoeba=DIR2")
    return plain[0] if plain else named.get(corpus)


def sha256_file(path: str | Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_checksum(spec: CorpusSpec, filename: str) -> str | None:
    """Return the pinned checksum of `filename` (None if unpinned); DataError if not in corpus."""
    if filename not in spec.sha256:
        raise DataError(
            f"'{filename}' is not a file of corpus '{spec.name}'; "
            f"expected one of: {', '.join(sorted(spec.sha256))}"
        )
    expected = spec.sha256[filename]
    if expected is None:
        logger.warning("%s/%s has no pinned checksum; using it unverified", spec.name, filename)
    return expected


def _checksum_error(path: Path, expected: str, actual: str) -> DataError:
    """Build the DataError for a file whose SHA-256 is not the pinned one."""
    return DataError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}")


def _fetch_from_data_dir(data_dir: Path, filename: str, expected: str | None) -> Path:
    """Return `data_dir/filename` after checking it exists and matches `expected`."""
    path = data_dir / filename
    if not path.is_file():
        raise DataError(
            f"corpus file not found: {path}; drop --data-dir to download it, "
            "or fix the --data-dir path"
        )
    if expected is not None:
        actual = sha256_file(path)
        if actual != expected:
            raise _checksum_error(path, expected, actual)
    return path


def _progress_enabled(progress: bool) -> bool:
    """Draw the bar when asked and stderr is a terminal, or when forced via NMT_PROGRESS=1."""
    if not progress:
        return False
    return os.environ.get(FORCE_PROGRESS_ENV) == "1" or sys.stderr.isatty()


def _draw_progress(stream: TextIO, label: str, done: int, total: int | None) -> None:
    """Redraw one text progress line: `label [#####.....] done/total bytes`."""
    width = 30
    if total:
        filled = min(width, done * width // total)
        bar = "#" * filled + "." * (width - filled)
        stream.write(f"\r{label} [{bar}] {done}/{total} bytes")
    else:
        stream.write(f"\r{label} {done} bytes")
    stream.flush()


def _download_once(url: str, destination: Path, progress: bool) -> str:
    """Stream `url` into `destination`; return the SHA-256 of the bytes written.

    Raises urllib/http/OS errors unchanged so the caller can decide to retry.
    """
    digest = hashlib.sha256()
    show = _progress_enabled(progress)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        with open(destination, "wb") as out:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if show:
                    _draw_progress(sys.stderr, destination.name, done, total)
        if total is not None and done != total:
            raise http.client.IncompleteRead(b"", total - done)
    if show:
        sys.stderr.write("\n")
    return digest.hexdigest()


def _is_retryable(error: Exception) -> bool:
    """Network failures and HTTP 5xx are worth retrying; other HTTP errors (404, 403) are not."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500
    return True


def _download_with_retries(url: str, destination: Path, retries: int, progress: bool) -> str:
    """Download `url` to `destination`, retrying with exponential backoff; return its SHA-256."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _download_once(url, destination, progress)
        except (OSError, http.client.HTTPException) as error:
            # URLError and HTTPError are OSError subclasses.
            if not _is_retryable(error) or attempt > retries:
                raise DataError(
                    f"could not download {url} after {attempt} attempt(s): {error}; "
                    "check your connection or use --data-dir with a local copy"
                ) from error
            delay = RETRY_DELAY_SECONDS * 2 ** (attempt - 1)
            logger.warning(
                "download of %s failed (%s); retry %d/%d in %.2fs",
                url,
                error,
                attempt,
                retries,
                delay,
            )
            time.sleep(delay)


def _download_to_cache(
    url: str, target: Path, expected: str | None, retries: int, progress: bool
) -> Path:
    """Download into a temp file next to `target`; rename it into place only if verified."""
    with atomic_path(target, suffix=".part") as temp_path:
        logger.info("downloading %s to %s", url, target)
        actual = _download_with_retries(url, temp_path, retries, progress)
        if expected is not None and actual != expected:
            raise _checksum_error(target, expected, actual)
    return target


def fetch_corpus_file(
    corpus: str,
    filename: str,
    cache_dir: str | Path = "data",
    data_dir: str | Path | None = None,
    retries: int = 3,
    progress: bool = True,
    base_url: str | None = None,
) -> Path:
    """Return a local, checksum-verified path to one file of a registered corpus.

    Args:
        corpus: registry key, e.g. "multi30k".
        filename: file of that corpus, e.g. "train.de.gz".
        cache_dir: download cache; the file lands in `cache_dir/<corpus>/<filename>`.
        data_dir: local folder holding the corpus files; when given, nothing is downloaded.
        retries: extra download attempts after network errors or HTTP 5xx.
        progress: draw a progress bar on stderr (only if stderr is a terminal or
            NMT_PROGRESS=1).
        base_url: download from `base_url/<filename>` instead of the corpus' address.

    Returns:
        The path of the verified file.

    Raises:
        DataError: unknown corpus or file, missing local file, download failure,
            or a checksum mismatch.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0; received retries={retries}")
    spec = get_corpus(corpus)
    expected = _expected_checksum(spec, filename)
    if data_dir is not None:
        return _fetch_from_data_dir(Path(data_dir), filename, expected)

    target = Path(cache_dir) / spec.name / filename
    if target.is_file():
        if expected is None or sha256_file(target) == expected:
            logger.info("using cached %s", target)
            return target
        logger.warning("cached %s does not match its checksum; downloading it again", target)
    url = f"{base_url.rstrip('/')}/{filename}" if base_url else spec.url(filename)
    return _download_to_cache(url, target, expected, retries, progress)


def _read_bytes(path: Path) -> bytes:
    """Return a file's (decompressed) bytes; gzip is detected by `.gz` or by magic bytes."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataError(f"corpus file not found: {path}") from None
    except OSError as error:
        raise DataError(f"cannot read corpus file {path}: {error.strerror}") from error
    if path.name.endswith(".gz") or raw.startswith(_GZIP_MAGIC):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path} is not a valid gzip file: {error}") from error
    return raw


def read_lines(path: str | Path) -> list[str]:
    """Read one text file as strict UTF-8 lines, dropping only the newline (and a `\\r`).

    Raises:
        DataError: missing/unreadable file, bad gzip, or bytes that are not UTF-8
            (naming the 1-based line number).
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path}: line {line_number} is not valid UTF-8 ({error.reason})") from None
    if not text:
        return []
    # split("\n"), not splitlines(): sentences may contain \x0b, \x1c or U+2028.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    """Read two line-aligned text files (plain or gzip) into source and target sentence lists.

    Returns:
        (source lines, target lines), equally long and non-empty.

    Raises:
        DataError: a missing, undecodable or empty file, or different line counts.
    """
    src_lines = read_lines(src_path)
    tgt_lines = read_lines(tgt_path)
    for path, lines in ((src_path, src_lines), (tgt_path, tgt_lines)):
        if not lines:
            raise DataError(f"corpus file {path} is empty (0 lines)")
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"parallel files differ in length: {src_path} has {len(src_lines)} lines "
            f"but {tgt_path} has {len(tgt_lines)} lines"
        )
    return src_lines, tgt_lines


def load_split(
    corpus: str,
    split: str,
    src: str,
    tgt: str,
    cache_dir: str | Path = "data",
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[list[str], list[str]]:
    """Fetch and read the `src`/`tgt` files of one split of a registered corpus.

    Args:
        corpus: registry key, e.g. "multi30k".
        split: split name or alias, e.g. "train", "valid", "test_2017_flickr".
        src: source language code, e.g. "de".
        tgt: target language code, e.g. "en".
        cache_dir, data_dir, progress: as in `fetch_corpus_file`.

    Returns:
        (source sentences, target sentences), line-aligned.
    """
    spec = get_corpus(corpus)
    if src == tgt:
        raise DataError(f"source and target language are both '{src}'; choose two languages")
    src_name = spec.filename(split, src)
    tgt_name = spec.filename(split, tgt)
    if spec.archive is not None:
        from nmt import tatoeba

        path = fetch_corpus_file(corpus, spec.archive, cache_dir=cache_dir, data_dir=data_dir,
                                 progress=progress)
        return tatoeba.load_split(path, spec.resolve_split(split), src, tgt)
    paths = [
        fetch_corpus_file(corpus, name, cache_dir=cache_dir, data_dir=data_dir, progress=progress)
        for name in (src_name, tgt_name)
    ]
    return read_parallel(paths[0], paths[1])


def drop_empty_pairs(
    src_lines: list[str], tgt_lines: list[str]
) -> tuple[list[str], list[str], int]:
    """Remove pairs where either side is empty or whitespace only.

    Returns:
        (kept source lines, kept target lines, number of pairs removed).
    """
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"cannot pair {len(src_lines)} source lines with {len(tgt_lines)} target lines"
        )
    kept = [(s, t) for s, t in zip(src_lines, tgt_lines, strict=True) if s.strip() and t.strip()]
    removed = len(src_lines) - len(kept)
    logger.info("dropped %d of %d pairs with an empty side", removed, len(src_lines))
    return [s for s, _ in kept], [t for _, t in kept], removed
