"""Tests of the attention study (`nmt.study`).

One tiny study is shared by the module: the RNN with two soft scores and two seeds, one hard
score and one longer run, one epoch each (the longer run two) on real Multi30k pairs,
evaluated on 20 test sentences. It is first interrupted (Ctrl-C while the second run is
evaluated), then resumed; the tests read its runs and document, and re-run it to check what
is (not) redone. The planner with two architectures, the slow-run flagging, `--rerun-slow`
and the Transformer's per-head table are tested on fake run files, without training.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from nmt import (
    study,
    study_discussion,
    study_plan,
    study_report,
    study_rows,
    study_runs,
    study_stats,
)
from nmt.study_rows import RunRow, SettingRow
from nmt.study_runs import RunSpec, StudySettings
from tests.helpers import REPO, tiny_config

SCORES = ["dot", "general"]
SEEDS = [1, 2]
EPOCHS = 1  # per run (the longer run: LONG_FACTOR times as many)
LONG_FACTOR = 2
TEST_LIMIT = 20
WEIGHTS = ("best.weights.h5", "last.weights.h5")


@dataclass
class Calls:
    """Which runs `train_run` and `evaluate_run` were called for, in order."""

    train: list[str] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=list)


@dataclass
class Study:
    root: Path
    study_dir: Path
    docs_dir: Path
    args: list[str]
    interrupted: Calls
    crash_code: int
    resumed: Calls
    after_crash: dict[str, set[str]]  # run -> files present right after the interruption
    weights_after_crash: dict[str, float]

    @property
    def document(self) -> Path:
        return self.docs_dir / "attention-study.md"


def spy(monkeypatch: pytest.MonkeyPatch, interrupt_evaluation: int | None = None) -> Calls:
    """Record the runs trained and evaluated; optionally Ctrl-C the n-th evaluation."""
    calls = Calls()
    train_run, evaluate_run = study.train_run, study.evaluate_run

    def recording_train(settings, spec, *args, **kwargs):
        calls.train.append(spec.name)
        return train_run(settings, spec, *args, **kwargs)

    def recording_evaluate(settings, spec, *args, **kwargs):
        calls.evaluate.append(spec.name)
        if len(calls.evaluate) == interrupt_evaluation:
            raise KeyboardInterrupt
        return evaluate_run(settings, spec, *args, **kwargs)

    monkeypatch.setattr(study, "train_run", recording_train)
    monkeypatch.setattr(study, "evaluate_run", recording_evaluate)
    return calls


def weight_times(study_dir: Path) -> dict[str, float]:
    return {f"{run.name}/{name}": (run / name).stat().st_mtime_ns
            for run in sorted(study_dir.iterdir()) if run.is_dir()
            for name in WEIGHTS if (run / name).exists()}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, multi30k_dir) -> Study:
    root = tmp_path_factory.mktemp("study")
    config = tiny_config().save(root / "tiny.json")
    study_dir, docs_dir = root / "studies" / "attention", root / "docs"
    args = ["--data-dir", str(multi30k_dir), "--config", str(config), "--architectures", "rnn",
            "--epochs", str(EPOCHS), "--study-dir", str(study_dir), "--docs-dir", str(docs_dir),
            "--scores", *SCORES, "--seeds", *map(str, SEEDS), "--hard-top", "1",
            "--long-top", "1", "--long-factor", str(LONG_FACTOR),
            "--test-limit", str(TEST_LIMIT), "--quiet"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        interrupted = spy(monkeypatch, interrupt_evaluation=2)
        crash_code = study.main(args)
    after_crash = {run.name: {p.name for p in run.iterdir()}
                   for run in study_dir.iterdir() if run.is_dir()}
    weights_after_crash = weight_times(study_dir)
    with pytest.MonkeyPatch.context() as monkeypatch:
        resumed = spy(monkeypatch)
        assert study.main(args) == 0
    return Study(root, study_dir, docs_dir, args, interrupted, crash_code, resumed,
                 after_crash, weights_after_crash)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def val_bleu(run_dir: Path) -> float:
    return read_json(run_dir / "metrics.json")["best"]["val_bleu"]


def ranked(values: dict) -> list:
    """Keys by descending mean, ties broken by the key's text (the study's rule)."""
    return sorted(values, key=lambda key: (-statistics.fmean(values[key]), str(key)))


def expected_hard_score(study_dir: Path) -> str:
    """The soft score with the best mean validation BLEU over seeds, ties broken by name."""
    return ranked({s: [val_bleu(study_dir / f"rnn-{s}-soft-s{seed}") for seed in SEEDS]
                   for s in SCORES})[0]


def planned_runs(study_dir: Path) -> list[str]:
    """Seed-major soft runs, then the hard runs, then the best setting's longer run."""
    hard = expected_hard_score(study_dir)
    runs = [f"rnn-{s}-soft-s{seed}" for seed in SEEDS for s in SCORES]
    runs += [f"rnn-{hard}-hard-s{seed}" for seed in SEEDS]
    settings = {}
    for name in runs:
        settings.setdefault(name.rsplit("-", 1)[0], []).append(val_bleu(study_dir / name))
    return runs + [f"{ranked(settings)[0]}-s{SEEDS[0]}-x{LONG_FACTOR:g}"]


def tables(document: Path) -> list[list[dict[str, str]]]:
    """Every Markdown table of the document, as one dict (header -> cell) per row."""
    found, block = [], []
    for line in document.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            assert set("".join(block[1])) == {"-"}
            found.append([dict(zip(block[0], row, strict=True)) for row in block[2:]])
            block = []
    return found


def table_with(document: Path, column: str) -> list[dict[str, str]]:
    (table,) = [t for t in tables(document) if t and column in t[0]]
    return table


def mean_and_range(cell: str) -> tuple[float, float, float]:
    """ "31.20 (30.90–31.50)" -> (31.2, 30.9, 31.5)."""
    match = re.fullmatch(r"(-?[\d.]+) \((-?[\d.]+)–(-?[\d.]+)\)", cell)
    assert match, cell
    return tuple(float(group) for group in match.groups())


