"""Tests of training (`nmt.training.train`) and of the `train.py` command line.

Most checks read the shared `tiny_run` (3 epochs on 1,500 real Multi30k pairs). Runs of
their own are trained only where a test needs one: resume after a finished run, resume
after a SIGKILL, the time budget, and a plain-text corpus given on the command line.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf

from nmt import data as corpus_data
from nmt.attention import SCORES
from nmt.cli import train as train_cli
from nmt.config import Config
from nmt.model import Seq2Seq
from nmt.pipeline import Buckets, make_dataset, tokenize_corpus
from nmt.training import cosine_rate, train
from nmt.translator import Translator
from tests.helpers import (
    MULTI30K,
    REPO,
    checkpoint_values,
    read_metrics,
    tiny_config,
)

RUN_FILES = ["config.json", "source.model", "target.model", "best.weights.h5",
             "last.weights.h5", "metrics.json"]
RECORD_KEYS = ["epoch", "loss", "val_bleu", "val_chrf", "tokens_per_second", "wall_time"]


def script_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def temporary_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if ".tmp" in p.name or "_temp" in p.name
            or p.name.endswith(".part")]


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture(scope="module")
def valid_text(multi30k_dir):
    return corpus_data.load_split("multi30k", "val", "de", "en", data_dir=multi30k_dir)


# ======================================================================= command line
def test_help_documents_every_option():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, env=script_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    flags = [flag for _, _, flag, _, _ in train_cli.OPTIONS]
    assert len(flags) == len(set(flags)) > 30
    for flag in [*flags, "--config", "--run-dir", "--resume"]:
        assert flag in result.stdout, f"{flag} missing from --help"
    # --score's choices are SCORES, read without importing nmt.attention (TensorFlow)
    assert train_cli.score_names() == list(SCORES)
    assert f"--score {{{','.join(SCORES)}}}" in result.stdout
    # the defaults shown are the config dataclasses'; no "None", no dotted metavars
    assert "(default: None)" not in result.stdout and "MODEL." not in result.stdout
    for title in ("run:", "data:", "model:", "training:"):
        assert f"\n{title}\n" in result.stdout
    help_text = " ".join(result.stdout.split())
    for section, name, flag, _, _ in train_cli.OPTIONS:
        default = getattr(getattr(Config(), section), name)
        if default is not None:
            assert f"(default: {default})" in help_text.split(flag, 2)[-1], flag


PROBE = ("import sys\nfrom nmt.cli.train import main\ntry:\n    code = main(sys.argv[1:])\n"
         "except SystemExit as exit_:\n    code = exit_.code\n"
         "print('tensorflow' in sys.modules)\nsys.exit(code)\n")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--score", "foo"], "invalid choice: 'foo'"),
    (["--attention-mode", "soft-ish"], "invalid choice: 'soft-ish'"),
    (["--epochs", "two"], "invalid int value: 'two'"),
    (["--config", "no-such-config.json"], "config file not found: no-such-config.json"),
])
def test_bad_arguments_fail_before_tensorflow_loads(argv, fragment):
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, env=script_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == "False\n"  # TensorFlow was never imported
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_script_reports_bad_input_in_one_line(tmp_path):
    train_src = write_lines(tmp_path / "train.de", ["Ein Hund.", "Zwei Katzen.", "Ein Haus."])
    train_tgt = write_lines(tmp_path / "train.en", ["A dog.", "Two cats."])
    argv = ["--train-src", str(train_src), "--train-tgt", str(train_tgt),
            "--valid-src", str(train_src), "--valid-tgt", str(train_src),
            "--run-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=script_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "3 lines" in errors[0] and "2 lines" in errors[0]
    assert result.stderr.rstrip().endswith(errors[0])


def _plain_text_argv(tmp_path: Path, train_src: Path | None = None,
                     train_tgt: Path | None = None) -> list[str]:
    good_src = write_lines(tmp_path / "good.de", ["Ein Hund läuft.", "Zwei Katzen."])
    good_tgt = write_lines(tmp_path / "good.en", ["A dog runs.", "Two cats."])
    return ["--train-src", str(train_src or good_src), "--train-tgt", str(train_tgt or good_tgt),
            "--valid-src", str(good_src), "--valid-tgt", str(good_tgt)]


def case_missing_file(tmp_path):
    missing = tmp_path / "missing.de"
    return _plain_text_argv(tmp_path, train_src=missing), ["not found", str(missing)]


def case_line_counts(tmp_path):
    src = write_lines(tmp_path / "five.de", [f"Satz {i}." for i in range(5)])
    tgt = write_lines(tmp_path / "four.en.gz", [f"Sentence {i}." for i in range(4)])
    return _plain_text_argv(tmp_path, src, tgt), [str(src), str(tgt), "5 lines", "4 lines"]


def case_undecodable(tmp_path):
    src = tmp_path / "latin1.de"
    src.write_bytes("Ein Hund.\nZwei Kätzchen.\nEin Haus.\n".encode("latin-1"))
    tgt = write_lines(tmp_path / "three.en", ["A dog.", "Two kittens.", "A house."])
    return _plain_text_argv(tmp_path, src, tgt), [str(src), "line 2", "UTF-8"]


def case_empty_file(tmp_path):
    src = write_lines(tmp_path / "empty.de", [])
    return _plain_text_argv(tmp_path, train_src=src), [str(src), "empty"]


def case_only_blank_lines(tmp_path):
    src = write_lines(tmp_path / "blank.de", ["", "   "])
    tgt = write_lines(tmp_path / "blank.en", ["A dog.", ""])
    return _plain_text_argv(tmp_path, src, tgt), ["training corpus", "no non-empty"]


def case_corrupted_data_dir(tmp_path):
    copy_dir = tmp_path / "mirror"
    copy_dir.mkdir()
    for name in ("train.de.gz", "train.en.gz", "val.de.gz", "val.en.gz"):
        shutil.copy(MULTI30K / name, copy_dir / name)
    corrupted = copy_dir / "train.en.gz"  # the second file read: train.de.gz passes first
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    sums = (MULTI30K / "SHA256SUMS").read_text().split()
    expected = sums[sums.index("train.en.gz") - 1]
    actual = hashlib.sha256(bytes(data)).hexdigest()
    return (["--src", "de", "--tgt", "en", "--data-dir", str(copy_dir)],
            ["checksum", str(corrupted), expected, actual])


def case_subword_sampling_out_of_range(tmp_path):
    return (["--data-dir", str(MULTI30K), "--subword-sampling", "1.5"],
            ["train.subword_sampling", "1.5"])


def case_subword_sampling_with_distribute(tmp_path):
    return (["--data-dir", str(MULTI30K), "--subword-sampling", "0.2", "--distribute",
             "mirrored"], ["--subword-sampling", "--distribute"])


def case_ema_decay_out_of_range(tmp_path):
    return (["--data-dir", str(MULTI30K), "--ema-decay", "1.0"], ["train.ema_decay", "1.0"])


def case_ema_decay_with_distribute(tmp_path):
    return (["--data-dir", str(MULTI30K), "--ema-decay", "0.999", "--distribute", "mirrored"],
            ["--ema-decay", "--distribute"])


def case_unknown_config_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"epochs": 1, "epoch_count": 3}}))
    return ["--config", str(path)], ["unknown config field", "train", "epoch_count"]


def case_config_not_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"train": {"epochs": 1,}}')
    return ["--config", str(path)], [str(path), "not valid JSON"]


def case_config_missing(tmp_path):
    path = tmp_path / "nowhere.json"
    return ["--config", str(path)], ["config file not found", str(path)]


def case_config_is_a_list(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    return ["--config", str(path)], ["expected an object", "[1, 2]"]


def case_config_is_a_list_and_a_flag_is_given(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    return ["--config", str(path), "--epochs", "2"], ["expected an object", "[1, 2]"]


def case_config_section_is_not_an_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"train": 5}')
    return ["--config", str(path), "--epochs", "2"], ["train", "expected an object", "5"]


def case_config_not_utf8(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"train": {"epochs": 1}} \xff')
    return ["--config", str(path)], [str(path)]


def case_config_bad_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train: {epochs: 1\n")
    return ["--config", str(path)], [str(path)]


def case_resume_without_run(tmp_path):
    return ["--data-dir", str(MULTI30K), "--resume"], ["--resume", "no run to resume"]


@pytest.mark.parametrize("case", [
    case_missing_file, case_line_counts, case_undecodable, case_empty_file,
    case_only_blank_lines, case_corrupted_data_dir,
    case_unknown_config_field, case_config_not_json, case_config_missing,
    case_config_is_a_list, case_resume_without_run,
    case_config_is_a_list_and_a_flag_is_given, case_config_section_is_not_an_object,
    case_config_not_utf8, case_config_bad_yaml, case_subword_sampling_out_of_range,
    case_subword_sampling_with_distribute, case_ema_decay_out_of_range,
    case_ema_decay_with_distribute,
], ids=lambda case: case.__name__.removeprefix("case_"))
def test_bad_input_gives_one_line_error(case, tmp_path, capsys):
    argv, expected = case(tmp_path)
    code = train_cli.main([*argv, "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0]


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"epochs": 1, "batch_tokens": 777},
                                "model": {"score": "additive"}}))
    args = train_cli.build_parser().parse_args(["--config", str(path), "--epochs", "2",
                                                "--dropout", "0.3"])
    config = train_cli.config_from_args(args)
    assert config.train.epochs == 2  # flag beats file
    assert config.train.batch_tokens == 777  # file beats default
    assert config.model.score == "additive"
    assert config.model.dropout == 0.3  # flag beats default
    assert config.train.learning_rate == Config().train.learning_rate
    saved = config.save(tmp_path / "run" / "config.json")
    assert json.loads(saved.read_text())["train"]["epochs"] == 2
    assert Config.load(saved) == config


# ========================================================================= tiny run
def test_run_directory_holds_everything(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "resume" / "checkpoint").is_file()
    assert list((tiny_run / "resume").glob("ckpt-3.index"))
    assert list((tiny_run / "logs").rglob("events.out.tfevents.*"))
    assert temporary_files(tiny_run) == []
    saved = Config.load(tiny_run / "config.json")
    assert saved.train.epochs == 3
    assert saved.model.src_vocab_size == Translator.load(tiny_run).source_tokenizer.vocab_size


def test_every_file_of_the_run_directory_is_readable_by_other_users(tiny_run):
    # Another user serves the checkpoint: no private (0600) config, metrics or tokenizers.
    umask = os.umask(0)
    os.umask(umask)
    for path in tiny_run.rglob("*"):
        if path.is_file() and path.name != ".lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_weight_files_hold_no_optimizer_state(tiny_run):
    # Optimizer state lives in resume/ only; best/last weights are what a release ships.
    for name in ("best.weights.h5", "last.weights.h5"):
        with h5py.File(tiny_run / name, "r") as weights:
            assert "optimizer" not in weights, name
            assert "encoder" in weights and "attention" in weights


def test_metrics_has_a_record_per_epoch(tiny_run):
    metrics = read_metrics(tiny_run)
    records = metrics["epochs"]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for record in records:
        for key in RECORD_KEYS:
            assert np.isfinite(record[key]), (key, record)
        assert record["tokens_per_second"] > 0
        assert 0.0 <= record["val_bleu"] <= 100.0 and 0.0 <= record["val_chrf"] <= 100.0
        # how sharp the validation translations' attention is (nmt.callbacks.attention_logs)
        assert 0.0 <= record["val_attention_entropy"] <= np.log(64), record
        assert 0.0 < record["val_attention_max"] <= 1.0, record
    wall = [r["wall_time"] for r in records]
    assert wall == sorted(wall) and wall[0] > 0
    assert metrics["stopped_by"] == "epochs"
    assert metrics["batches_per_epoch"] >= 1 and 0 < metrics["padding_fraction"] < 1


def test_training_loss_goes_down(tiny_run):
    losses = [r["loss"] for r in read_metrics(tiny_run)["epochs"]]
    assert losses[-1] < losses[0] - 0.3, losses


def test_best_record_is_the_first_epoch_with_the_highest_bleu(tiny_run):
    metrics = read_metrics(tiny_run)
    records = metrics["epochs"]
    best = max(records, key=lambda r: (r["val_bleu"], -r["epoch"]))
    assert metrics["best"] == best
    # best.weights.h5 is a copy of last.weights.h5 exactly when the best epoch is the last.
    best_model = Translator.load(tiny_run).model
    last_model = Translator.load(tiny_run, weights="last.weights.h5").model
    same = all(np.array_equal(a, b) for a, b in zip(best_model.get_weights(),
                                                    last_model.get_weights(), strict=True))
    assert same == (best["epoch"] == records[-1]["epoch"])


def test_tensorboard_logs_hold_the_validation_scores(tiny_run):
    logged: dict[str, dict[int, float]] = {}
    for path in (tiny_run / "logs" / "validation").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if not value.HasField("tensor"):
                    logged.setdefault(value.tag, {})[event.step] = value.simple_value
                    continue
                array = tf.make_ndarray(value.tensor)
                if array.ndim == 0 and array.dtype.kind == "f":  # not nmt.summaries' images, text
                    logged.setdefault(value.tag, {})[event.step] = float(array)
    records = read_metrics(tiny_run)["epochs"]
    for key, tag in (("val_bleu", "epoch_bleu"), ("val_chrf", "epoch_chrf"),
                     ("val_loss", "epoch_loss"),
                     ("val_attention_entropy", "epoch_attention_entropy")):
        assert tag in logged, sorted(logged)
        np.testing.assert_allclose([logged[tag][r["epoch"] - 1] for r in records],
                                   [r[key] for r in records], rtol=1e-5, atol=1e-6)


def test_loaded_model_equals_a_model_built_by_hand(tiny_run, valid_text):
    translator = Translator.load(tiny_run)
    config = Config.load(tiny_run / "config.json")
    by_hand = Seq2Seq(config.model)
    by_hand.build()
    by_hand.load_weights(tiny_run / "best.weights.h5")
    untrained = Seq2Seq(config.model)
    untrained.build()

    source, target_in = translator.teacher_forcing_batch(valid_text[0][:8], valid_text[1][:8])
    logits, _ = translator.model((source, target_in), training=False)
    expected, _ = by_hand((source, target_in), training=False)
    fresh, _ = untrained((source, target_in), training=False)

    assert logits.shape == (8, target_in.shape[1], config.model.tgt_vocab_size)
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(logits.numpy(), fresh.numpy(), atol=1e-3)


def test_last_weights_reproduce_the_logged_validation_loss(tiny_run, valid_text):
    translator = Translator.load(tiny_run, weights="last.weights.h5")
    config = translator.config
    d = config.data
    valid = tokenize_corpus(valid_text[0][:d.valid_limit], valid_text[1][:d.valid_limit],
                            translator.source_tokenizer, translator.target_tokenizer,
                            d.max_length)
    buckets = Buckets.from_budget(config.train.bucket_boundaries, d.max_length,
                                  config.train.batch_tokens)
    model = translator.model
    model.label_smoothing = config.train.label_smoothing
    model.compile(jit_compile=False)
    result = model.evaluate(make_dataset(valid, buckets, shuffle=False), verbose=0,
                            return_dict=True)
    last = read_metrics(tiny_run)["epochs"][-1]
    assert result["tokens"] == last["val_tokens"]
    assert result["loss"] == pytest.approx(last["val_loss"], rel=1e-5)


def test_translations_are_deterministic_across_loads(tiny_run, valid_text):
    sources = valid_text[0][:12]
    runs = []
    for _ in range(2):
        translator = Translator.load(tiny_run)
        for beam in (1, 3):
            results = translator.translate(sources, beam=beam)
            runs.append([(r.text, round(r.score, 5)) for r in results])
    assert runs[0] == runs[2] and runs[1] == runs[3]
    assert any(text for text, _ in runs[0])


# =========================================================================== resume
@pytest.fixture(scope="module")
def resumed(tmp_path_factory, multi30k_dir):
    """A fresh 1-epoch run, then the same run directory trained to 2 epochs."""
    run_dir = tmp_path_factory.mktemp("resumed")
    first = copy.deepcopy(train(tiny_config(epochs=1), run_dir, progress=False))
    after_first = checkpoint_values(run_dir)
    second = train(tiny_config(epochs=2), run_dir, progress=False)
    return run_dir, first, after_first, second


def test_resume_continues_at_the_next_epoch(resumed):
    run_dir, first, after_first, second = resumed
    assert [r["epoch"] for r in first["epochs"]] == [1]
    assert [r["epoch"] for r in second["epochs"]] == [1, 2]
    assert second["epochs"][0] == first["epochs"][0]
    assert read_metrics(run_dir)["epochs"] == second["epochs"]
    assert Config.load(run_dir / "config.json").train.epochs == 2
    assert second["epochs"][1]["wall_time"] > first["epochs"][0]["wall_time"]


def test_resume_restores_model_and_optimizer_state(resumed):
    run_dir, first, after_first, second = resumed
    steps = second["batches_per_epoch"]
    assert after_first == {"epoch": 1, "steps": steps}
    assert checkpoint_values(run_dir) == {"epoch": 2, "steps": 2 * steps}
    # From scratch, epoch 2 would repeat the first epoch (loss about 5.45).
    assert second["epochs"][1]["loss"] < first["epochs"][0]["loss"] - 0.3


@pytest.fixture(scope="module")
def fresh_process_run(tmp_path_factory, multi30k_dir):
    """A one-epoch `train.py` run in a process of its own (TensorFlow's global seed unset)."""
    folder = tmp_path_factory.mktemp("fresh")
    config_path = folder / "config.json"
    config_path.write_text(tiny_config(epochs=1).to_json())
    completed = subprocess.run(
        [sys.executable, "train.py", "--config", str(config_path), "--run-dir",
         str(folder / "run"), "--quiet"], cwd=REPO, env=script_env(), capture_output=True,
        text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return (folder / "run",)


@pytest.mark.parametrize("other, reference", [("resumed", "tiny_run"),
                                              ("killed", "fresh_process_run")])
def test_same_seed_gives_the_same_first_epoch(other, reference, request):
    # Fresh runs of tiny_config with different epoch counts: with tiny_config's constant
    # learning rate the epoch count cannot change epoch 1. The data order follows the config
    # seed (`nmt.pipeline.epoch_order`), whatever global seed earlier tests in this process
    # set; a resumed run continues the stream at its next epoch.
    run_dir = request.getfixturevalue(other)[0]
    reference_dir = request.getfixturevalue(reference)
    reference_dir = reference_dir if isinstance(reference_dir, Path) else reference_dir[0]
    expected = read_metrics(reference_dir)["epochs"][0]
    record = read_metrics(run_dir)["epochs"][0]
    assert record["tokens"] == expected["tokens"]
    assert np.isclose(record["loss"], expected["loss"], rtol=1e-5), (record, expected)
    assert np.isclose(record["val_loss"], expected["val_loss"], rtol=1e-5)
    for name in ("source.model", "target.model"):
        assert (run_dir / name).read_bytes() == (reference_dir / name).read_bytes()


@pytest.fixture(scope="module")
def killed(tmp_path_factory, multi30k_dir):
    """`train.py` (epochs=6) SIGKILLed once its first checkpoint exists, then resumed.

    Returns the run directory, its metrics right after the kill, whether the best weights
    loaded then, and the metrics of the resumed run (one epoch more than the kill left).
    """
    folder = tmp_path_factory.mktemp("killed")
    run_dir = folder / "run"
    config_path = folder / "config.json"
    config_path.write_text(tiny_config(epochs=6).to_json())
    log_path = folder / "stderr.txt"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "train.py", "--config", str(config_path), "--run-dir",
             str(run_dir), "--quiet"], cwd=REPO, env=script_env(), stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 240
            while not (run_dir / "resume" / "checkpoint").exists():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "no checkpoint after 240 s"
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL, log_path.read_text()
    after_kill = read_metrics(run_dir)
    checkpoint_after_kill = checkpoint_values(run_dir)
    Translator.load(run_dir)  # raises if best.weights.h5 were half written
    done = len(after_kill["epochs"])
    resumed_metrics = train(tiny_config(epochs=done + 1), run_dir, progress=False)
    return run_dir, after_kill, checkpoint_after_kill, resumed_metrics


def test_killed_run_left_a_consistent_checkpoint(killed):
    _, after_kill, checkpoint, _ = killed
    done = len(after_kill["epochs"])
    assert 1 <= done < 6  # killed during training, not after it
    assert [r["epoch"] for r in after_kill["epochs"]] == list(range(1, done + 1))
    assert checkpoint == {"epoch": done, "steps": done * after_kill["batches_per_epoch"]}


def test_killed_run_resumes_from_its_checkpoint(killed):
    run_dir, after_kill, _, metrics = killed
    done = len(after_kill["epochs"])
    assert [r["epoch"] for r in metrics["epochs"]] == list(range(1, done + 2))
    assert metrics["epochs"][:done] == after_kill["epochs"]
    assert checkpoint_values(run_dir) == {"epoch": done + 1,
                                          "steps": (done + 1) * metrics["batches_per_epoch"]}
    assert metrics["epochs"][-1]["wall_time"] > after_kill["epochs"][-1]["wall_time"]
    assert metrics["stopped_by"] == "epochs"


def test_killed_and_resumed_run_leaves_no_temporary_files(killed):
    run_dir = killed[0]
    assert temporary_files(run_dir) == []
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert Translator.load(run_dir).translate(["Ein Hund läuft."], beam=1)


# ====================================================================== other runs
def test_time_budget_stops_training_early(tmp_path):
    metrics = train(tiny_config(epochs=5, time_budget=0.05), tmp_path / "run", progress=False)
    assert metrics["stopped_by"] == "time_budget"
    assert 1 <= len(metrics["epochs"]) < 5
    assert metrics["wall_time"] >= 0.05 * 60
    assert read_metrics(tmp_path / "run")["stopped_by"] == "time_budget"
    assert (tmp_path / "run" / "best.weights.h5").is_file()


def test_subword_sampling_run_learns_with_epochs_of_fixed_length(tmp_path):
    """Re-cut batches each pass: the loss still falls, and every epoch is as many steps as
    a pass over the best segmentations (the endless sampled stream is cut by Keras)."""
    run_dir = tmp_path / "run"
    metrics = train(tiny_config(subword_sampling=0.2), run_dir, progress=False)
    losses = [epoch["loss"] for epoch in metrics["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.3
    assert checkpoint_values(run_dir) == {"epoch": 3, "steps": 3 * metrics["batches_per_epoch"]}
    assert Config.load(run_dir / "config.json").train.subword_sampling == 0.2
    assert np.isfinite(metrics["best"]["val_bleu"])


def test_cosine_rate_warms_up_then_follows_the_cosine():
    peak, floor = 3e-3, 0.02
    assert cosine_rate(peak, 10, 0, 0.0, floor) == pytest.approx(peak / 10)
    assert cosine_rate(peak, 10, 4, 0.9, floor) == pytest.approx(peak / 2)  # still warming up
    for progress in (0.0, 0.25, 0.5, 0.9, 1.0):
        expected = peak * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress)))
        assert cosine_rate(peak, 10, 50, progress, floor) == pytest.approx(expected)
    assert cosine_rate(peak, 10, 50, 1.7, floor) == pytest.approx(floor * peak)


