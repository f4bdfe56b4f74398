"""nmt.release: a run directory becomes a shipped model with 16-bit weights that loads back."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from nmt import release
from nmt.errors import CheckpointError
from nmt.rundir import CHECKSUMS_FILE, TOKENIZER_FILES, read_checksums, verify_checksums
from nmt.shipped import SHIPPED_DIR, shipped_models
from nmt.translator import Translator

REPO = Path(__file__).resolve().parents[1]


def test_release_halves_the_weights_and_loads_back(tiny_run, tmp_path):
    out = release.release(tiny_run, tmp_path / "shipped" / "tiny")
    assert sorted(p.name for p in out.iterdir()) == sorted([*release.KEEP, release.WEIGHTS,
                                                           CHECKSUMS_FILE])
    assert set(read_checksums(out)["sha256"]) == {*TOKENIZER_FILES, release.WEIGHTS}
    verify_checksums(out, [*TOKENIZER_FILES, release.WEIGHTS])  # of the float16 weights
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


@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_model_has_a_card_with_its_measured_scores(name):
    """The model card is part of a release: it names data, licence and limits, and its beam-5
    test scores are the ones bench_quality measured (not figures typed in by hand and left
    behind by a retrained model)."""
    card = (SHIPPED_DIR / name / release.CARD).read_text(encoding="utf-8")
    for heading in ("## Data and licence", "## Recipe", "## Scores", "## Decoding defaults",
                    "## Known limits"):
        assert heading in card, f"{name}'s card has no '{heading}'"
    config = Translator.load(SHIPPED_DIR / name).config
    assert f"configs/{name}.json" in card
    if "tatoeba" in config.data.corpus:
        assert "CC-BY 2.0" in card and "tatoeba.org" in card and "ManyThings.org" in card
    measured = json.loads((REPO / "bench" / "results" / "bench_quality.json").read_text())
    runs = [run for run in measured["runs"] if run["model"] == name and run["beam"] == 5]
    assert runs, f"bench_quality.json has no beam-5 scores of {name}"
    for run in runs:
        assert f"| {run['test_set']} | {run['sentences']} |" in card
        assert f"**{run['bleu']:.2f} / {run['chrf']:.2f}**" in card


@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_model_fits_the_size_limit(name):
    size = sum(path.stat().st_size for path in (SHIPPED_DIR / name).iterdir())
    assert size <= 25 * 10**6, f"{name} takes {size / 10**6:.1f} MB, over 25 MB"


def test_translator_load_takes_a_shipped_name_or_a_directory(tiny_run, tmp_path,  # noqa: F811
                                                            monkeypatch):
    from nmt.shipped import find_model

    assert find_model("de-en") == SHIPPED_DIR / "de-en"
    assert find_model(str(tiny_run)) == tiny_run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "de-en").mkdir()  # a folder of that name in the working directory wins
    assert find_model("de-en") == Path("de-en")
    assert find_model(Path("en-de")) == Path("en-de")  # a Path is always a path
    with pytest.raises(CheckpointError, match="checkpoint directory not found: no-such"):
        Translator.load("no-such-model")


@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_model_has_checksums_of_its_weights_and_tokenizers(name):
    folder = SHIPPED_DIR / name
    assert set(read_checksums(folder)["sha256"]) == {*TOKENIZER_FILES, release.WEIGHTS}
    verify_checksums(folder, [*TOKENIZER_FILES, release.WEIGHTS])


@pytest.mark.parametrize("damaged", [release.WEIGHTS, "source.model"])
def test_a_damaged_shipped_file_is_named_on_load(tmp_path, damaged):
    folder = shutil.copytree(SHIPPED_DIR / "de-en", tmp_path / "de-en")
    size = (folder / damaged).stat().st_size
    with open(folder / damaged, "r+b") as file:  # overwrite up to 1 MB in the middle
        file.seek(size // 3)
        file.write(bytes(min(2**20, size // 3)))
    with pytest.raises(CheckpointError, match=f"{damaged} is damaged"):
        Translator.load(folder)