def close(shown: str, value: float, decimals: int) -> bool:
    return abs(float(shown.replace(",", "")) - value) <= 0.5 * 10 ** -decimals + 1e-9


# --------------------------------------------------------------------- the study
def test_interrupted_study_resumes_with_only_what_is_missing(tiny_study):
    runs = planned_runs(tiny_study.study_dir)
    # First session: two runs trained, Ctrl-C while the second one was being evaluated.
    assert tiny_study.crash_code == 130
    assert tiny_study.interrupted.train == runs[:2]
    assert tiny_study.interrupted.evaluate == runs[:2]
    assert "result.json" in tiny_study.after_crash[runs[0]]
    assert "result.json" not in tiny_study.after_crash[runs[1]]
    assert "metrics.json" in tiny_study.after_crash[runs[1]]
    assert set(tiny_study.after_crash) == set(runs[:2])  # nothing of later runs yet
    # Second session: the finished run untouched, the trained one only evaluated.
    assert tiny_study.resumed.train == runs[2:]
    assert tiny_study.resumed.evaluate == runs[1:]
    after = weight_times(tiny_study.study_dir)
    assert {k: v for k, v in after.items() if k in tiny_study.weights_after_crash} == \
        tiny_study.weights_after_crash


def test_every_planned_run_has_metrics_and_result(tiny_study):
    runs = planned_runs(tiny_study.study_dir)
    assert sorted(p.name for p in tiny_study.study_dir.iterdir() if p.is_dir()) == sorted(runs)
    for name in runs:
        run = tiny_study.study_dir / name
        metrics, result = read_json(run / "metrics.json"), read_json(run / "result.json")
        config = read_json(run / "config.json")
        factor = LONG_FACTOR if name.endswith(f"-x{LONG_FACTOR:g}") else 1.0
        arch, score, mode, seed = name.split("-")[:4]
        assert metrics["stopped_by"] == "epochs"
        assert config["train"]["time_budget"] is None
        assert config["train"]["epochs"] == len(metrics["epochs"]) == EPOCHS * factor
        assert config["train"]["seed"] == int(seed[1:]) == result["seed"]
        assert (result["architecture"], result["score"], result["mode"],
                result["budget_factor"], result["sentences"]) == (arch, score, mode, factor,
                                                                  TEST_LIMIT)
        assert len(result["examples"]) == 3
        assert "head_entropy" not in result  # an RNN has no heads
        if mode == "hard":
            assert result["attention_entropy"] == pytest.approx(0.0, abs=1e-6)
            assert result["max_attention_weight"] == pytest.approx(1.0)


def test_a_longer_run_goes_on_from_its_seeds_run_when_the_rate_ignores_the_length(tiny_study):
    """The tiny config's constant learning rate depends on the step alone, so the longer run
    starts as a copy of its seed's one-budget run and trains only the epochs after it."""
    runs = planned_runs(tiny_study.study_dir)
    long = tiny_study.study_dir / runs[-1]
    short = tiny_study.study_dir / runs[-1].rsplit("-x", 1)[0]
    assert read_json(short / "config.json")["train"]["lr_schedule"] == "constant"
    short_epochs = read_json(short / "metrics.json")["epochs"]
    long_epochs = read_json(long / "metrics.json")["epochs"]
    assert len(short_epochs) == EPOCHS and len(long_epochs) == EPOCHS * LONG_FACTOR
    assert long_epochs[:EPOCHS] == short_epochs  # copied, not trained again
    assert long_epochs[EPOCHS]["epoch"] == EPOCHS + 1
    assert read_json(long / "result.json")["run"] == long.name  # evaluated on its own
    assert not list(tiny_study.study_dir.glob("*.copying"))


def test_a_cosine_schedule_or_a_budget_in_minutes_trains_the_longer_run_afresh(tmp_path):
    settings = fake_settings()
    spec = RunSpec("rnn", "dot", "soft", 1, 3.0)
    write_fake_run(tmp_path, RunSpec("rnn", "dot", "soft", 1), 20.0)
    settings.base_configs["rnn"]["train"]["lr_schedule"] = "inverse_sqrt"
    assert study.continue_short_run(settings, tmp_path, spec) is None  # minutes
    settings.budget_unit = "epochs"
    settings.base_configs["rnn"]["train"]["lr_schedule"] = "cosine"
    assert study.continue_short_run(settings, tmp_path, spec) is None
    assert not (tmp_path / spec.name).exists()
    settings.base_configs["rnn"]["train"]["lr_schedule"] = "inverse_sqrt"
    assert study.continue_short_run(settings, tmp_path, spec) == "rnn-dot-soft-s1"
    assert "stopped_by" not in read_json(tmp_path / spec.name / "metrics.json")
    assert not (tmp_path / spec.name / "result.json").exists()
    assert study.continue_short_run(settings, tmp_path, spec) is None  # started already


def test_runs_share_tokenizers_and_settings(tiny_study):
    runs = planned_runs(tiny_study.study_dir)
    for name in ("source.model", "target.model"):
        contents = {(tiny_study.study_dir / run / name).read_bytes() for run in runs}
        assert len(contents) == 1
    configs = [read_json(tiny_study.study_dir / run / "config.json") for run in runs]
    for config in configs:
        for section, key in (("model", "score"), ("model", "attention_mode"),
                             ("train", "seed"), ("train", "epochs")):
            config[section].pop(key)
    assert all(config == configs[0] for config in configs)


def test_results_table_shows_mean_and_spread_of_the_runs_files(tiny_study):
    study_dir, runs = tiny_study.study_dir, planned_runs(tiny_study.study_dir)
    rows = table_with(tiny_study.document, "seeds")
    one_budget = [name for name in runs if "-x" not in name]
    assert [(r["architecture"], r["score"].strip("`"), r["mode"]) for r in rows] == \
        list(dict.fromkeys(tuple(name.split("-")[:3]) for name in one_budget))
    for row in rows:
        setting = f"{row['architecture']}-{row['score'].strip('`')}-{row['mode']}"
        members = [study_dir / f"{setting}-s{seed}" for seed in SEEDS]
        assert int(row["seeds"]) == len(members)
        figures = {
            "best val BLEU": [val_bleu(run) for run in members],
            "test BLEU": [read_json(run / "result.json")["bleu"] for run in members],
            "test chrF": [read_json(run / "result.json")["chrf"] for run in members],
        }
        for column, values in figures.items():
            mean, low, high = mean_and_range(row[column])
            for shown, value in ((mean, statistics.fmean(values)), (low, min(values)),
                                 (high, max(values))):
                assert close(str(shown), value, 2), column
        results = [read_json(run / "result.json") for run in members]
        assert close(row["entropy (nats)"],
                     statistics.fmean(r["attention_entropy"] for r in results), 3)
        assert close(row["max weight"],
                     statistics.fmean(r["max_attention_weight"] for r in results), 3)


