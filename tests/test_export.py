"""Tests for nmt/export.py and `translate.py export`: a SavedModel of the released model.

The default shipped model (checkpoints/de-en) is exported once per beam size (1 and 3)
per module; one fresh Python process, which imports only tensorflow and tensorflow_text (nmt is
made unimportable there), loads both exports and runs `serving_default`. Its outputs must
equal what `Translator.translate` gives in this process. Command-line errors run in-process
(`translate.main` returns the exit code); one real `translate.py export` process proves the
entry point and the default checkpoint.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from nmt.cli import translate
from nmt.export import INFO_FILE, export_info, export_saved_model
from nmt.shipped import DEFAULT_MODEL, SHIPPED_DIR
from nmt.translator import MAX_SOURCE_TOKENS
from tests.helpers import REPO, assert_clean_error

DEFAULT_MODEL_DIR = SHIPPED_DIR / DEFAULT_MODEL  # what `translate.py export` exports by default

SCRIPT = REPO / "translate.py"
ALPHA = 0.6
BEAMS = (1, 3)
WORDS = "Ein alter Mann mit einem roten Hut fährt mit seinem Fahrrad durch die Stadt".split()
LONG_LINE = " ".join((WORDS * 20)[:200]) + "."  # more than MAX_SOURCE_TOKENS pieces
SENTENCES = [
    "Ein Mann fährt Fahrrad.",
    "",
    "Zwei Hunde spielen im Schnee.",
    "\t \u3000",  # blank for str.strip() too (an ideographic space)
    "Eine Frau in einem roten Kleid liest ein Buch im Park, während ihr Hund schläft.",
    LONG_LINE,
    "Grüße aus Köln!",
]

# Runs in a fresh interpreter: only tensorflow and tensorflow_text may be imported.
LOAD_AND_CALL = textwrap.dedent("""
    import json, sys


    class NoNmt:  # any attempt to import nmt fails
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "nmt":
                raise ImportError(f"the export must not need {name}")


    sys.meta_path.insert(0, NoNmt())
    import tensorflow as tf
    import tensorflow_text  # registers the sentencepiece ops
    paths, sentences, result_file = json.loads(sys.argv[1])
    results = {}
    for path in paths:
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        outputs = serve(texts=tf.constant(sentences, tf.string))
        empty = serve(texts=tf.constant([], tf.string))
        results[path] = {
            "outputs": {key: value.numpy().tolist() for key, value in outputs.items()},
            "dtypes": {key: value.dtype.name for key, value in outputs.items()},
            "empty_shapes": {key: value.shape.as_list() for key, value in empty.items()},
            "model_info": json.loads(loaded.model_info().numpy().decode("utf-8")),
            "signatures": sorted(loaded.signatures),
        }
    assert "nmt" not in sys.modules
    with open(result_file, "w", encoding="utf-8") as file:
        json.dump(results, file, default=lambda b: b.decode("utf-8"))
