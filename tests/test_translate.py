"""Tests for translate.py: the command line over a real tiny checkpoint and real files.

Most runs call `translate.main([...])` in-process (it returns the exit code) with each
checkpoint loaded once per module; two real subprocesses prove the script's entry point,
stdin streaming and clean errors without a traceback.
"""

import argparse
import io
import json
import re
import select
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu
import tensorflow as tf
from PIL import Image

from nmt.cli import translate
from nmt.data import read_lines
from nmt.plotting import plot_filename
from nmt.translator import MAX_SOURCE_TOKENS, Translation
from tests.helpers import REPO, assert_clean_error

SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]
WORDS = "Ein alter Mann mit einem roten Hut fährt mit seinem Fahrrad durch die Stadt".split()
FORTY_TOKENS = " ".join((WORDS * 3)[:30]) + "."  # 30 words, about 40 subword pieces
LONG_LINE = " ".join((WORDS * 30)[:400]) + "."  # far more than MAX_SOURCE_TOKENS pieces
SCRIPT = REPO / "translate.py"


@pytest.fixture(scope="module", autouse=True)
def load_each_checkpoint_once():
    """Reuse loaded models across in-process runs (skips rebuilding and retracing)."""
    real_loader, loaded = translate.load_translator, {}

    def load_translator(checkpoint, weights, *options):
        key = (checkpoint, weights, *options)
        if key not in loaded:
            loaded[key] = real_loader(checkpoint, weights, *options)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(translate, "load_translator", load_translator)
        yield


@pytest.fixture
def cli(tiny_run, capsys):
    """Run translate.py in-process on the tiny checkpoint: (exit code, stdout, stderr)."""

    def run(*args):
        code = translate.main([*map(str, args), "--checkpoint", str(tiny_run)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def translator(tiny_run):
    return translate.load_translator(str(tiny_run), "best")


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def output_lines(text: str) -> list[str]:
    assert text.endswith("\n")
    return text[:-1].split("\n")


def subprocess_env():
    return {"PATH": "/usr/bin:/bin", "HOME": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(REPO)}


# ------------------------------------------------------------------ where text comes from
def test_sentences_on_the_command_line(cli, translator):
    code, out, err = cli(*SENTENCES)
    assert code == 0, err
    expected = [t.text for t in translator.translate(SENTENCES, beam=5, alpha=0.6)]
    assert output_lines(out) == expected
    assert all(expected)


def test_input_and_output_files_keep_line_count_and_order(cli, translator, tmp_path):
    lines = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee.", "   ",
             "Eine Frau liest ein Buch.", ""]
    source = write_lines(tmp_path / "in.de", lines)
    target = tmp_path / "out.en"
    code, out, err = cli("-i", source, "-o", target, "--beam", 1)
    assert code == 0, err
    assert out == ""
    written = output_lines(target.read_text(encoding="utf-8"))
    assert written == [t.text for t in translator.translate(lines, beam=1)]
    assert [line == "" for line in written] == [not line.strip() for line in lines]


def test_stdin_is_streamed_line_by_line(tiny_run):
    """A real process: the first answer arrives while standard input is still open."""
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--checkpoint", str(tiny_run),
                                "--beam", "1"], cwd=REPO, env=subprocess_env(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        process.stdin.write("Ein Mann fährt Fahrrad.\n".encode())
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no translation before the end of standard input"
        first = process.stdout.readline().decode("utf-8")
        rest = ["", "Zwei Hunde spielen.", LONG_LINE, "Eine Frau liest."]
        out, err = process.communicate("".join(f"{line}\n" for line in rest).encode(),
                                       timeout=120)
    finally:
        process.kill()
    err = err.decode("utf-8")
    assert process.returncode == 0, err
    assert "Traceback" not in err
    lines = output_lines(first + out.decode("utf-8"))
    assert len(lines) == 5
    assert lines[1] == ""
    assert all(lines[index] for index in (0, 2, 3, 4))
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert f"translating only the first {MAX_SOURCE_TOKENS - 1}" in warnings[0]


def test_undecodable_stdin_names_the_line(tiny_run):
    completed = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(tiny_run)],
                               input=b"Ein Mann.\nZwei Hunde.\nGr\xfc\xdfe aus K\xf6ln\n",
                               capture_output=True, cwd=REPO, env=subprocess_env(), timeout=120)
    err = completed.stderr.decode("utf-8")
    assert completed.returncode == 2, err
    assert "Traceback" not in err
    assert "error: standard input, line 3: not valid UTF-8" in err