def speed(run_dir: Path) -> float:
    epochs = read_json(run_dir / "metrics.json")["epochs"]
    return sum(e["tokens"] for e in epochs) / sum(e["train_seconds"] for e in epochs)


def test_runs_table_has_every_runs_speed_and_the_long_table_its_baseline(tiny_study):
    study_dir, runs = tiny_study.study_dir, planned_runs(tiny_study.study_dir)
    rows = table_with(tiny_study.document, "note")
    assert [row["run"].strip("`") for row in rows] == runs
    speeds = {name: speed(study_dir / name) for name in runs}
    for row in rows:
        name = row["run"].strip("`")
        assert close(row["train tokens/s"], speeds[name], 0)
        siblings = [speeds[other] for other in runs if other != name and
                    other.split("-")[:3] == name.split("-")[:3]]
        slow = bool(siblings) and speeds[name] < 0.75 * statistics.median(siblings)
        assert (row["note"] != "") == slow
    (long,) = table_with(tiny_study.document, "test BLEU change")
    name = long["run"].strip("`")
    assert name == runs[-1]
    members = [study_dir / f"{name.rsplit('-s', 1)[0]}-s{seed}" for seed in SEEDS]
    baseline = statistics.fmean(read_json(run / "result.json")["bleu"] for run in members)
    assert mean_and_range(long["one-budget test BLEU"])[0] == pytest.approx(baseline, abs=0.005)
    change = read_json(study_dir / name / "result.json")["bleu"] - baseline
    assert close(long["test BLEU change"], change, 2)
    assert long["budget"] == f"{EPOCHS * LONG_FACTOR} epochs"


def test_document_names_settings_figures_and_regeneration(tiny_study):
    text = tiny_study.document.read_text(encoding="utf-8")
    assert f"--report-only --study-dir {tiny_study.study_dir}" in text
    assert f"tensorboard --logdir {tiny_study.study_dir}" in text
    assert f"Budget: {EPOCHS} epoch per run" in text
    assert "The rnn's `constant` schedule depends on the step alone" in text
    assert "a longer rnn run goes on from its seed's one-budget run" in text
    assert "## Validation BLEU over epochs" in text
    assert f"its first {TEST_LIMIT} sentences" in text
    assert "Seeds: 1, 2" in text
    for name in ("curves.png", "sentence-1.png", "sentence-2.png", "sentence-3.png"):
        assert f"](attention-study/{name})" in text
    assert "## Discussion" in text and "**Hard attention, rnn `" in text
    assert "**Longer budget.**" in text
    assert "Unfinished" not in text


def test_figures_are_small_readable_pngs(tiny_study):
    folder = tiny_study.docs_dir / "attention-study"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["curves.png", "sentence-1.png", "sentence-2.png", "sentence-3.png"]
    for name in names:
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < 200_000
        pixels = image.imread(path)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
        assert float(np.std(pixels[..., :3])) > 0.01  # not blank


def test_rerun_regenerates_the_same_document_without_training(tiny_study, monkeypatch):
    document = tiny_study.document.read_text(encoding="utf-8")
    figures = {p.name: p.read_bytes() for p in (tiny_study.docs_dir / "attention-study").iterdir()}
    weights = weight_times(tiny_study.study_dir)
    calls = spy(monkeypatch)
    assert study.main(tiny_study.args) == 0
    assert study.main(["--report-only", "--study-dir", str(tiny_study.study_dir),
                       "--docs-dir", str(tiny_study.docs_dir)]) == 0
    assert calls == Calls()
    assert tiny_study.document.read_text(encoding="utf-8") == document
    assert {p.name: p.read_bytes()
            for p in (tiny_study.docs_dir / "attention-study").iterdir()} == figures
    assert weight_times(tiny_study.study_dir) == weights