def test_cosine_schedule_anneals_by_the_end_of_the_time_budget(tmp_path):
    config = tiny_config(epochs=1000, time_budget=0.2, lr_schedule="cosine", warmup_steps=5)
    metrics = train(config, tmp_path / "run", progress=False)
    rates = [epoch["learning_rate"] for epoch in metrics["epochs"]]
    # How many epochs fit in 12 s depends on the machine's load (one on a busy machine);
    # the schedule follows the clock, so the last rate is annealed either way.
    assert metrics["stopped_by"] == "time_budget" and rates
    assert all(later < earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert rates[-1] < 0.05 * config.train.learning_rate  # annealed although 1000 epochs


def test_plain_text_corpus_from_the_command_line(tmp_path, valid_text, capsys):
    source, target = corpus_data.load_split("multi30k", "train", "de", "en",
                                            data_dir=MULTI30K)
    files = {"train-src": write_lines(tmp_path / "train.de", source[:300]),
             "train-tgt": write_lines(tmp_path / "train.en.gz", target[:300]),
             "valid-src": write_lines(tmp_path / "valid.de", valid_text[0][:40]),
             "valid-tgt": write_lines(tmp_path / "valid.en", valid_text[1][:40])}
    settings = tiny_config(epochs=3, bucket_boundaries=[16, 32, 48, 64]).to_dict()
    settings["data"].update(data_dir=None, train_limit=None, max_length=64)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(settings))
    run_dir = tmp_path / "run"
    argv = ["--config", str(config_path), "--epochs", "1", "--run-dir", str(run_dir),
            "--quiet"]
    for flag, path in files.items():
        argv += [f"--{flag}", str(path)]

    code = train_cli.main(argv)

    assert code == 0, capsys.readouterr().err
    saved = Config.load(run_dir / "config.json")
    assert saved.train.epochs == 1  # the flag overrode the file's 3
    assert saved.data.train_tgt == str(files["train-tgt"])
    metrics = read_metrics(run_dir)
    assert [r["epoch"] for r in metrics["epochs"]] == [1]
    assert metrics["train_pairs"] + metrics["dropped_long_pairs"] + \
        metrics["dropped_empty_pairs"] == 300
    assert metrics["train_pairs"] > 150
    assert "run directory" in capsys.readouterr().err


