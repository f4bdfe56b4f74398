"""TensorBoard logs of a training run (nmt.summaries): per-epoch attention heatmaps and
translations of fixed validation sentences, and the run's hyperparameters, read back from
the event files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from nmt.config import Config
from nmt.summaries import flat_hparams, summary_kinds, translations_markdown
from nmt.translator import Translation
from tests.helpers import read_metrics


def events(log_dir: Path, tag: str) -> list:
    """(step, value) of every summary named `tag` under `log_dir`."""
    found = []
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            found += [(event.step, value) for value in event.summary.value if value.tag == tag]
    return found


def test_a_run_logs_heatmaps_translations_and_hparams(tiny_run):
    epochs = len(read_metrics(tiny_run)["epochs"])
    kinds = summary_kinds(tiny_run / "logs")
    assert {"attention/sentence_1", "attention/sentence_2", "attention/sentence_3"} <= \
        kinds["images"]
    assert "translations" in kinds["text"]
    assert "_hparams_/session_start_info" in kinds["hparams"]
    images = events(tiny_run / "logs", "attention/sentence_1")
    assert [step for step, _ in images] == list(range(1, epochs + 1))
    picture = tf.io.decode_image(tf.make_ndarray(images[-1][1].tensor)[2]).numpy()
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0
    (_, start), = events(tiny_run / "logs", "_hparams_/session_start_info")
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.HParamsPluginData.FromString(
        start.metadata.plugin_data.content).session_start_info
    saved = Config.load(tiny_run / "config.json")
    assert info.hparams["model.score"].string_value == saved.model.score
    assert info.hparams["train.batch_tokens"].number_value == saved.train.batch_tokens
    text = tf.make_ndarray(events(tiny_run / "logs", "translations")[-1][1].tensor)
    assert text.item().decode().startswith("| | source | translation | reference |")


def test_hparams_are_flat_scalars():
    config = Config.from_dict({"model": {"score": "additive"},
                               "train": {"bucket_boundaries": [8, 16]}})
    flat = flat_hparams(config)
    assert flat["model.score"] == "additive" and flat["train.bucket_boundaries"] == "[8, 16]"
    assert flat["data.train_limit"] == "null"
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


def test_hparams_name_what_the_attention_study_varies():
    """TensorBoard's HParams view tells the study's runs apart by these four values."""
    config = Config.from_dict({"model": {"architecture": "transformer", "score": "dot",
                                         "attention_mode": "hard", "layers": 2,
                                         "model_dim": 32, "heads": 2},
                               "train": {"seed": 2345}})
    flat = flat_hparams(config)
    assert (flat["model.architecture"], flat["model.score"], flat["model.attention_mode"],
            flat["train.seed"]) == ("transformer", "dot", "hard", 2345)


def test_translations_table_escapes_pipes():
    weights = np.ones((1, 1))
    sample = Translation("a | b", "c", ["▁a"], ["▁c"], weights, 0.0, 0.0)
    table = translations_markdown([(sample, "ref\nline")])
    assert table.splitlines()[-1] == "| 1 | a \\| b | c | ref line |"