# ------------------------------------------------------------------------------------- plots
def png_pixels(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_plot_dir_writes_one_image_per_sentence(cli, translator, tmp_path):
    sentences = ["Zwei Hunde spielen.", FORTY_TOKENS, "Eine Frau liest ein Buch."]
    assert len(translator.source_tokenizer.encode(FORTY_TOKENS)) >= 35
    # a short --max-length-ratio keeps the (never-ending) tiny-model translations short
    code, _, err = cli(*sentences, "--beam", 1, "--max-length-ratio", 0.5,
                       "--plot-dir", tmp_path / "plots")
    assert code == 0, err
    names = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert names == [plot_filename(index, text, "png", sentence=0)
                     for index, text in enumerate(sentences)]
    images = [png_pixels(tmp_path / "plots" / name) for name in names]
    for pixels in images:
        assert pixels.std() > 0
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    (short_height, short_width, _), (long_height, long_width, _) = (images[0].shape,
                                                                    images[1].shape)
    assert long_width > short_width
    assert long_height >= short_height


@pytest.mark.parametrize(("fmt", "head", "marker"), [("svg", b"<?xml", b"<svg"),
                                                     ("pdf", b"%PDF-", b"%%EOF")])
def test_plot_formats(cli, tmp_path, fmt, head, marker):
    code, _, err = cli(SENTENCES[0], "--beam", 1, "--plot-dir", tmp_path, "--plot-format", fmt)
    assert code == 0, err
    (path,) = tmp_path.iterdir()
    assert path.name == plot_filename(0, SENTENCES[0], fmt, sentence=0)
    data = path.read_bytes()
    assert data.startswith(head)
    assert marker in data


def test_second_run_into_the_same_plot_dir_does_not_overwrite(cli, tmp_path):
    plots = tmp_path / "plots"
    assert cli(*SENTENCES[:2], "--beam", 1, "--plot-dir", plots)[0] == 0
    first = {path.name: path.read_bytes() for path in plots.iterdir()}
    assert cli(*SENTENCES[:2], "--beam", 1, "--plot-dir", plots)[0] == 0
    after = {path.name: path.read_bytes() for path in plots.iterdir()}
    assert len(first) == 2
    assert len(after) == 4
    assert {name: after[name] for name in first} == first  # untouched
    new = sorted(set(after) - set(first))
    assert new == sorted(name.replace(".png", "-1.png") for name in first)


# ------------------------------------------------------------------------------ output formats
def parse_alignments(line: str) -> tuple[str, list[tuple[int, int]]]:
    translation, pharaoh = line.split(" ||| ")
    assert re.fullmatch(r"(\d+-\d+( \d+-\d+)*)?", pharaoh), line
    return translation, [tuple(map(int, pair.split("-"))) for pair in pharaoh.split()]


def test_alignments_parse_and_stay_within_the_words(cli, translator):
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei kleine Hunde spielen im Schnee.", "Hallo"]
    code, plain, _ = cli(*sentences, "--beam", 1)
    assert code == 0
    code, out, err = cli(*sentences, "--beam", 1, "--alignments")
    assert code == 0, err
    lines = output_lines(out)
    assert len(lines) == len(sentences)
    translations = translator.translate(sentences, beam=1)
    for source, text, line, translation in zip(sentences, output_lines(plain), lines,
                                               translations, strict=True):
        aligned_text, pairs = parse_alignments(line)
        assert aligned_text == text
        assert all(0 <= i < len(source.split()) for i, _ in pairs)
        # one link per target word, numbered from 0 (words as pieces starting with "▁" make
        # them; the pieces-vs-text word count is checked in the next test)
        pieces = [p for p in translation.target_tokens if p != "</s>"]
        assert sorted(j for _, j in pairs) == list(range(len(pairs)))
        assert 0 < len(pairs) <= len(pieces)


def test_alignment_indexes_count_the_words_of_the_printed_translation(translator):
    bare = [i for i in range(translator.target_tokenizer.vocab_size)
            if translator.pieces([i], target=True) == ["\u2581"]]
    words = translator.target_tokenizer.encode("A man rides a bike.")
    target_ids = words[:1] + bare[:1] + words[1:]  # the tiny model emits such bare pieces
    text = translator.target_tokenizer.detokenize(tf.constant([target_ids])).numpy()[0]
    source = "Ein Mann fährt Fahrrad."
    (source_ids,), _ = translator.encode_sources([source])
    source_pieces = translator.pieces(source_ids)
    target_pieces = translator.pieces(target_ids, target=True)
    attention = np.full((len(target_pieces), len(source_pieces)), 1.0 / len(source_pieces))
    translation = Translation(source, text.decode("utf-8"), source_pieces, target_pieces,
                              attention, -1.0, -1.0)
    output = io.StringIO()
    args = argparse.Namespace(json=False, n_best=1, alignments=True)
    translate.write_line(output, [translation], 0, args)
    printed, pairs = parse_alignments(output.getvalue().rstrip("\n"))
    assert printed.split() == ["A", "man", "rides", "a", "bike."]
    assert max(j for _, j in pairs) < len(printed.split())


def test_json_lines(cli, tmp_path):
    lines = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee."]
    source = write_lines(tmp_path / "in.de", lines)
    code, plain, _ = cli("-i", source)
    code, out, err = cli("-i", source, "--json")
    assert code == 0, err
    records = [json.loads(line) for line in output_lines(out)]
    assert [r["source"] for r in records] == lines
    assert [r["translation"] for r in records] == output_lines(plain)
    for record in records:
        assert {"source", "translation", "source_tokens", "target_tokens", "attention",
                "score"} <= set(record)
        attention = np.array(record["attention"], dtype=float).reshape(
            len(record["target_tokens"]), len(record["source_tokens"]))
        np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-3)
        assert isinstance(record["score"], float)
    assert records[0]["source_tokens"][-1] == "</s>"
    assert len(records[0]["target_tokens"]) > 0
    assert records[1]["target_tokens"] == [] and records[1]["attention"] == []


