"""nmt.release: a run directory becomes a shipped model with 16-bit weights that loads back."""

import h5py
import numpy as np
import pytest

from nmt import release
from nmt.errors import CheckpointError
from nmt.translator import Translator


def test_release_halves_the_weights_and_loads_back(tiny_run, tmp_path):
    out = release.release(tiny_run, tmp_path / "shipped" / "tiny")
    assert sorted(p.name for p in out.iterdir()) == sorted([*release.KEEP, release.WEIGHTS])
    full = (tiny_run / release.WEIGHTS).stat().st_size
    assert (out / release.WEIGHTS).stat().st_size < 0.6 * full
    with h5py.File(out / release.WEIGHTS) as stored:
        dtypes = set()
        stored.visititems(lambda name, item: dtypes.add(item.dtype)
                          if isinstance(item, h5py.Dataset) else None)
    assert dtypes == {np.dtype(np.float16)}

    original, shipped = Translator.load(tiny_run), Translator.load(out)
    assert original.config.data.data_dir is not None and shipped.config.data.data_dir is None
    shipped.config.data.data_dir = original.config.data.data_dir  # the only change
    assert shipped.config.to_dict() == original.config.to_dict()
    for a, b in zip(original.model.weights, shipped.model.weights, strict=True):
        assert b.dtype == "float32"  # rebuilt in float32
        np.testing.assert_array_equal(b.numpy(), a.numpy().astype(np.float16).astype(np.float32))
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."]
    assert [t.text for t in shipped.translate(sentences, beam=1)] == \
        [t.text for t in original.translate(sentences, beam=1)]


def test_release_keeps_the_model_card_and_refuses_unfinished_runs(tiny_run, tmp_path):
    out = tmp_path / "tiny"
    release.release(tiny_run, out)
    (out / "README.md").write_text("# card\n", encoding="utf-8")
    release.release(tiny_run, out, half=False)  # a new release replaces the old one
    assert (out / "README.md").read_text(encoding="utf-8") == "# card\n"
    assert (out / release.WEIGHTS).read_bytes() != b""
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(CheckpointError, match="best.weights.h5 missing"):
        release.release(tmp_path / "tiny-missing", tmp_path / "x")
    assert not (tmp_path / "x").exists()
