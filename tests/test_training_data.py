"""nmt.training_data: preparing a run's data returns what it learned and leaves the config."""

from __future__ import annotations

import copy
import dataclasses

from nmt.training_data import make_batches, prepare_data, with_vocab_sizes
from tests.helpers import tiny_config


def test_prepare_data_returns_the_vocabulary_sizes_and_leaves_the_config(tmp_path):
    config = tiny_config()
    config.data.src_vocab_size, config.data.tgt_vocab_size = 500, 550
    before = copy.deepcopy(config)
    data = prepare_data(config, tmp_path)
    assert config == before  # nothing written back
    final = with_vocab_sizes(config, data)
    assert (final.model.src_vocab_size, final.model.tgt_vocab_size) == (
        data.source_tokenizer.vocab_size, data.target_tokenizer.vocab_size) == (500, 550)
    assert config == before and final.data == config.data and final.train == config.train
    assert dataclasses.replace(final.model, src_vocab_size=config.model.src_vocab_size,
                               tgt_vocab_size=config.model.tgt_vocab_size) == config.model
    final.validate()
    batches = make_batches(final, data)
    assert batches.steps == batches.buckets.batches_per_epoch(data.train.lengths,
                                                              drop_remainder=True) > 0
    assert 0.0 <= batches.padding < 1.0