""")


def subprocess_env():
    return {"PATH": "/usr/bin:/bin", "HOME": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def hidden_leftovers(directory):
    """Temporary `.NAME.*.tmp` / `.old` siblings an interrupted export could leave."""
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


@pytest.fixture(scope="module")
def translator():
    return translate.load_translator(str(DEFAULT_MODEL_DIR), "best")


@pytest.fixture(scope="module", autouse=True)
def load_checkpoint_once(translator):
    """In-process `translate.main` runs reuse the translator loaded above."""
    real_loader = translate.load_translator

    def load_translator(checkpoint, weights, *options):
        if (checkpoint, weights, *options) == (str(DEFAULT_MODEL_DIR), "best"):
            return translator
        return real_loader(checkpoint, weights, *options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(translate, "load_translator", load_translator)
        yield


@pytest.fixture(scope="module")
def exports(translator, tmp_path_factory):
    """{beam: SavedModel directory}, written with the library call."""
    root = tmp_path_factory.mktemp("exports")
    paths = {}
    for beam in BEAMS:
        info = export_info(translator, DEFAULT_MODEL_DIR, "best", beam, ALPHA, 2.0)
        paths[beam] = export_saved_model(translator, root / f"beam{beam}" / "1", beam=beam,
                                         alpha=ALPHA, max_length_ratio=2.0, info=info)
    return paths


@pytest.fixture(scope="module")
def served(exports, tmp_path_factory):
    """{beam: what the fresh process got from the loaded SavedModel}."""
    work = tmp_path_factory.mktemp("fresh_process")
    result_file = work / "results.json"
    argument = json.dumps([[str(exports[beam]) for beam in BEAMS], SENTENCES, str(result_file)])
    completed = subprocess.run([sys.executable, "-c", LOAD_AND_CALL, argument], cwd=work,
                               env=subprocess_env(), capture_output=True, timeout=600)
    assert completed.returncode == 0, completed.stderr.decode("utf-8")[-3000:]
    results = json.loads(result_file.read_text(encoding="utf-8"))
    return {beam: results[str(exports[beam])] for beam in BEAMS}


@pytest.fixture(scope="module")
def expected(translator):
    return {beam: translator.translate(SENTENCES, beam=beam, alpha=ALPHA) for beam in BEAMS}


# --------------------------------------------------------------------- the loaded SavedModel
@pytest.mark.parametrize("beam", BEAMS)
def test_translations_equal_the_translator(served, expected, beam):
    translations = served[beam]["outputs"]["translations"]
    assert translations == [t.text for t in expected[beam]]
    assert [text == "" for text in translations] == [not s.strip() for s in SENTENCES]
    assert expected[beam][SENTENCES.index(LONG_LINE)].truncated


@pytest.mark.parametrize("beam", BEAMS)
def test_tokens_lengths_and_scores_equal_the_translator(served, expected, beam):
    outputs = served[beam]["outputs"]
    for row, translation in enumerate(expected[beam]):
        source_length = outputs["source_lengths"][row]
        target_length = outputs["target_lengths"][row]
        assert source_length == len(translation.source_tokens)
        assert target_length == len(translation.target_tokens)
        assert outputs["source_tokens"][row][:source_length] == translation.source_tokens
        assert outputs["target_tokens"][row][:target_length] == translation.target_tokens
        assert set(outputs["source_tokens"][row][source_length:]) <= {""}
        assert set(outputs["target_tokens"][row][target_length:]) <= {""}
        assert outputs["scores"][row] == pytest.approx(translation.score, rel=1e-5, abs=1e-5)
    assert max(outputs["source_lengths"]) == MAX_SOURCE_TOKENS  # the long line, truncated
    assert len(outputs["source_tokens"][0]) == max(outputs["source_lengths"])  # no extra pad
    assert len(outputs["target_tokens"][0]) == max(outputs["target_lengths"])
    assert outputs["source_tokens"][0][len(expected[beam][0].source_tokens) - 1] == "</s>"


@pytest.mark.parametrize("beam", BEAMS)
def test_attention_equals_the_translator_and_is_zero_padded(served, expected, beam):
    outputs = served[beam]["outputs"]
    attention = np.array(outputs["attention"], dtype=np.float32)
    assert attention.shape == (len(SENTENCES), max(outputs["target_lengths"]),
                               max(outputs["source_lengths"]))
    for row, translation in enumerate(expected[beam]):
        rows, columns = translation.attention.shape
        np.testing.assert_allclose(attention[row, :rows, :columns], translation.attention,
                                   atol=1e-5)
        np.testing.assert_allclose(attention[row, :rows].sum(axis=-1), 1.0, atol=1e-4)
        padding = attention[row].copy()
        padding[:rows, :columns] = 0.0
        assert not padding.any()
        if not SENTENCES[row].strip():
            assert rows == columns == 0 and not attention[row].any()


def test_signature_dtypes_and_an_empty_batch(served):
    for beam in BEAMS:
        assert served[beam]["signatures"] == ["serving_default"]
        assert served[beam]["dtypes"] == {
            "translations": "string", "source_tokens": "string", "target_tokens": "string",
            "attention": "float32", "scores": "float32", "source_lengths": "int32",
            "target_lengths": "int32"}
        shapes = served[beam]["empty_shapes"]
        assert shapes["translations"] == [0]
        assert shapes["attention"][0] == 0


def test_model_info_describes_the_export(served, exports, translator):
    for beam in BEAMS:
        info = served[beam]["model_info"]
        assert json.loads((exports[beam] / INFO_FILE).read_text(encoding="utf-8")) == info
        assert info["beam"] == beam
        assert info["length_penalty"] == ALPHA and info["max_length_ratio"] == 2.0
        assert (info["source_language"], info["target_language"]) == ("de", "en")
        assert info["checkpoint"] == "de-en" and info["weights"] == "best"
        assert info["config"] == translator.config.to_dict()
        assert set(info["signature"]["outputs"]) == set(served[beam]["dtypes"])


def test_the_export_stores_the_weights_and_not_the_translators_table(exports, translator):
    """The table of input projections (Seq2Seq.tabulate_input_projections, 4,000 x 1,536
    floats here) stays out of the SavedModel, and the translator gets it back."""
    weights_bytes = sum(variable.numpy().nbytes for variable in translator.model.variables)
    for path in exports.values():
        stored = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
        assert stored < weights_bytes * 1.2, stored
    assert translator.model._input_projections is not None


# ------------------------------------------------------------------------------ command line
def run_main(capsys, *args):
    code = translate.main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_command_line_export_in_a_real_process(tmp_path):
    """Default checkpoint (the released model), an empty --out directory, chosen options."""
    out = tmp_path / "models" / "nmt" / "1"
    out.mkdir(parents=True)  # an empty directory is fine
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "export", "--out", str(out), "--beam", "2",
         "--length-penalty", "1.0", "--max-length-ratio", "1.5"],
        cwd=REPO, env={**subprocess_env(), "PYTHONPATH": str(REPO)}, capture_output=True,
        timeout=600)
    stdout, stderr = completed.stdout.decode("utf-8"), completed.stderr.decode("utf-8")
    assert completed.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert str(out) in stdout
    assert f"saved_model_cli show --dir {out}" in stdout
    assert f"-v {out.parent}:/models/nmt" in stdout and "tensorflow/serving" in stdout
    assert (out / "saved_model.pb").is_file()
    assert (out / "variables" / "variables.index").is_file()
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    assert (info["beam"], info["length_penalty"], info["max_length_ratio"]) == (2, 1.0, 1.5)
    assert info["checkpoint"] == "de-en"
    assert hidden_leftovers(out.parent) == []


def test_existing_directory_is_refused_without_overwrite(capsys, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    assert_clean_error(*run_main(capsys, "--out", out), str(out), "not empty", "--overwrite")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert hidden_leftovers(tmp_path) == []


def test_overwrite_never_replaces_a_directory_that_is_not_a_saved_model(capsys, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    code, out_text, err = run_main(capsys, "--out", out, "--overwrite")
    assert_clean_error(code, out_text, err, "not a SavedModel")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_overwrite_replaces_a_previous_export(capsys, tmp_path, exports):
    out = tmp_path / "nmt" / "1"
    shutil.copytree(exports[3], out)
    (out / "stale.txt").write_text("from the old export", encoding="utf-8")
    code, stdout, err = run_main(capsys, "--out", out, "--overwrite", "--beam", "1")
    assert code == 0, err
    assert str(out) in stdout
    assert not (out / "stale.txt").exists()
    assert json.loads((out / INFO_FILE).read_text(encoding="utf-8"))["beam"] == 1
    assert (out / "saved_model.pb").is_file()
    assert hidden_leftovers(out.parent) == []


def test_a_failed_export_leaves_the_previous_one_and_no_temporaries(capsys, tmp_path, exports,
                                                                   monkeypatch):
    out = tmp_path / "nmt" / "1"
    shutil.copytree(exports[1], out)
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*")
              if path.is_file()}

    def failing_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        translate.main(["export", "--out", str(out), "--overwrite"])
    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*")
             if path.is_file()}
    assert after == before
    assert hidden_leftovers(out.parent) == []


def test_missing_checkpoint_is_a_clean_error(capsys, tmp_path):
    missing, out = tmp_path / "no-such-run", tmp_path / "export"
    code, stdout, err = run_main(capsys, "--out", out, "--checkpoint", missing)
    assert_clean_error(code, stdout, err, str(missing), "not found")
    assert not out.exists()
    assert hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize(("options", "fragment"), [(["--beam", "0"], "--beam"),
                                                   (["--max-length-ratio", "-1"],
                                                    "--max-length-ratio")])
def test_bad_options_are_clean_errors(capsys, tmp_path, options, fragment):
    out = tmp_path / "export"
    assert_clean_error(*run_main(capsys, "--out", out, *options), fragment)
    assert not out.exists()


def test_out_that_is_a_file_is_a_clean_error(capsys, tmp_path):
    out = tmp_path / "export"
    out.write_text("a file", encoding="utf-8")
    assert_clean_error(*run_main(capsys, "--out", out), "not a directory")
    assert out.read_text(encoding="utf-8") == "a file"
