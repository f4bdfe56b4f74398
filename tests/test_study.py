"""Tests of the attention study (`nmt.study`) on a tiny budget.

One study is shared by the module: two soft scores and one hard run of a few seconds each
on real Multi30k pairs, evaluated on 20 test sentences. It is first interrupted (Ctrl-C
while the second run is evaluated), then resumed; the tests read its runs and document,
and re-run it to check what is (not) redone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from nmt import study, study_report, study_runs
from tests.helpers import tiny_config

SCORES = ["dot", "general"]
BUDGET = "0.1"  # minutes per run
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
    args = ["--data-dir", str(multi30k_dir), "--config", str(config), "--budget", BUDGET,
            "--study-dir", str(study_dir), "--docs-dir", str(docs_dir), "--scores", *SCORES,
            "--hard-top", "1", "--test-limit", str(TEST_LIMIT), "--quiet"]
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


def expected_hard_score(study_dir: Path) -> str:
    """The soft score with the best validation BLEU, ties broken by name."""
    best = {s: read_json(study_dir / f"{s}-soft" / "metrics.json")["best"]["val_bleu"]
            for s in SCORES}
    return sorted(SCORES, key=lambda s: (-best[s], s))[0]


def planned_runs(study_dir: Path) -> list[str]:
    return [f"{s}-soft" for s in SCORES] + [f"{expected_hard_score(study_dir)}-hard"]


def table(document: Path) -> list[dict[str, str]]:
    """The results table of the document as one dict (header -> cell) per row."""
    lines = [line for line in document.read_text(encoding="utf-8").splitlines()
             if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


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
    assert runs[2] not in tiny_study.after_crash  # the hard run needs every soft result
    # Second session: the finished run untouched, the trained one only evaluated.
    assert tiny_study.resumed.train == [runs[2]]
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
        assert metrics["stopped_by"] == "time_budget"
        assert read_json(run / "config.json")["train"]["time_budget"] == float(BUDGET)
        score, mode = name.split("-")
        assert (result["score"], result["mode"], result["sentences"]) == (score, mode,
                                                                          TEST_LIMIT)
        assert len(result["examples"]) == 3
        if mode == "hard":
            assert result["attention_entropy"] == pytest.approx(0.0, abs=1e-6)
            assert result["max_attention_weight"] == pytest.approx(1.0)


def test_runs_share_tokenizers_and_settings(tiny_study):
    runs = planned_runs(tiny_study.study_dir)
    for name in ("source.model", "target.model"):
        contents = {(tiny_study.study_dir / run / name).read_bytes() for run in runs}
        assert len(contents) == 1
    configs = [read_json(tiny_study.study_dir / run / "config.json") for run in runs]
    for config in configs:
        config["model"].pop("score")
        config["model"].pop("attention_mode")
    assert all(config == configs[0] for config in configs)


def test_table_is_generated_from_the_runs_files(tiny_study):
    rows = table(tiny_study.document)
    assert [f"{r['score'].strip('`')}-{r['mode']}" for r in rows] == \
        planned_runs(tiny_study.study_dir)
    for row in rows:
        run = tiny_study.study_dir / f"{row['score'].strip('`')}-{row['mode']}"
        metrics, result = read_json(run / "metrics.json"), read_json(run / "result.json")
        epochs = metrics["epochs"]
        speed = sum(e["tokens"] for e in epochs) / sum(e["train_seconds"] for e in epochs)
        assert int(row["parameters"].replace(",", "")) == metrics["parameters"]
        assert int(row["epochs"]) == epochs[-1]["epoch"]
        expected = {
            "train tokens/s": (speed, 0), "best val BLEU": (metrics["best"]["val_bleu"], 2),
            "test BLEU": (result["bleu"], 2), "test chrF": (result["chrf"], 2),
            "entropy (nats)": (result["attention_entropy"], 3),
            "max weight": (result["max_attention_weight"], 3),
            "decode sent/s": (result["sentences_per_second"], 1),
        }
        for column, (value, decimals) in expected.items():
            shown = float(row[column].replace(",", ""))
            assert abs(shown - value) <= 0.5 * 10 ** -decimals + 1e-9, column


def test_document_names_settings_figures_and_regeneration(tiny_study):
    text = tiny_study.document.read_text(encoding="utf-8")
    assert f"--report-only --study-dir {tiny_study.study_dir}" in text
    assert f"{float(BUDGET):g} minutes of wall time per run" in text
    assert f"its first {TEST_LIMIT} sentences" in text
    for name in ("curves.png", "sentence-1.png", "sentence-2.png", "sentence-3.png"):
        assert f"](attention-study/{name})" in text
    assert "## Discussion" in text and "**Hard `" in text
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


def test_deleted_result_is_evaluated_again_without_training(tiny_study, monkeypatch):
    run = tiny_study.study_dir / "general-soft"
    before = read_json(run / "result.json")
    weights = weight_times(tiny_study.study_dir)
    (run / "result.json").unlink()
    calls = spy(monkeypatch)
    assert study.main(tiny_study.args) == 0
    assert calls == Calls(train=[], evaluate=["general-soft"])
    after = read_json(run / "result.json")
    assert (after["bleu"], after["chrf"], after["examples"]) == \
        (before["bleu"], before["chrf"], before["examples"])
    assert weight_times(tiny_study.study_dir) == weights


def test_interrupted_training_is_resumed_from_its_checkpoint(tiny_study, monkeypatch):
    """A run killed during training has metrics.json without `stopped_by` and no result."""
    run = tiny_study.study_dir / "dot-soft"
    metrics = read_json(run / "metrics.json")
    metrics.pop("stopped_by")
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (run / "result.json").unlink()
    calls = spy(monkeypatch)
    assert study.main(tiny_study.args) == 0
    assert calls == Calls(train=["dot-soft"], evaluate=["dot-soft"])
    resumed = read_json(run / "metrics.json")
    # The budget was spent: train() resumed from the checkpoint and trained no new epoch.
    assert resumed["epochs"] == metrics["epochs"]
    assert resumed["stopped_by"] == "time_budget"


# ------------------------------------------------------------------ refused input
def test_other_settings_are_refused_with_a_way_out(tiny_study, capsys):
    args = [*tiny_study.args]
    args[args.index("--budget") + 1] = "0.2"
    assert study.main(args) == 2
    error = capsys.readouterr().err
    assert "--budget: study has 0.1, requested 0.2" in error
    assert "--study-dir" in error


@pytest.mark.parametrize("options, message", [
    (["--scores", "dot", "nope"], "unknown attention score 'nope'"),
    (["--scores", "dot", "--hard-top", "2"], "--hard-top: expected 0..1"),
    (["--budget", "0"], "--budget: expected > 0 minutes"),
    (["--data-dir", "no/such/dir"], "--data-dir no/such/dir: no such directory"),
    (["--config", "no/such.json"], "config file not found: no/such.json"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, options, message):
    assert study.main(["--study-dir", str(tmp_path / "s"), "--docs-dir", str(tmp_path / "d"),
                       *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_report_only_needs_a_study(tmp_path, capsys):
    assert study.main(["--report-only", "--study-dir", str(tmp_path)]) == 2
    assert "no study in" in capsys.readouterr().err


# --------------------------------------------------------------------- discussion
def row(score: str, mode: str = "soft", bleu: float = 30.0, speed: float = 3000.0,
        max_weight: float = 0.5, entropy: float = 1.0) -> study_report.RunRow:
    return study_report.RunRow(f"{score}-{mode}", score, mode, 1000, speed, 3, 3, bleu, bleu, 50.0,
                        entropy, max_weight, 100.0, [(60.0, bleu)], {})


def test_discussion_names_a_winner_only_beyond_the_noise_threshold():
    tie = study_report._quality([row("dot", bleu=30.0), row("general", bleu=30.3)])
    assert "ties" in tie and "leads" not in tie
    lead = study_report._quality([row("dot", bleu=30.0), row("general", bleu=31.2)])
    assert "`general` leads the next score, `dot`, by 1.20 BLEU" in lead


def test_discussion_of_sharpness_speed_and_hard_attention():
    soft = [row("dot", max_weight=0.40, entropy=1.5, speed=3000),
            row("cosine", max_weight=0.70, entropy=0.8, speed=2000)]
    assert "`cosine` aligns sharpest" in study_report._sharpness(soft)
    assert "`dot` trains fastest" in study_report._speed(soft)
    same = study_report._sharpness([row("dot", max_weight=0.50), row("cosine", max_weight=0.52)])
    assert "about equally sharply" in same
    hard = study_report._hard_cost(row("dot", "hard", bleu=28.0, speed=2950, max_weight=1.0,
                                entropy=0.0), soft)
    assert "loses 2.00 test BLEU" in hard and "about the same" in hard


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
