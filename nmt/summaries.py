"""TensorBoard beyond Keras's scalars: every epoch, the attention heatmaps of a few fixed
validation sentences (images) and their translations (text); once, the run's
hyperparameters (the HParams plugin). `tensorboard --logdir DIR` then compares every run
under DIR side by side: scalars, pictures and settings.

Layout in a run directory (Keras's TensorBoard callback writes `logs/train` and
`logs/validation`):

    logs/                 hparams of the run (one HParams "session" per run)
    logs/validation/      epoch_bleu, epoch_chrf, ... (Keras) and, from here,
                          attention/sentence_N images and the translations text
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf

from nmt.callbacks import Validation
from nmt.config import Config

VALIDATION_LOGS = "validation"


def flat_hparams(config: Config) -> dict[str, bool | int | float | str]:
    """The config as HParams values: {"model.score": "dot", ...}; lists, dicts and None
    (which HParams cannot hold) as their JSON text."""
    flat = {}
    for section, values in config.to_dict().items():
        for name, value in values.items():
            if isinstance(value, bool | int | float | str):
                flat[f"{section}.{name}"] = value
            else:
                flat[f"{section}.{name}"] = json.dumps(value)
    return flat


def translations_markdown(samples: list) -> str:
    """A Markdown table of (Translation, reference) pairs: source, translation, reference."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| | source | translation | reference |", "|---|---|---|---|"]
    rows += [f"| {index + 1} | {cell(t.source)} | {cell(t.text)} | {cell(reference)} |"
             for index, (t, reference) in enumerate(samples)]
    return "\n".join(rows)


class AttentionSummaries(keras.callbacks.Callback):
    """Writes the hyperparameters when training starts and, after every validation, the
    heatmaps and translations of `validation.last_samples`. Put it after the callback
    that validates (`nmt.callbacks.RunKeeper`)."""

    def __init__(self, log_dir: Path, validation: Validation, config: Config, run_name: str):
        super().__init__()
        self.log_dir, self.validation = Path(log_dir), validation
        self.config, self.run_name = config, run_name
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, folder: str) -> tf.summary.SummaryWriter:
        if folder not in self._writers:
            self._writers[folder] = tf.summary.create_file_writer(str(self.log_dir / folder))
        return self._writers[folder]

    def on_train_begin(self, logs=None):
        from tensorboard.plugins.hparams import api as hparams

        with self._writer(".").as_default():
            hparams.hparams(flat_hparams(self.config), trial_id=self.run_name)
        self._writer(".").flush()

    def on_epoch_end(self, epoch, logs=None):
        samples = self.validation.last_samples
        if not samples:
            return
        from nmt.plotting import attention_png

        step = epoch + 1
        with self._writer(VALIDATION_LOGS).as_default(step=step):
            for index, (translation, _) in enumerate(samples):
                if not translation.target_tokens:
                    continue
                png = attention_png(translation.attention, translation.source_tokens,
                                    translation.target_tokens, title=f"epoch {step}")
                image = tf.io.decode_png(png, channels=3)[tf.newaxis]  # [1, h, w, 3]
                tf.summary.image(f"attention/sentence_{index + 1}", image)
            tf.summary.text("translations", translations_markdown(samples))
        self._writer(VALIDATION_LOGS).flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def summary_kinds(log_dir: Path) -> dict[str, set[str]]:
    """What the event files under `log_dir` hold: plugin name -> tags (for tests and
    checks; reads the files with TensorFlow's event reader)."""
    kinds: dict[str, set[str]] = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name or value.WhichOneof("value")
                kinds.setdefault(plugin, set()).add(value.tag)
    return kinds


__all__ = ["AttentionSummaries", "flat_hparams", "summary_kinds", "translations_markdown"]
