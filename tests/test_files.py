"""nmt.files: a write either replaces the whole file or leaves the old one untouched."""

from __future__ import annotations

import os
import stat

import pytest

from nmt import files
from nmt.files import atomic_path, atomic_write_bytes, atomic_write_text


class Interrupted(Exception):
    pass


def test_atomic_path_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old", encoding="utf-8")
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary != target
        assert temporary.name.startswith(".metrics.json.") and ".tmp" in temporary.name
        temporary.write_text("new", encoding="utf-8")
        assert target.read_text(encoding="utf-8") == "old"  # not replaced before the end
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failure_mid_write_keeps_the_original_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(Interrupted), atomic_path(target) as temporary:
        temporary.write_text("half of the n", encoding="utf-8")
        raise Interrupted
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failure_before_anything_is_written_creates_nothing(tmp_path):
    target = tmp_path / "sub" / "result.json"
    with pytest.raises(Interrupted), atomic_path(target):
        raise Interrupted
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_the_suffix_keeps_the_ending_a_writer_needs(tmp_path):
    target = tmp_path / "best.weights.h5"
    with atomic_path(target, suffix=".weights.h5") as temporary:
        assert temporary.name.endswith(".tmp.weights.h5")
        temporary.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"


def test_text_and_bytes_helpers_write_atomically(tmp_path):
    assert atomic_write_text(tmp_path / "a" / "config.json", "{}\n").read_text() == "{}\n"
    atomic_write_bytes(tmp_path / "b.model", b"\x00\x01")
    assert (tmp_path / "b.model").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.model", "config.json"]


def test_the_file_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        kind = "folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(descriptor)

    def replace(source, destination):
        events.append("rename")
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    atomic_write_text(target, "new")
    assert events == ["fsync file", "rename", "fsync folder"]


def test_written_files_get_the_usual_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        text = atomic_write_text(tmp_path / "config.json", "{}\n")
        with atomic_path(tmp_path / "best.weights.h5", suffix=".weights.h5") as temporary:
            temporary.write_bytes(b"weights")
    finally:
        os.umask(old)
    for path in (text, tmp_path / "best.weights.h5"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