def test_n_best_lists(cli):
    code, best, _ = cli(*SENTENCES[:2], "--beam", 5)
    assert code == 0
    code, out, err = cli(*SENTENCES[:2], "--beam", 5, "--n-best", 3)
    assert code == 0, err
    rows = [line.split(" ||| ") for line in output_lines(out)]
    assert [int(index) for index, _, _ in rows] == [0, 0, 0, 1, 1, 1]
    for sentence in range(2):
        group = rows[3 * sentence:3 * sentence + 3]
        scores = [float(score) for _, _, score in group]
        assert scores == sorted(scores, reverse=True)
        assert group[0][1] == output_lines(best)[sentence]


def corpus_score_lines(err: str) -> tuple[float, float]:
    bleu = re.search(r"^BLEU = (\d+\.\d\d) \(nrefs:1", err, re.MULTILINE)
    chrf = re.search(r"^chrF = (\d+\.\d\d) \(nrefs:1", err, re.MULTILINE)
    assert bleu and chrf, err
    return float(bleu.group(1)), float(chrf.group(1))


def test_ref_reports_sacrebleu_scores(cli, tmp_path, multi30k_dir):
    sources = read_lines(multi30k_dir / "val.de.gz")[:8]
    references = read_lines(multi30k_dir / "val.en.gz")[:8]
    source = write_lines(tmp_path / "val.de", sources)
    hypotheses_file = tmp_path / "hyp.en"
    assert cli("-i", source, "-o", hypotheses_file, "--beam", 1)[0] == 0
    hypotheses = output_lines(hypotheses_file.read_text(encoding="utf-8"))
    # Half the references are the hypotheses themselves: scores well inside 0..100
    mixed = [h if index % 2 else r for index, (h, r) in enumerate(zip(hypotheses, references,
                                                                          strict=True))]
    for refs in (references, mixed):
        ref_file = write_lines(tmp_path / "ref.en", refs)
        output = tmp_path / "scored.en"
        output.unlink(missing_ok=True)
        code, _, err = cli("-i", source, "-o", output, "--beam", 1, "--ref", ref_file)
        assert code == 0, err
        scored = output_lines(output.read_text(encoding="utf-8"))
        assert scored == hypotheses
        bleu, chrf = corpus_score_lines(err)
        assert bleu == pytest.approx(sacrebleu.corpus_bleu(scored, [refs]).score, abs=0.005)
        assert chrf == pytest.approx(sacrebleu.corpus_chrf(scored, [refs]).score, abs=0.005)
    assert 0 < bleu < 100 and 0 < chrf < 100


