"""translate.py as a new user meets it: paragraphs in, paragraphs out; quiet; fast, clear
failures before TensorFlow loads; a progress bar only where a person watches."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.cli import translate
from nmt.plotting import plot_filename
from nmt.sentences import split_sentences
from tests.helpers import REPO, assert_clean_error

PARAGRAPH_DE = "Ein Hund rennt. Eine Frau liest ein Buch. Zwei Kinder spielen im Park."
TRICKY_DE = ('Dr. Müller kauft z. B. Äpfel, Birnen usw. für 3.5 Euro. Er sagt: "Das ist billig." '
             "Dann geht er nach Hause.")
PARAGRAPH_EN = ("Mr. Smith paid $3.5 million, e.g. for a house. She said \"I like it.\" "
                "They moved in on Monday.")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = translate.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("model", "line", "language"), [
    ("de-en", PARAGRAPH_DE, "en"), ("en-de", PARAGRAPH_EN, "de")])
def test_every_sentence_of_a_line_is_translated(capsys, model, line, language):
    code, out, err = run_cli(capsys, "--model", model, line, "Noch eine Zeile." if
                             model == "de-en" else "One more line.")
    assert code == 0, err
    first, second = out.splitlines()
    assert len(split_sentences(first, language)) == 3, first
    assert len(split_sentences(second, language)) == 1


@pytest.mark.parametrize(("model", "line", "language"), [
    ("de-en", TRICKY_DE, "de"), ("en-de", PARAGRAPH_EN, "en")])
def test_abbreviations_numbers_and_quotes_do_not_cut_a_sentence(capsys, model, line, language):
    sentences = split_sentences(line, language)
    assert len(sentences) == 3 and " ".join(sentences) == line
    code, out, err = run_cli(capsys, "--model", model, line, "--json")
    assert code == 0, err
    records = [json.loads(row) for row in out.splitlines()]
    assert [record["source"] for record in records] == sentences
    assert all(record["translation"].strip() for record in records)
    code, plain, err = run_cli(capsys, "--model", model, line)
    assert plain == " ".join(record["translation"] for record in records) + "\n"


def test_json_and_plots_name_line_and_sentence(capsys, tmp_path):
    lines = [PARAGRAPH_DE, "Ein Mann fährt Fahrrad."]
    code, out, err = run_cli(capsys, "--model", "de-en", *lines, "--json", "--beam", 1,
                             "--plot-dir", tmp_path)
    assert code == 0, err
    records = [json.loads(row) for row in out.splitlines()]
    assert [(r["line"], r["sentence"]) for r in records] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert [r["source"] for r in records] == [*split_sentences(PARAGRAPH_DE, "de"), lines[1]]
    for record in records:  # each record is a whole, single-sentence translation
        assert len(record["attention"]) == len(record["target_tokens"])
        assert len(split_sentences(record["translation"], "en")) == 1
    expected = [plot_filename(r["line"], r["source"], "png", sentence=r["sentence"])
                for r in records]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(expected)


def test_no_split_translates_each_line_whole(capsys):
    code, out, err = run_cli(capsys, "--model", "de-en", PARAGRAPH_DE, "--json", "--beam", 1,
                             "--no-split")
    assert code == 0, err
    (record,) = [json.loads(row) for row in out.splitlines()]
    assert record["source"] == PARAGRAPH_DE and (record["line"], record["sentence"]) == (0, 0)


def test_alignments_number_words_over_the_whole_line(capsys):
    code, out, err = run_cli(capsys, "--model", "de-en", "Ein Hund rennt. Eine Frau liest.",
                             "--alignments", "--beam", 1)
    assert code == 0, err
    text, pharaoh = out.rstrip("\n").split(" ||| ")
    pairs = [tuple(map(int, pair.split("-"))) for pair in pharaoh.split()]
    assert max(t for _, t in pairs) == len(text.split()) - 1  # every target word aligned
    assert max(s for s, _ in pairs) <= 5 and max(s for s, _ in pairs) >= 3  # second sentence


def test_a_plain_translation_writes_nothing_on_stderr():
    result = subprocess.run([sys.executable, "translate.py", "Ein Hund rennt."], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert result.stdout.strip().lower().startswith("a dog")
    assert result.stderr == ""


# ------------------------------------------------------------------------ fail fast
PROBE = ("import sys\nfrom nmt.cli.translate import main\ncode = main(sys.argv[1:])\n"
         "print('tensorflow' in sys.modules)\nsys.exit(code)\n")


def failures(tmp: Path) -> list[tuple[list[str], list[str]]]:
    existing = tmp / "in.de"
    existing.write_text("Ein Hund.\n", encoding="utf-8")
    return [
        (["-i", tmp / "missing.de"], ["-i", "file not found", "missing.de"]),
        (["--ref", tmp / "missing.en", "Ein Hund."], ["--ref", "file not found"]),
        (["--checkpoint", tmp / "no-run", "Ein Hund."], ["checkpoint directory not found"]),
        (["--checkpoint", tmp, "Ein Hund."], ["not a run directory", "config.json"]),
        (["--model", "xx-yy", "Ein Hund."], ["unknown model 'xx-yy'", "de-en"]),
        (["-o", tmp / "nowhere" / "out.en", "Ein Hund."], ["folder", "does not exist"]),
        (["-i", existing, "-o", existing], ["is the input file", "refusing"]),
        (["-o", tmp, "Ein Hund."], ["is a folder"]),
        (["--beam", "0", "Ein Hund."], ["--beam must be at least 1, received 0"]),
        (["--batch-size", "0", "Ein Hund."], ["--batch-size must be at least 1"]),
        (["--length-penalty", "-1", "Ein Hund."], ["--length-penalty must be >= 0"]),
        (["--beam", "2", "--n-best", "3", "Ein Hund."], ["--n-best (3)", "--beam (2)"]),
    ]


def test_bad_arguments_fail_in_one_line_before_tensorflow_loads(tmp_path):
    for args, fragments in failures(tmp_path):
        result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.stdout == "False\n", (args, result.stdout, result.stderr)
        assert_clean_error(result.returncode, "", result.stderr, *fragments)
    assert (tmp_path / "in.de").read_text(encoding="utf-8") == "Ein Hund.\n"  # never written


@pytest.mark.parametrize("options", [
    ["--length-penalty", "nan"], ["--length-penalty", "inf"], ["--max-length-ratio", "nan"],
    ["--max-length-ratio", "-1"], ["--max-length-ratio", "1e9"], ["--max-length-ratio", "inf"]])
def test_non_finite_or_overflowing_search_options_are_refused(capsys, options):
    code, out, err = run_cli(capsys, *options, "Ein Hund.")
    assert_clean_error(code, out, err, options[0], "received")


def test_a_negative_batch_size_is_refused_on_standard_input_too(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Ein Hund rennt.\n"))
    code, out, err = run_cli(capsys, "--batch-size", "-1")
    assert_clean_error(code, out, err, "--batch-size must be at least 1, received -1")


@pytest.mark.parametrize("link", [os.link, os.symlink])
def test_output_that_is_the_input_under_another_name_is_refused(capsys, tmp_path, link):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\nEine Katze.\n", encoding="utf-8")
    other_name = tmp_path / "same.de"
    link(source, other_name)
    for output in (other_name, tmp_path / "." / "in.de"):
        code, out, err = run_cli(capsys, "-i", source, "-o", output)
        assert_clean_error(code, out, err, "is the input file", "refusing")
    assert source.read_text(encoding="utf-8") == "Ein Hund.\nEine Katze.\n"


def test_a_failure_after_translation_starts_keeps_input_and_output(capsys, tmp_path):
    source, output = tmp_path / "in.de", tmp_path / "out.en"
    lines = "".join(f"Ein Hund rennt {number} Mal.\n" for number in range(20))
    source.write_text(lines, encoding="utf-8")
    output.write_text("an earlier translation\n", encoding="utf-8")
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    # The heatmaps' folder cannot be made (its parent is a file): fails at the first plot.
    code, out, err = run_cli(capsys, "--model", "de-en", "--beam", 1, "-i", source, "-o",
                             output, "--plot-dir", blocker / "plots")
    assert_clean_error(code, out, err, "cannot write", "a-file")
    assert source.read_text(encoding="utf-8") == lines
    assert output.read_text(encoding="utf-8") == "an earlier translation\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "in.de", "out.en"]


def test_lines_of_control_or_invisible_characters_translate_as_empty_lines(capsys, tmp_path):
    source = tmp_path / "in.de"
    source.write_text("\x00\x00\x00\n\u200b\u200b\ufeff\nEin Hund rennt.\n\x1b\u2060 \n",
                      encoding="utf-8")
    for split in ([], ["--no-split"]):
        code, out, err = run_cli(capsys, "--model", "de-en", "--beam", 1, "-i", source, *split)
        assert code == 0, err
        empty, invisible, dog, control = out.split("\n")[:4]
        assert (empty, invisible, control) == ("", "", "")
        assert dog.lower().startswith("a dog")


def test_an_unknown_plot_format_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        translate.main(["--plot-format", "gif", "Ein Hund."])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gif'" in capsys.readouterr().err


def test_help_mentions_the_sub_commands_and_every_format(capsys):
    with pytest.raises(SystemExit):
        translate.main(["--help"])
    text = capsys.readouterr().out
    assert "serve" in text and "export" in text and "--no-split" in text
    assert "file format of the heatmaps" in text


def test_dtype_and_xla_options_are_offered_checked_and_used(capsys, tiny_run):
    with pytest.raises(SystemExit):
        translate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--dtype {float32,bfloat16,auto}" in text and "(default: auto)" in text
    with pytest.raises(SystemExit):
        translate.main(["serve", "--help"])
    serve_help = " ".join(capsys.readouterr().out.split())
    assert "--dtype {float32,bfloat16,auto}" in serve_help
    assert "AMX (default: float32)" in serve_help  # a batch mixes clients: exact
    assert "--no-xla" in text
    with pytest.raises(SystemExit) as exit_info:
        translate.main(["--dtype", "float16", "Ein Hund."])
    assert exit_info.value.code == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err
    for options in (["--dtype", "bfloat16"], ["--no-xla"]):
        code, out, err = run_cli(capsys, "--checkpoint", tiny_run, "--beam", "2", *options,
                                 "Ein Hund rennt.")
        assert code == 0, err
        assert out.strip() and err == ""


# ------------------------------------------------------------------------ progress
class Terminal:
    """A stand-in for stderr that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_a_progress_bar_only_for_long_input_on_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(translate.shutil, "get_terminal_size", lambda: __import__(
        "os").terminal_size((80, 24)))
    with translate.progress_bar(100, quiet=False) as bar:
        bar.update(50)
        bar.refresh()  # tqdm redraws at most every 0.1 s by itself
    assert "50/100" in terminal.text
    for total, quiet in ((10, False), (100, True), (None, False)):  # short, --quiet, stdin
        terminal.text = ""
        with translate.progress_bar(total, quiet=quiet) as bar:
            bar.update(5)
        assert terminal.text == ""
    monkeypatch.setattr(terminal, "isatty", lambda: False)  # a pipe or a file
    with translate.progress_bar(100, quiet=False) as bar:
        bar.update(5)
    assert terminal.text == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["translate.py", "serve", "--port", "70000"],
     "error: --port must be from 1 to 65535, received 70000"),
    (["translate.py", "export", "--checkpoint", "no-such-run", "--out", "x"],
     "error: checkpoint directory not found: no-such-run"),
    (["train.py", "--train-src", "no-such.de", "--train-tgt", "no-such.en", "--valid-src",
      "no-such.de", "--valid-tgt", "no-such.en"], "error: corpus file not found: no-such.de"),
])
def test_serve_export_and_train_start_tensorflow_quietly(argv, message, tmp_path):
    """Each fails after TensorFlow has loaded: stderr holds nmt's one line and nothing else
    (and the failed training leaves no run directory behind)."""
    if argv[0] == "train.py":
        argv = [*argv, "--run-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message]
    assert not (tmp_path / "run").exists()