# ------------------------------------------------------------------------- several corpora
TATOEBA = REPO.parent / "shared" / "corpora" / "tatoeba-deu-eng"


@pytest.fixture(scope="module")
def two_corpora_run(tmp_path_factory):
    """A tiny en-de model on Multi30k + Tatoeba (1,000 training pairs of each)."""
    config = tiny_config(epochs=2)
    config.data.corpus = "multi30k+tatoeba"
    config.data.src, config.data.tgt = "en", "de"
    config.data.data_dir = [f"multi30k={MULTI30K}", f"tatoeba={TATOEBA}"]
    config.data.train_limit, config.data.valid_limit = 1000, 60
    run_dir = tmp_path_factory.mktemp("two_corpora")
    train(config, run_dir, progress=False)
    return run_dir


def test_several_corpora_train_on_the_union_and_validate_each(two_corpora_run):
    metrics = read_metrics(two_corpora_run)
    assert metrics["train_pairs"] + metrics["dropped_long_pairs"] == 2000
    for record in metrics["epochs"]:
        bleus = [record["val_multi30k_bleu"], record["val_tatoeba_bleu"]]
        assert record["val_bleu"] == pytest.approx(np.mean(bleus))  # selection: the mean
        assert record["val_chrf"] == pytest.approx(
            np.mean([record["val_multi30k_chrf"], record["val_tatoeba_chrf"]]))
        for corpus in ("multi30k", "tatoeba"):
            assert record[f"val_{corpus}_loss"] > 0
            # loss = 0.9 nll + 0.1 uniform (label smoothing 0.1), so nll <= loss / 0.9
            ppl, loss = record[f"val_{corpus}_ppl"], record[f"val_{corpus}_loss"]
            assert 1 < ppl <= np.exp(loss / 0.9) * 1.001
    assert metrics["best"]["val_bleu"] == max(r["val_bleu"] for r in metrics["epochs"])
    translator = Translator.load(two_corpora_run)
    assert translator.config.data.corpus == "multi30k+tatoeba"
    # en -> de: the source side is cut with the English pieces, and the model learned
    (result,) = translator.translate(["A dog runs."], beam=1)
    assert "\u2581dog" in result.source_tokens and result.source_tokens[-1] == "</s>"
    assert result.attention.shape == (len(result.target_tokens), len(result.source_tokens))
    first, last = metrics["epochs"][0], metrics["epochs"][-1]
    for corpus in ("multi30k", "tatoeba"):
        assert last[f"val_{corpus}_loss"] < first[f"val_{corpus}_loss"]


def test_several_corpora_log_each_corpus_to_tensorboard(two_corpora_run):
    tags = set()
    for path in (two_corpora_run / "logs" / "validation").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_multi30k_bleu", "epoch_tatoeba_bleu", "epoch_multi30k_loss",
            "epoch_tatoeba_chrf", "epoch_bleu"} <= tags, sorted(tags)


def test_config_file_takes_a_list_of_corpora(tmp_path):
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"data": {"corpus": ["multi30k", "tatoeba"]}}), encoding="utf-8")
    args = train_cli.build_parser().parse_args(["--config", str(path), "--data-dir", "x=1"])
    config = train_cli.config_from_args(args)
    assert config.data.corpus == ["multi30k", "tatoeba"] and config.data.data_dir == "x=1"
    with pytest.raises(Exception, match="unknown corpus 'wmt'"):
        Config.from_dict({"data": {"corpus": "multi30k+wmt"}})
