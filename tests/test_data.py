"""Tests for nmt.data: registry, downloader (local HTTP server), local mirror, parallel reading."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmt import data
from nmt.errors import DataError

# The real Multi30k mirror sits next to the repository root (shared/ beside main/).
MIRROR = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "multi30k"

FIXTURE_LINES = ["Ein Hund läuft.", "Zwei Männer.", "Ein Kind spielt."]
FIXTURE_NAME = "train.de.gz"


# ----------------------------------------------------------------------------- helpers


class _FakeServer:
    """A tiny HTTP server on 127.0.0.1 that serves `files` and can fail the first N requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.failures_left = 0
        self.failure_code = 500
        self.requests: list[str] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        """Build a request handler class bound to this server's state."""
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server dispatches on this name
                state.requests.append(self.path)
                name = self.path.lstrip("/")
                if state.failures_left > 0:
                    state.failures_left -= 1
                    self.send_error(state.failure_code)
                    return
                if name not in state.files:
                    self.send_error(404)
                    return
                body = state.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Keep the test output quiet."""

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _gzip_lines(lines: list[str]) -> bytes:
    """Return the gzip bytes of `lines` joined by newlines (with a trailing newline)."""
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))


def _test_spec(checksums: dict[str, str | None]) -> data.CorpusSpec:
    """A one-split corpus named "toy" whose files have the given checksums."""
    return data.CorpusSpec(
        name="toy",
        url_pattern="http://127.0.0.1:9/unused/{filename}",
        languages=("de", "en"),
        splits={"train": {"de": "train.de.gz", "en": "train.en.gz"}},
        sha256=checksums,
        aliases={},
    )


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "RETRY_DELAY_SECONDS", 0.001)


@pytest.fixture
def server() -> Iterator[_FakeServer]:
    fake = _FakeServer()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fixture_bytes(tmp_path: Path) -> bytes:
    """The gzipped fixture, also written to tmp_path so the test owns a real file."""
    payload = _gzip_lines(FIXTURE_LINES)
    (tmp_path / FIXTURE_NAME).write_bytes(payload)
    return payload


def _register_toy(monkeypatch: pytest.MonkeyPatch, checksum: str | None) -> None:
    monkeypatch.setitem(
        data.CORPORA, "toy", _test_spec({FIXTURE_NAME: checksum, "train.en.gz": None})
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != FIXTURE_NAME)


# ----------------------------------------------------------------------------- registry


def test_multi30k_registry_layout() -> None:
    spec = data.CORPORA["multi30k"]
    assert spec.languages == ("en", "de", "fr", "cs")
    assert spec.url("train.en.gz") == (
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/train.en.gz"
    )
    assert spec.filename("valid", "de") == "val.de.gz"
    assert spec.filename("test", "en") == "test_2016_flickr.en.gz"
    assert set(spec.splits["test_2017_mscoco"]) == {"en", "de", "fr"}
    assert set(spec.splits["test_2018_flickr"]) == {"en", "de", "fr", "cs"}
    assert spec.sha256["test_2017_flickr.en.gz"] is None


def test_registry_checksums_match_mirror_sha256sums() -> None:
    spec = data.CORPORA["multi30k"]
    pinned = {
        name: digest
        for digest, name in (
            line.split() for line in (MIRROR / "SHA256SUMS").read_text().splitlines()
        )
    }
    assert len(pinned) == 12
    for name, digest in pinned.items():
        assert spec.sha256[name] == digest


@pytest.mark.parametrize(
    ("corpus", "split", "src", "tgt", "expected_words"),
    [
        ("nope", "train", "de", "en", ["unknown corpus 'nope'", "multi30k"]),
        ("multi30k", "dev", "de", "en", ["unknown split 'dev'", "test_2016_flickr", "valid"]),
        ("multi30k", "train", "xx", "en", ["unknown language 'xx'", "en, de, fr, cs"]),
        ("multi30k", "test_2017_mscoco", "cs", "en", ["has no 'cs' file", "en, de, fr"]),
    ],
)
def test_load_split_rejects_bad_choices(
    tmp_path: Path, corpus: str, split: str, src: str, tgt: str, expected_words: list[str]
) -> None:
    with pytest.raises(DataError) as caught:
        data.load_split(corpus, split, src, tgt, cache_dir=tmp_path, data_dir=tmp_path)
    for word in expected_words:
        assert word in str(caught.value)


# ----------------------------------------------------------------------------- downloader


def test_download_success(
    tmp_path: Path, server: _FakeServer, fixture_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_toy(monkeypatch, hashlib.sha256(fixture_bytes).hexdigest())
    server.files[FIXTURE_NAME] = fixture_bytes
    cache = tmp_path / "cache"

    path = data.fetch_corpus_file("toy", FIXTURE_NAME, cache_dir=cache, base_url=server.base_url)

    assert path == cache / "toy" / FIXTURE_NAME
    assert path.read_bytes() == fixture_bytes
    assert data.read_lines(path) == FIXTURE_LINES
    assert sorted(p.name for p in path.parent.iterdir()) == [FIXTURE_NAME]


def test_cached_file_is_reused_without_network(
    tmp_path: Path, server: _FakeServer, fixture_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_toy(monkeypatch, hashlib.sha256(fixture_bytes).hexdigest())
    server.files[FIXTURE_NAME] = fixture_bytes
    cache = tmp_path / "cache"
    data.fetch_corpus_file("toy", FIXTURE_NAME, cache_dir=cache, base_url=server.base_url)
    data.fetch_corpus_file("toy", FIXTURE_NAME, cache_dir=cache, base_url=server.base_url)
    assert server.requests == [f"/{FIXTURE_NAME}"]


def test_corrupt_cached_file_is_downloaded_again(
    tmp_path: Path, server: _FakeServer, fixture_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_toy(monkeypatch, hashlib.sha256(fixture_bytes).hexdigest())
    server.files[FIXTURE_NAME] = fixture_bytes
    stale = tmp_path / "cache" / "toy" / FIXTURE_NAME
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"truncated")

    path = data.fetch_corpus_file(
        "toy", FIXTURE_NAME, cache_dir=tmp_path / "cache", base_url=server.base_url
    )
    assert path.read_bytes() == fixture_bytes
    assert len(server.requests) == 1


def test_download_checksum_mismatch(
    tmp_path: Path, server: _FakeServer, fixture_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = "0" * 64
    actual = hashlib.sha256(fixture_bytes).hexdigest()
    _register_toy(monkeypatch, expected)
    server.files[FIXTURE_NAME] = fixture_bytes
    cache = tmp_path / "cache"

    with pytest.raises(DataError) as caught:
        data.fetch_corpus_file("toy", FIXTURE_NAME, cache_dir=cache, base_url=server.base_url)

    message = str(caught.value)
    assert expected in message and actual in message and FIXTURE_NAME in message
    assert list((cache / "toy").iterdir()) == []  # neither the final file nor a temp file


def test_download_retries_after_server_error(
    tmp_path: Path, server: _FakeServer, fixture_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_toy(monkeypatch, hashlib.sha256(fixture_bytes).hexdigest())
    server.files[FIXTURE_NAME] = fixture_bytes
    server.failures_left = 1

    path = data.fetch_corpus_file(
        "toy", FIXTURE_NAME, cache_dir=tmp_path / "cache", base_url=server.base_url
    )

    assert len(server.requests) == 2
    assert path.read_bytes() == fixture_bytes
    assert sorted(p.name for p in path.parent.iterdir()) == [FIXTURE_NAME]


def test_download_gives_up_after_retries(
    tmp_path: Path, server: _FakeServer, fixture_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_toy(monkeypatch, hashlib.sha256(fixture_bytes).hexdigest())
    server.files[FIXTURE_NAME] = fixture_bytes
    server.failures_left = 10
    cache = tmp_path / "cache"

    with pytest.raises(DataError, match="after 3 attempt"):
        data.fetch_corpus_file(
            "toy", FIXTURE_NAME, cache_dir=cache, retries=2, base_url=server.base_url
        )
    assert len(server.requests) == 3
    assert list((cache / "toy").iterdir()) == []


def test_download_does_not_retry_404(
    tmp_path: Path, server: _FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_toy(monkeypatch, "0" * 64)
    with pytest.raises(DataError, match="404"):
        data.fetch_corpus_file("toy", FIXTURE_NAME, cache_dir=tmp_path, base_url=server.base_url)
    assert len(server.requests) == 1


def test_unpinned_file_warns(
    tmp_path: Path,
    server: _FakeServer,
    fixture_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _register_toy(monkeypatch, None)
    server.files[FIXTURE_NAME] = fixture_bytes
    with caplog.at_level(logging.WARNING, logger="nmt.data"):
        path = data.fetch_corpus_file(
            "toy", FIXTURE_NAME, cache_dir=tmp_path / "cache", base_url=server.base_url
        )
    assert path.read_bytes() == fixture_bytes
    assert "no pinned checksum" in caplog.text


def test_progress_bar_when_forced(
    tmp_path: Path,
    server: _FakeServer,
    fixture_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register_toy(monkeypatch, hashlib.sha256(fixture_bytes).hexdigest())
    server.files[FIXTURE_NAME] = fixture_bytes
    monkeypatch.setenv(data.FORCE_PROGRESS_ENV, "1")
    data.fetch_corpus_file(
        "toy", FIXTURE_NAME, cache_dir=tmp_path / "cache", base_url=server.base_url
    )
    size = len(fixture_bytes)
    assert f"{size}/{size} bytes" in capsys.readouterr().err


def test_unknown_file_of_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file of corpus 'multi30k'"):
        data.fetch_corpus_file("multi30k", "train.xx.gz", cache_dir=tmp_path, data_dir=tmp_path)


# ----------------------------------------------------------------------------- real mirror


@pytest.mark.parametrize(
    ("split", "expected_pairs"),
    [("train", 29_000), ("val", 1_014), ("valid", 1_014), ("test_2016_flickr", 1_000)],
)
def test_load_split_from_mirror(tmp_path: Path, split: str, expected_pairs: int) -> None:
    src, tgt = data.load_split(
        "multi30k", split, "de", "en", cache_dir=tmp_path, data_dir=MIRROR, progress=False
    )
    assert len(src) == len(tgt) == expected_pairs
    assert list(tmp_path.iterdir()) == []  # data_dir mode never touches the cache


def test_mirror_first_train_line() -> None:
    _, english = data.load_split("multi30k", "train", "de", "en", data_dir=MIRROR)
    assert english[0] == "Two young, White males are outside near many bushes."


def test_corrupted_mirror_copy_fails_checksum(tmp_path: Path) -> None:
    payload = bytearray((MIRROR / "val.en.gz").read_bytes())
    payload[100] ^= 0xFF
    (tmp_path / "val.en.gz").write_bytes(bytes(payload))

    with pytest.raises(DataError) as caught:
        data.fetch_corpus_file("multi30k", "val.en.gz", data_dir=tmp_path)

    message = str(caught.value)
    assert data.CORPORA["multi30k"].sha256["val.en.gz"] in message
    assert data.sha256_file(tmp_path / "val.en.gz") in message


def test_missing_file_in_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        data.fetch_corpus_file("multi30k", "val.en.gz", data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "val.en.gz") in message and "--data-dir" in message


def test_mirror_copied_into_cache_is_used(tmp_path: Path) -> None:
    cached = tmp_path / "multi30k" / "val.de.gz"
    cached.parent.mkdir()
    shutil.copy(MIRROR / "val.de.gz", cached)
    # base_url points nowhere: a download attempt would fail.
    path = data.fetch_corpus_file(
        "multi30k", "val.de.gz", cache_dir=tmp_path, retries=0, base_url="http://127.0.0.1:9"
    )
    assert path == cached


# ----------------------------------------------------------------------------- read_parallel


def test_read_parallel_plain_and_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"eins\r\nzwei  \n\tdrei\n")
    packed = tmp_path / "b.gz"
    packed.write_bytes(gzip.compress(b"one\ntwo  \n\tthree"))  # no trailing newline
    src, tgt = data.read_parallel(plain, packed)
    assert src == ["eins", "zwei  ", "\tdrei"]
    assert tgt == ["one", "two  ", "\tthree"]


def test_read_detects_gzip_by_magic_bytes(tmp_path: Path) -> None:
    hidden = tmp_path / "corpus.txt"
    hidden.write_bytes(gzip.compress("größer\n".encode()))
    assert data.read_lines(hidden) == ["größer"]


def test_read_parallel_missing_file(tmp_path: Path) -> None:
    present = tmp_path / "a.txt"
    present.write_text("x\n", encoding="utf-8")
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="not found") as caught:
        data.read_parallel(present, missing)
    assert str(missing) in str(caught.value)


def test_read_parallel_line_count_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    tgt = tmp_path / "tgt.txt"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    tgt.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        data.read_parallel(src, tgt)
    message = str(caught.value)
    assert "3 lines" in message and "2 lines" in message
    assert str(src) in message and str(tgt) in message


def test_read_parallel_invalid_utf8_names_line(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    bad = tmp_path / "bad.txt"
    good.write_text("a\nb\nc\n", encoding="utf-8")
    bad.write_bytes(b"a\nb\nc \xff\xfe d\n")
    with pytest.raises(DataError) as caught:
        data.read_parallel(good, bad)
    message = str(caught.value)
    assert "line 3" in message and str(bad) in message


def test_read_parallel_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    tgt = tmp_path / "tgt.gz"
    src.write_bytes(b"")
    tgt.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="empty") as caught:
        data.read_parallel(src, tgt)
    assert str(src) in str(caught.value)


def test_read_broken_gzip(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(DataError, match="not a valid gzip"):
        data.read_lines(broken)


def test_drop_empty_pairs(caplog: pytest.LogCaptureFixture) -> None:
    src = ["a", "", "c", "  ", "e"]
    tgt = ["A", "B", "\t", "D", "E"]
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        kept_src, kept_tgt, removed = data.drop_empty_pairs(src, tgt)
    assert (kept_src, kept_tgt, removed) == (["a", "e"], ["A", "E"], 3)
    assert "dropped 3" in caplog.text