def test_ref_with_another_line_count_is_an_error(cli, tmp_path):
    ref_file = write_lines(tmp_path / "ref.en", ["A man rides a bike."])
    code, out, err = cli(*SENTENCES, "--beam", 1, "--ref", ref_file)
    assert code == 2
    assert "Traceback" not in err
    assert "3 hypotheses against 1 references" in err


# ------------------------------------------------------------------------------------- bad input
def test_undecodable_input_file_names_the_line(cli, tmp_path):
    source = tmp_path / "bad.de"
    source.write_bytes(b"Ein Mann.\nZwei Hunde.\nGr\xfc\xdfe aus K\xf6ln\nNoch eine Zeile.\n")
    assert_clean_error(*cli("-i", source), f"{source}, line 3", "not valid UTF-8")


def test_missing_checkpoint_directory(capsys, tmp_path):
    missing = tmp_path / "no-such-run"
    code = translate.main(["--checkpoint", str(missing), "Ein Mann."])
    out, err = capsys.readouterr()
    assert_clean_error(code, out, err, str(missing), "not found")


@pytest.mark.parametrize("missing", ["best.weights.h5", "source.model", "config.json"])
def test_incomplete_checkpoint_names_the_missing_file(capsys, tmp_path, tiny_run, missing):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("logs", "resume"))
    (run_dir / missing).unlink()
    code = translate.main(["--checkpoint", str(run_dir), "Ein Mann."])
    out, err = capsys.readouterr()
    assert_clean_error(code, out, err, missing, "missing")


def test_very_long_line_is_truncated_not_fatal(cli, translator, tmp_path, caplog):
    source = write_lines(tmp_path / "long.de", [SENTENCES[0], LONG_LINE])
    with caplog.at_level("WARNING", logger="nmt.translator"):
        code, out, err = cli("-i", source, "--beam", 1, "--json")
    assert code == 0, err
    short, long = (json.loads(line) for line in output_lines(out))
    assert not short["truncated"]
    assert long["truncated"]
    assert len(long["source_tokens"]) == MAX_SOURCE_TOKENS
    assert long["translation"]
    pieces = len(translator.source_tokenizer.encode(LONG_LINE))
    assert [r.getMessage() for r in caplog.records] == [
        f"sentence 2 has {pieces} subword tokens; translating only the first "
        f"{MAX_SOURCE_TOKENS - 1}"]


def test_n_best_larger_than_beam_is_an_error(cli):
    assert_clean_error(*cli(*SENTENCES, "--beam", 2, "--n-best", 5), "--n-best (5)",
                       "--beam (2)")


# ------------------------------------------------------------------------------ shipped models
def test_model_and_checkpoint_together_is_an_error(capsys, tiny_run):
    code = translate.main(["--model", "de-en", "--checkpoint", str(tiny_run), "Ein Mann."])
    out, err = capsys.readouterr()
    assert_clean_error(code, out, err, "--model NAME or --checkpoint DIR, not both")


def test_unknown_model_lists_the_shipped_ones(capsys):
    from nmt.shipped import shipped_models

    code = translate.main(["--model", "fr-en", "Ein Mann."])
    out, err = capsys.readouterr()
    shipped = shipped_models()
    assert {"de-en", "en-de"} <= set(shipped)
    assert_clean_error(code, out, err, "unknown model 'fr-en'", ", ".join(shipped))


@pytest.mark.parametrize(("model", "sentence", "words"), [
    ("de-en", "Kannst du mir bitte helfen?", {"help", "me"}),
    ("en-de", "Can you help me, please?", {"helfen", "mir"}),
])
def test_shipped_models_translate_both_directions(capsys, model, sentence, words):
    default = [] if model == "de-en" else ["--model", model]  # de-en is the default
    code = translate.main([*default, sentence])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert words <= set(re.findall(r"\w+", out.lower())), out