def test_the_command_keeps_tensorflows_start_up_lines_off_the_terminal(tiny_study):
    """`python -m nmt.study` evaluating a run again: its stderr holds the study's own lines,
    none of TensorFlow's native start-up ones ("Could not find cuda drivers", ...)."""
    run = tiny_study.study_dir / "rnn-dot-soft-s1"
    before = read_json(run / "result.json")
    (run / "result.json").unlink()
    done = subprocess.run([sys.executable, "-m", "nmt.study", *tiny_study.args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rnn-dot-soft-s1: evaluating on" in done.stderr
    assert read_json(run / "result.json")["bleu"] == before["bleu"]
    native = [line for line in done.stderr.splitlines()
              if re.match(r"[IWE]\d{4} ", line) or "cuda" in line.lower()
              or "oneDNN" in line or "absl" in line]
    assert native == [], done.stderr


def test_two_workers_train_the_study_each_on_one_cpu(tmp_path, multi30k_dir):
    """`--workers 2` through the command: every run trained once (its lock would stop a
    second trainer, and a failed worker fails the study), by a worker pinned to one CPU
    with its own log prefix; the document shows the CPUs."""
    config = tiny_config().save(tmp_path / "tiny.json")
    study_dir, docs_dir = tmp_path / "study", tmp_path / "docs"
    done = subprocess.run(
        [sys.executable, "-m", "nmt.study", "--data-dir", str(multi30k_dir), "--config",
         str(config), "--architectures", "rnn", "--epochs", "1", "--study-dir", str(study_dir),
         "--docs-dir", str(docs_dir), "--scores", *SCORES, "--seeds", "1", "--hard-top", "0",
         "--long-top", "0", "--test-limit", "10", "--quiet", "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for score in SCORES:
        run = study_dir / f"rnn-{score}-soft-s1"
        assert read_json(run / "result.json")["machine"]["cpus_used"] == 1
        assert [e["epoch"] for e in read_json(run / "metrics.json")["epochs"]] == [1]
    assert re.search(r"^\[worker [12]\] \[\d/2\] rnn-dot-soft-s1: training for 1 epoch",
                     done.stderr, re.MULTILINE), done.stderr
    runs = table_with(docs_dir / "attention-study.md", "CPUs")
    assert [row["CPUs"] for row in runs] == ["1", "1"]


def test_deleted_result_is_evaluated_again_without_training(tiny_study, monkeypatch):
    run = tiny_study.study_dir / "rnn-general-soft-s1"
    before = read_json(run / "result.json")
    weights = weight_times(tiny_study.study_dir)
    (run / "result.json").unlink()
    calls = spy(monkeypatch)
    assert study.main(tiny_study.args) == 0
    assert calls == Calls(train=[], evaluate=["rnn-general-soft-s1"])
    after = read_json(run / "result.json")
    assert (after["bleu"], after["chrf"], after["examples"]) == \
        (before["bleu"], before["chrf"], before["examples"])
    assert weight_times(tiny_study.study_dir) == weights


def test_interrupted_training_is_resumed_from_its_checkpoint(tiny_study, monkeypatch):
    """A run killed during training has metrics.json without `stopped_by` and no result."""
    run = tiny_study.study_dir / "rnn-dot-soft-s2"
    metrics = read_json(run / "metrics.json")
    metrics.pop("stopped_by")
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (run / "result.json").unlink()
    calls = spy(monkeypatch)
    assert study.main(tiny_study.args) == 0
    assert calls == Calls(train=["rnn-dot-soft-s2"], evaluate=["rnn-dot-soft-s2"])
    resumed = read_json(run / "metrics.json")
    # Its epochs were done: train() resumed from the checkpoint and trained no new epoch.
    assert resumed["epochs"] == metrics["epochs"]
    assert resumed["stopped_by"] == "epochs"


# ------------------------------------------------------------------ refused input
def test_other_settings_are_refused_with_a_way_out(tiny_study, capsys):
    args = [*tiny_study.args]
    args[args.index("--epochs") + 1] = "2"
    assert study.main(args) == 2
    error = capsys.readouterr().err
    assert "--epochs/--budget: study has 1.0, requested 2.0" in error
    assert "--study-dir" in error
    args[args.index("--epochs"):args.index("--epochs") + 2] = ["--budget", "1"]
    assert study.main(args) == 2
    assert "--epochs/--budget: study has 'epochs', requested 'minutes'" in \
        capsys.readouterr().err
    assert study.main([*tiny_study.args, "--seeds", "1"]) == 2
    assert "--seeds: study has [1, 2], requested [1]" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--scores", "dot", "nope"], "unknown attention score 'nope'"),
    (["--scores", "dot", "--hard-top", "2"], "--hard-top: expected 0..1"),
    (["--budget", "0"], "--budget: expected > 0 minutes"),
    (["--epochs", "0"], "--epochs: expected a whole number >= 1"),
    (["--seeds", "1", "1"], "--seeds: expected distinct values"),
    (["--long-factor", "1"], "--long-factor: expected > 1"),
    (["--test-limit", "0"], "--test-limit: expected >= 1"),
    (["--data-dir", "no/such/dir"], "--data-dir no/such/dir: no such directory"),
    (["--workers", "0"], "--workers 0: give 1 or more"),
    (["--config", "no/such.json"], "config file not found: no/such.json"),
    (["--transformer-config", "configs/attention-study.json"],
     "--transformer-config configs/attention-study.json: expected a config with "
     "model.architecture 'transformer', received 'rnn'"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, options, message):
    assert study.main(["--study-dir", str(tmp_path / "s"), "--docs-dir", str(tmp_path / "d"),
                       *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_architectures_must_share_the_data_section(tmp_path, capsys):
    from nmt.config import Config

    other = Config.load(REPO / "configs" / "attention-study-transformer.json")
    other.data.src_vocab_size = 3000
    path = other.save(tmp_path / "transformer.json")
    assert study.main(["--study-dir", str(tmp_path / "s"), "--transformer-config",
                       str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--transformer-config {path}: its data section differs from --config" in err


def test_report_only_needs_a_study(tmp_path, capsys):
    assert study.main(["--report-only", "--study-dir", str(tmp_path)]) == 2
    assert "no study in" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [[], ["--report-only"], ["--dry-run"]])
def test_a_first_edition_study_is_refused_in_one_line(tmp_path, capsys, mode):
    first = {"settings": {"base_config": {"model": {}, "data": {}, "train": {}},
                          "budget": 7.0, "scores": ["dot"], "hard_top": 1,
                          "config_file": "configs/attention-study.json"},
             "data_dir": None, "created": "2026-11-01T10:00:00"}
    (tmp_path / "study.json").write_text(json.dumps(first), encoding="utf-8")
    assert study.main([*mode, "--study-dir", str(tmp_path), "--docs-dir",
                       str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "written by the first edition" in lines[0] and "new --study-dir" in lines[0]


def test_dry_run_prints_the_plan_and_its_time_without_tensorflow(tmp_path):
    code = ("import sys\nfrom nmt import study\n"
            f"code = study.main(['--dry-run', '--study-dir', {str(tmp_path / 's')!r}])\n"
            "assert code == 0, code\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras')], 'TensorFlow was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["todo", "4", "epochs", "rnn-dot-soft-s1234"]
    assert sum("-soft-s" in line and "x3" not in line for line in lines) == 20
    assert sum("-hard-s" in line for line in lines) == 8
    assert sum("-x3" in line and "12 epochs" in line for line in lines) == 5
    # 43 budgets of 4 epochs at the guessed minutes per epoch, plus start-up and evaluation;
    # the RNN's longer runs (inverse_sqrt) go on from their 4-epoch runs: 8 epochs each.
    per_run = {arch: (study_plan.STARTUP_SECONDS + fixed + 500 * each) / 60
               for arch, (fixed, each) in study_plan.EVALUATION_SECONDS.items()}
    minutes = sum(runs * (4 * factor * study_plan.EPOCH_MINUTES[arch] + per_run[arch])
                  for arch, runs, factor in (("rnn", 14, 1), ("transformer", 14, 1),
                                             ("rnn", 3, 2), ("transformer", 2, 3)))
    found = re.search(r"about ([\d.]+) hours left \((\d+) minutes", lines[-1])
    assert int(found.group(2)) == round(minutes)
    assert "minutes per epoch: rnn 2.4 (a 2-core AVX2 machine's" in lines[-1]
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


# ------------------------------------------------------- plan, picks, slow runs (fake runs)
def fake_settings(hard_top: int = 1, long_top: int = 1) -> StudySettings:
    """Two architectures, three scores, two seeds; no heatmap sentences (fake runs have
    no examples)."""
    from nmt.config import Config

    bases = {arch: Config.from_dict({"model": {"architecture": arch, "layers": 2,
                                               "model_dim": 32, "heads": 2}}).to_dict()
             for arch in ("rnn", "transformer")}
    return StudySettings(base_configs=bases, budget=2.0, scores=["dot", "general", "additive"],
                         hard_top=hard_top, seeds=[1, 2], long_top=long_top, long_factor=3.0,
                         test_limit=10, sentences=[])


HEADS = {"head_max_weight": [[0.9, 0.3], [0.5, 0.55]],
         "head_entropy": [[0.2, 2.0], [1.0, 0.9]]}


def write_fake_run(study_dir: Path, spec: RunSpec, bleu: float, speed: float = 1000.0,
                   head_shift: float = 0.0, cpus: int | None = None) -> None:
    """metrics.json and result.json as a finished run leaves them (two epochs); `cpus`: the
    CPUs its worker was pinned to (None: a run of an older study, which had the machine)."""
    run = study_dir / spec.name
    run.mkdir(parents=True, exist_ok=True)
    epochs = [{"epoch": e, "wall_time": 60.0 * e, "val_bleu": bleu - 2 + e, "tokens": speed * 30,
               "train_seconds": 30.0, "tokens_per_second": speed} for e in (1, 2)]
    metrics = {"parameters": 1000, "stopped_by": "time_budget", "epochs": epochs,
               "best": {"epoch": 2, "val_bleu": bleu}}
    result = {"architecture": spec.architecture, "score": spec.score, "mode": spec.mode,
              "seed": spec.seed, "budget_factor": spec.factor, "bleu": bleu + 1.0,
              "chrf": 50.0 + bleu, "attention_entropy": 1.0, "max_attention_weight": 0.5,
              "sentences_per_second": 10.0, "examples": [], "bleu_signature": "bleu-sig",
              "chrf_signature": "chrf-sig",
              "machine": {"cpu": "test cpu", "cores": 2, "tensorflow": "2",
                          **({"cpus_used": cpus} if cpus else {})}}
    if spec.architecture == "transformer":
        result.update({key: [[v + head_shift for v in layer] for layer in table]
                       for key, table in HEADS.items()})
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (run / "result.json").write_text(json.dumps(result), encoding="utf-8")


SOFT_BLEU = {  # (architecture, score) -> validation BLEU of seeds 1 and 2
    ("rnn", "dot"): (20.0, 22.0), ("rnn", "general"): (23.0, 19.0),  # a tie: dot by name
    ("rnn", "additive"): (18.0, 18.0), ("transformer", "dot"): (10.0, 10.0),
    ("transformer", "general"): (12.0, 13.0), ("transformer", "additive"): (25.0, 5.0),
}
HARD_BLEU = {("rnn", "dot"): (30.0, 28.0), ("transformer", "additive"): (1.0, 1.0)}


def fake_study(study_dir: Path, settings: StudySettings, slow: str = "") -> None:
    """Every soft and hard run of `fake_settings()`; the run named `slow` at 1/10 speed."""
    for table, mode in ((SOFT_BLEU, "soft"), (HARD_BLEU, "hard")):
        for (arch, score), values in table.items():
            for seed, bleu in zip(settings.seeds, values, strict=True):
                spec = RunSpec(arch, score, mode, seed)
                write_fake_run(study_dir, spec, bleu, 100.0 if spec.name == slow else 1000.0,
                               head_shift=0.02 * seed)


def names(specs) -> list[str]:
    return [spec.name for spec in specs]


def test_plan_is_seed_major_and_picks_hard_and_long_runs_per_architecture(tmp_path):
    settings = fake_settings()
    soft = [f"{arch}-{score}-soft-s{seed}" for seed in (1, 2)
            for arch in ("rnn", "transformer") for score in ("dot", "general", "additive")]
    assert names(study_plan.plan(settings, tmp_path)) == soft
    fake_study(tmp_path, settings)
    # An architecture's hard runs come once its own soft runs are finished, not the other's.
    (tmp_path / "transformer-dot-soft-s2" / "result.json").unlink()
    assert names(study_plan.plan(settings, tmp_path)) == soft + ["rnn-dot-hard-s1",
                                                                 "rnn-dot-hard-s2"]
    assert [run.name for run in study_plan.outline(settings, tmp_path)][len(soft) + 2:] == [
        "transformer-<soft #1>-hard-s1", "transformer-<soft #1>-hard-s2",
        "<best #1 overall>-s1-x3", "rnn-additive-soft-s1-x3 (unless among the best)",
        "transformer-additive-soft-s1-x3 (unless among the best)"]
    write_fake_run(tmp_path, RunSpec("transformer", "dot", "soft", 2), 10.0)
    (tmp_path / "transformer-additive-hard-s2" / "result.json").unlink()
    # Hard picks by mean validation BLEU per architecture: rnn dot and general tie (21.0)
    # and the name decides; transformer additive (15.0) beats general (12.5).
    assert study_plan.hard_scores(settings, tmp_path) == {"rnn": ["dot"],
                                                          "transformer": ["additive"]}
    hard = ["rnn-dot-hard-s1", "transformer-additive-hard-s1", "rnn-dot-hard-s2",
            "transformer-additive-hard-s2"]
    assert names(study_plan.plan(settings, tmp_path)) == soft + hard  # no long runs yet
    write_fake_run(tmp_path, RunSpec("transformer", "additive", "hard", 2), 1.0)
    # Long runs: the best setting overall (rnn dot hard, 29.0), then additive soft of each
    # architecture, first seed, 3 budgets.
    assert names(study_plan.plan(settings, tmp_path)) == soft + hard + [
        "rnn-dot-hard-s1-x3", "rnn-additive-soft-s1-x3", "transformer-additive-soft-s1-x3"]
    wider = fake_settings(hard_top=2, long_top=3)
    assert study_plan.hard_scores(wider, tmp_path) == {
        "rnn": ["dot", "general"], "transformer": ["additive", "general"]}
    finished = study_plan.plan(settings, tmp_path)[:16]  # every soft and hard run
    assert study_plan.long_settings(wider, tmp_path, finished) == [
        ("rnn", "dot", "hard"), ("rnn", "dot", "soft"), ("rnn", "general", "soft"),
        ("rnn", "additive", "soft"), ("transformer", "additive", "soft")]
    assert study_plan.plan(fake_settings(long_top=0), tmp_path)[-1].mode == "hard"


def test_run_config_sets_seed_budget_and_architecture():
    settings = fake_settings()
    config = study_runs.run_config(settings, RunSpec("transformer", "cosine", "hard", 2, 3.0),
                                   "data/dir")
    assert (config.model.architecture, config.model.score, config.model.attention_mode,
            config.train.seed, config.train.time_budget, config.data.data_dir) == (
        "transformer", "cosine", "hard", 2, 6.0, "data/dir")
    assert RunSpec("rnn", "additive", "soft", 1234).name == "rnn-additive-soft-s1234"
    assert RunSpec("rnn", "additive", "soft", 1234, 3.0).name == "rnn-additive-soft-s1234-x3"


def test_a_budget_in_epochs_trains_whole_epochs_without_a_clock():
    settings = fake_settings()
    settings.budget, settings.budget_unit = 4.0, "epochs"
    config = study_runs.run_config(settings, RunSpec("rnn", "dot", "soft", 1, 3.0), None)
    assert (config.train.epochs, config.train.time_budget) == (12, None)
    assert settings.budget_text() == "4 epochs" and settings.budget_text(0.2) == "1 epoch"
    settings.budget_unit = "minutes"
    assert settings.budget_text(3.0, short=True) == "12 min"
    assert study_runs.run_config(settings, RunSpec("rnn", "dot", "soft", 1),
                                 None).train.time_budget == 4.0


def test_minutes_per_epoch_come_from_the_studys_runs_once_there_are_some(tmp_path):
    settings = fake_settings()
    settings.budget_unit = "epochs"
    guessed = {"rnn": study_plan.EPOCH_MINUTES["rnn"],
               "transformer": study_plan.EPOCH_MINUTES["transformer"]}
    assert study_plan.epoch_minutes(settings, tmp_path) == (guessed, set())
    write_fake_run(tmp_path, RunSpec("rnn", "dot", "soft", 1), 20.0)  # 2 epochs in 2 minutes
    assert study_plan.epoch_minutes(settings, tmp_path) == ({**guessed, "rnn": 1.0}, {"rnn"})
    write_fake_run(tmp_path, RunSpec("transformer", "dot", "soft", 1), 20.0)
    assert study_plan.epoch_minutes(settings, tmp_path) == ({"rnn": 1.0, "transformer": 1.0},
                                                            {"rnn", "transformer"})


def test_a_run_is_slow_below_three_quarters_of_its_siblings_median():
    key, other = ("rnn", "dot", "soft"), ("rnn", "dot", "hard")
    speeds = {"a": (key, 1000.0), "b": (key, 1400.0), "c": (key, 700.0), "d": (other, 10.0),
              "e": (("t", "x", "soft"), 750.0), "f": (("t", "x", "soft"), 1000.0)}
    # c: siblings 1000 and 1400, median 1200, 700 < 900; e: exactly 0.75 x 1000 is not slow;
    # d has no sibling.
    assert study_stats.slow_runs(speeds) == {"c": 1200.0}


def test_speeds_compare_only_between_runs_on_as_many_cpus(tmp_path):
    settings = fake_settings()
    fake_study(tmp_path, settings)
    # rnn-dot-soft-s2 trained beside another worker on one CPU at 60 % of its sibling's
    # speed: no slower than a one-CPU run should be, so not flagged; at 40 % of another
    # one-CPU run's speed it is.
    write_fake_run(tmp_path, RunSpec("rnn", "dot", "soft", 2), 22.0, speed=600.0, cpus=1)
    assert study_plan.slow_run_names(settings, tmp_path) == {}
    write_fake_run(tmp_path, RunSpec("rnn", "dot", "soft", 1), 20.0, speed=1500.0, cpus=1)
    assert study_plan.slow_run_names(settings, tmp_path) == {"rnn-dot-soft-s2": 1500.0}
    rows = [study_rows.run_row(tmp_path / spec.name) for spec in study_plan.soft_runs(settings)
            if spec.architecture == "rnn"]
    assert sorted(row.cpus for row in rows) == [1, 1, 2, 2, 2, 2]
    text = study_discussion._speed(study_rows.settings_of(rows))
    # The speed paragraph compares the four two-CPU runs (general and additive) only.
    assert text.startswith("**Speed (rnn, the 4 runs on 2 CPUs).**")
    assert "1,000" in text and "1,500" not in text and "600" not in text
    setup = "\n".join(study_report._setup_lines(settings, rows))
    assert "pinned to 1 or 2 of the machine's cores" in setup


def test_a_slow_run_is_marked_for_a_rerun_only_when_the_budget_is_in_minutes():
    slow_run = run("dot", speed=1000.0)
    minutes = fake_settings()
    epochs = dataclasses.replace(minutes, budget=4.0, budget_unit="epochs")
    slow = {slow_run.name: 3000.0}
    assert study_report.run_cells(slow_run, minutes, slow)[-1].endswith("rerun it")
    assert study_report.run_cells(slow_run, epochs, slow)[-1] == \
        "slow: trained slower than its siblings (the same model, later)"
    assert study_report.run_cells(slow_run, epochs, {})[-1] == ""


def test_a_worker_takes_the_runs_no_other_worker_claimed(tmp_path, monkeypatch):
    from nmt.locking import folder_lock

    rnn = {"rnn": fake_settings().base_configs["rnn"]}
    settings = StudySettings(base_configs=rnn, budget=2.0, scores=["dot", "general"], hard_top=0,
                             seeds=[1], long_top=0, test_limit=10, sentences=[])
    dot, general = RunSpec("rnn", "dot", "soft", 1), RunSpec("rnn", "general", "soft", 1)
    trained, waits = [], []

    def train_and_evaluate(settings, study_dir, data_dir, progress, spec, specs, test):
        trained.append(spec.name)
        write_fake_run(study_dir, spec, 20.0)

    def other_worker_finishes(seconds):  # meanwhile, the other worker finishes its run
        waits.append(seconds)
        write_fake_run(tmp_path, dot, 20.0)

    monkeypatch.setattr(study, "_train_and_evaluate", train_and_evaluate)
    monkeypatch.setattr(study.time, "sleep", other_worker_finishes)
    with folder_lock(tmp_path, "run", "test", study_runs.CLAIM_FILE + dot.name):
        study.work_through_plan(settings, tmp_path, None, False, wait_seconds=7.0)
    assert trained == [general.name] and waits == [7.0]
    assert all(study_runs.finished(tmp_path / spec.name) for spec in (dot, general))


def test_setup_text_names_each_architectures_schedule_and_which_longer_runs_continue():
    settings = fake_settings()
    settings.budget_unit = "epochs"
    settings.base_configs["rnn"]["train"]["lr_schedule"] = "inverse_sqrt"
    settings.base_configs["transformer"]["train"]["lr_schedule"] = "cosine"
    lines = " ".join(study_report._setup_lines(settings, []))
    assert "The rnn's `inverse_sqrt` schedule depends on the step alone" in lines
    assert "The transformer's cosine schedule anneals over exactly the run's epochs" in lines
    assert "a longer rnn run goes on from its seed's one-budget run" in lines
    assert "a longer transformer run trains afresh" in lines
    settings.base_configs["rnn"]["train"]["lr_schedule"] = "cosine"
    lines = " ".join(study_report._setup_lines(settings, []))
    assert "The rnn's cosine schedule anneals" in lines and "goes on from" not in lines
    settings.budget_unit = "minutes"
    lines = " ".join(study_report._setup_lines(settings, []))
    assert "of wall time per run" in lines and "schedule depends" not in lines


def test_setup_text_says_which_architecture_trains_in_bfloat16_and_with_xla():
    settings = fake_settings()
    settings.base_configs["rnn"]["train"].update(mixed_precision=False, jit_compile=True)
    settings.base_configs["transformer"]["train"].update(mixed_precision=True, jit_compile=False)
    rnn, transformer = study_report._setup_lines(settings, [])[:2]
    assert rnn.startswith("- rnn:") and transformer.startswith("- transformer:")
    assert "token batches, XLA." in rnn and "bfloat16" not in rnn
    assert "token batches, bfloat16 mixed precision." in transformer and "XLA" not in transformer


def test_report_of_two_architectures_from_fake_runs(tmp_path):
    settings = fake_settings()
    study_dir, docs = tmp_path / "study", tmp_path / "docs"
    fake_study(study_dir, settings, slow="transformer-general-soft-s2")
    study_runs.write_study(study_dir, settings, None)
    for spec in study_plan.plan(settings, study_dir)[-3:]:
        write_fake_run(study_dir, spec, 40.0)
    document = study_report.write_report(study_dir, docs)
    rows = table_with(document, "seeds")
    assert len(rows) == 8 and {row["architecture"] for row in rows} == {"rnn", "transformer"}
    general = next(r for r in rows if (r["architecture"], r["score"]) ==
                   ("transformer", "`general`"))
    assert mean_and_range(general["best val BLEU"]) == (12.5, 12.0, 13.0)
    assert mean_and_range(general["test BLEU"]) == (13.5, 13.0, 14.0)
    notes = {r["run"].strip("`"): r["note"] for r in table_with(document, "note")}
    assert [name for name, note in notes.items() if note] == ["transformer-general-soft-s2"]
    heads = table_with(document, "head 1")
    first = next(r for r in heads if (r["score"], r["mode"], r["layer"]) ==
                 ("`dot`", "soft", "1"))
    # Means over seeds 1 and 2 of the fake statistics (shifted by 0.02 and 0.04).
    assert first["head 1"] == "0.93 / 0.23" and first["head 2"] == "0.33 / 2.03"
    assert len(table_with(document, "test BLEU change")) == 3
    text = document.read_text(encoding="utf-8")
    assert "some heads align while others spread" in text
    assert "**Slow runs.** `transformer-general-soft-s2`" in text
    assert "**Quality (rnn).**" in text and "**Quality (transformer).**" in text


def test_rerun_slow_moves_the_slow_run_aside_and_deletes_nothing(tmp_path, monkeypatch):
    settings = fake_settings()
    study_dir = tmp_path / "study"
    fake_study(study_dir, settings, slow="rnn-dot-hard-s1")
    study_runs.write_study(study_dir, settings, None)
    for spec in study_plan.plan(settings, study_dir)[-3:]:
        write_fake_run(study_dir, spec, 40.0)
    before = {p.relative_to(study_dir): p.read_bytes() for p in study_dir.rglob("*")
              if p.is_file() and p.name != "study.json"}
    planned = []
    monkeypatch.setattr(study, "work_through_plan", lambda settings, folder, *args:
                        planned.append(names(study_plan.plan(settings, folder))))
    assert study.main(["--rerun-slow", "--study-dir", str(study_dir), "--docs-dir",
                       str(tmp_path / "docs")]) == 0
    moved = study_dir / "rnn-dot-hard-s1.slow-1"
    assert not (study_dir / "rnn-dot-hard-s1").exists() and moved.is_dir()
    after = {p.relative_to(study_dir): p.read_bytes() for p in study_dir.rglob("*")
             if p.is_file() and p.name not in ("study.json", ".lock")}
    renamed = {Path(moved.name, *k.parts[1:]) if k.parts[0] == "rnn-dot-hard-s1" else k: v
               for k, v in before.items()}
    assert after == renamed  # every file kept, byte for byte
    assert "rnn-dot-hard-s1" in planned[0]  # the study trains it again
    (study_dir / "rnn-dot-hard-s1").mkdir()
    assert study_plan.set_aside(study_dir / "rnn-dot-hard-s1").name == \
        "rnn-dot-hard-s1.slow-2"
    assert moved.is_dir()


def test_rerun_slow_is_refused_when_the_budget_is_in_epochs(tiny_study, capsys):
    before = weight_times(tiny_study.study_dir)
    assert study.main([*tiny_study.args, "--rerun-slow"]) == 2
    error = capsys.readouterr().err
    assert "--rerun-slow: the study in" in error and "1 epoch, so a slow run" in error
    assert weight_times(tiny_study.study_dir) == before
    assert not list(tiny_study.study_dir.glob("*.slow-*"))


def test_head_statistics_are_attention_statistics_per_layer_and_head():
    rng = np.random.default_rng(0)
    heads = [rng.dirichlet(np.ones(5), size=(2, 3, 4)), None,
             rng.dirichlet(np.ones(7), size=(2, 3, 6))]  # [layers, heads, tt, ts]; one empty
    stats = study.head_statistics(heads)
    for layer in range(2):
        for head in range(3):
            rows = [row for h in heads if h is not None for row in h[layer, head]]
            entropy = np.mean([-(row * np.log(row)).sum() for row in rows])
            assert stats["head_entropy"][layer][head] == pytest.approx(entropy, rel=1e-4)
            assert stats["head_max_weight"][layer][head] == pytest.approx(
                np.mean([row.max() for row in rows]), rel=1e-5)


# --------------------------------------------------------------------- discussion
def run(score: str, mode: str = "soft", bleu: float = 30.0, seed: int = 1,
        speed: float = 3000.0, max_weight: float = 0.5, entropy: float = 1.0,
        arch: str = "rnn") -> RunRow:
    return RunRow(f"{arch}-{score}-{mode}-s{seed}", arch, score, mode, seed, 1.0, 1000, speed,
                  3, 3, bleu, bleu, 50.0, entropy, max_weight, 100.0, [(60.0, bleu)], {})


def setting(score: str, bleus, mode: str = "soft", **figures) -> SettingRow:
    runs = [run(score, mode, bleu, seed + 1, **figures) for seed, bleu in enumerate(bleus)]
    return SettingRow("rnn", score, mode, runs)


def test_discussion_names_a_winner_only_beyond_the_seeds_spread():
    tie = study_discussion._quality([setting("dot", [30.0, 31.0]),
                                     setting("general", [30.8, 31.6])])
    assert "no single winner" in tie and "leads" not in tie
    lead = study_discussion._quality([setting("dot", [30.0, 30.2]),
                                      setting("general", [31.0, 31.2])])
    assert "`general` leads the next score, `dot`, by 1.00 BLEU" in lead
    one_seed = study_discussion._quality([setting("dot", [30.0]), setting("general", [30.3])])
    assert "no single winner" in one_seed  # one seed: the 0.5 BLEU threshold stands in
    assert "by 1.20 BLEU" in study_discussion._quality([setting("dot", [30.0]),
                                                        setting("general", [31.2])])


def test_discussion_of_sharpness_speed_and_hard_attention():
    soft = [setting("dot", [30.0, 30.0], max_weight=0.40, entropy=1.5, speed=3000),
            setting("cosine", [30.0, 30.0], max_weight=0.70, entropy=0.8, speed=2000)]
    assert "`cosine` aligns sharpest" in study_discussion._sharpness(soft)
    assert "`dot` trains fastest" in study_discussion._speed(soft)
    # A run flagged slow (a busy machine) does not count: cosine's fast seed decides.
    mixed = [soft[0], SettingRow("rnn", "cosine", "soft", [
        run("cosine", seed=1, speed=1000.0), run("cosine", seed=2, speed=3600.0)])]
    text = study_discussion._speed(mixed, slow={"rnn-cosine-soft-s1"})
    assert text.startswith("**Speed (rnn, without the 1 slow run).** `cosine` trains fastest")
    same = study_discussion._sharpness([setting("dot", [30.0], max_weight=0.50),
                                        setting("cosine", [30.0], max_weight=0.52)])
    assert "about equally sharply" in same
    hard = study_discussion._hard_cost(setting("dot", [28.0, 28.2], "hard", speed=2950,
                                               max_weight=1.0, entropy=0.0), soft)
    assert "loses 1.90 mean test BLEU" in hard


def test_heatmap_sentences_are_fixed_and_of_moderate_length(multi30k_dir):
    from nmt.data import load_split

    sources, _ = load_split("multi30k", "test_2016_flickr", "de", "en",
                            data_dir=multi30k_dir, progress=False)
    for index in study_runs.HEATMAP_SENTENCES:
        assert 8 <= len(sources[index].split()) <= 20
    assert re.search(r"^Ein Mann in einer Weste", sources[study_runs.HEATMAP_SENTENCES[0]])


def test_setup_describes_the_base_configs_architecture():
    old = {"embedding_dim": 128, "encoder_layers": 1, "encoder_units": 128,
           "decoder_layers": 1, "decoder_units": 256}  # a config from before issue 21
    assert study_report._architecture(old) == (
        "embeddings 128, bidirectional GRU encoder 1×2×128, GRU decoder 1×256")
    assert "LSTM decoder 1×256" in study_report._architecture({**old, "cell": "lstm"})
    transformer = {"architecture": "transformer", "layers": 3, "model_dim": 256, "heads": 4,
                   "ffn_dim": 1024}
    assert study_report._architecture(transformer) == (
        "pre-layer-norm Transformer, 3 encoder and 3 decoder layers of 256 features, 4 heads, "
        "feed-forward 1024")
