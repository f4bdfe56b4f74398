"""An exponential moving average of the weights (Polyak averaging) kept beside training.

After every training step each shadow copy moves towards its weight:
``shadow = d * shadow + (1 - d) * weight``, with ``d = min(decay, (1 + t) / (10 + t))`` at
step ``t`` (the warm-up of ``tf.train.ExponentialMovingAverage``), so early shadows are not
dominated by the random initialisation. Validation, the validation loss and the saved
``best``/``last`` weights use the average; training itself and the resume checkpoint keep
the raw weights, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf


class WeightAverage(keras.callbacks.Callback):
    """Keeps `decay`-averaged copies of a model's trainable weights; see the module doc."""

    def __init__(self, model: keras.Model, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), received {decay}")
        self.decay = decay
        self.weights = list(model.trainable_variables)
        self.shadows = [tf.Variable(tf.convert_to_tensor(w.value), trainable=False,
                                    name=f"average_{i}") for i, w in enumerate(self.weights)]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_updates")
        self._swapped = False

    def checkpoint_items(self) -> dict:
        """Everything a checkpoint must hold to resume the average."""
        return {"shadows": self.shadows, "updates": self.updates}

    @tf.function
    def update(self) -> None:
        """Move every shadow one step towards its weight."""
        t = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for shadow, weight in zip(self.shadows, self.weights, strict=True):
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(weight.value, shadow.dtype))
        self.updates.assign_add(1)

    def on_train_batch_end(self, batch, logs=None):
        self.update()

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; the raw ones come back after."""
        if self._swapped:  # nested inside another block: the average is already in place
            yield
            return
        raw = [w.numpy() for w in self.weights]
        for weight, shadow in zip(self.weights, self.shadows, strict=True):
            weight.assign(shadow)
        self._swapped = True
        try:
            yield
        finally:
            for weight, value in zip(self.weights, raw, strict=True):
                weight.assign(value)
            self._swapped = False

    # Keras evaluates the validation loss between the last step and on_epoch_end.
    def on_test_begin(self, logs=None):
        self._test_block = contextlib.ExitStack()
        self._test_block.enter_context(self.swapped())

    def on_test_end(self, logs=None):
        self._test_block.close()
