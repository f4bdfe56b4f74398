#!/usr/bin/env python
"""Which Transformer cross-attention layer aligns like the RNN: the measurement behind
`model.alignment_layer` (issue 21).

    python bench/bench_alignment_layer.py --transformer checkpoints/RUN \\
        --rnn multi30k-de-en --data-dir multi30k=../shared/corpora/multi30k

Both models are teacher forced on the reference translations of a test set (so they see the
same target words), and every target word is aligned to the source word it attends to most
(`nmt.alignment.align`, subword weights merged into words). For each Transformer layer, the
head-average and each single head are scored by their agreement with the RNN: the share of
target words aligned to the same source word. Writes bench/results/bench_alignment_layer.*.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_results  # noqa: E402


def word_weights(weights: np.ndarray, source_pieces: list[str],
                 target_pieces: list[str]) -> np.ndarray:
    """Piece attention [..., tt, ts] merged into word attention [..., target words, source
    words] (`nmt.alignment.merge_subword_weights` on every leading index)."""
    from nmt.alignment import merge_subword_weights

    flat = weights.reshape(-1, *weights.shape[-2:])
    merged = [merge_subword_weights(matrix, source_pieces, target_pieces) for matrix in flat]
    return np.stack(merged).reshape(*weights.shape[:-2], *merged[0].shape)


def layer_agreements(heads: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Agreement counts [layers, 1 + heads, 2] of one sentence: column 0 is the layer's
    head-average, column 1 + h head h; the last axis is (target words aligned to the same
    source word as the reference, target words).

    Args:
        heads: [layers, heads, target words, source words] Transformer word attention.
        reference: [target words, source words] the RNN's word attention.
    """
    candidates = np.concatenate([heads.mean(axis=1, keepdims=True), heads], axis=1)
    agree = candidates.argmax(axis=-1) == reference.argmax(axis=-1)  # [layers, 1 + heads, tw]
    return np.stack([agree.sum(axis=-1), np.full(agree.shape[:2], agree.shape[-1])], axis=-1)


def teacher_forced(translator, sources: list[str], references: list[str]):
    """Per sentence: source pieces, target pieces (EOS dropped) and the model's attention,
    [layers, heads, tt, ts] for a Transformer, [tt, ts] otherwise."""
    import tensorflow as tf

    from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID

    source_ids, _ = translator.encode_sources(sources)
    target_ids = [row + [EOS_ID] for row in
                  translator.target_tokenizer.tokenize(tf.constant(references)).to_list()]
    width_s, width_t = max(map(len, source_ids)), max(map(len, target_ids))
    source = np.full((len(sources), width_s), PAD_ID, np.int32)
    target_in = np.full((len(sources), width_t), PAD_ID, np.int32)
    for row, (s, t) in enumerate(zip(source_ids, target_ids, strict=True)):
        source[row, :len(s)], target_in[row, 0], target_in[row, 1:len(t)] = s, BOS_ID, t[:-1]
    model = translator.model
    if hasattr(model, "attention_heads"):
        weights = model.attention_heads(source, target_in).numpy()
    else:
        weights = model((source, target_in), training=False)[1].numpy()
    for row, (s, t) in enumerate(zip(source_ids, target_ids, strict=True)):
        yield (translator.pieces(s[:-1]), translator.pieces(t[:-1], target=True),
               weights[row][..., :len(t) - 1, :len(s) - 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transformer", required=True, help="Transformer run directory")
    parser.add_argument("--rnn", default="multi30k-de-en", help="RNN run directory or "
                        "shipped model of the same direction (default: multi30k-de-en)")
    parser.add_argument("--data-dir", action="append", help="corpus folder as NAME=DIR")
    parser.add_argument("--cache-dir", default="data")
    parser.add_argument("--corpus", default="multi30k")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--limit", type=int, help="only the first N sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    from nmt.data import data_dir_for, load_split
    from nmt.translator import Translator

    transformer, rnn = Translator.load(args.transformer), Translator.load(args.rnn)
    d = transformer.config.data
    sources, references = load_split(args.corpus, args.split, d.src, d.tgt, args.cache_dir,
                                     data_dir_for(args.data_dir, args.corpus, [args.corpus]),
                                     progress=False)
    sources, references = sources[: args.limit], references[: args.limit]
    counts, skipped = 0, 0
    for start in range(0, len(sources), args.batch_size):
        batch = slice(start, start + args.batch_size)
        pairs = zip(teacher_forced(transformer, sources[batch], references[batch]),
                    teacher_forced(rnn, sources[batch], references[batch]), strict=True)
        for (source_pieces, target_pieces, heads), (rnn_source, rnn_target, reference) in pairs:
            # words, not pieces: the two models may cut a word into different pieces
            heads = word_weights(heads, source_pieces, target_pieces)
            reference = word_weights(reference, rnn_source, rnn_target)
            if heads.shape[-2:] != reference.shape:
                skipped += 1  # the two tokenizers disagree on where words start
                continue
            counts = counts + layer_agreements(heads, reference)
    shares = counts[..., 0] / np.maximum(counts[..., 1], 1)  # [layers, 1 + heads]
    rows = [[layer, round(100 * shares[layer, 0], 1),
             " ".join(f"{100 * s:.1f}" for s in shares[layer, 1:])]
            for layer in range(len(shares))]
    payload = {"transformer": transformer.name, "rnn": rnn.name,
               "test_set": f"{args.corpus} {args.split}", "sentences": len(sources),
               "skipped_sentences": skipped,
               "agreement_head_average": shares[:, 0].tolist(),
               "agreement_per_head": shares[:, 1:].tolist(),
               "best_layer": int(np.argmax(shares[:, 0]))}
    _, md_path = write_results("bench_alignment_layer", payload,
                               ["layer", "head-average agreement %", "per head %"], rows,
                               Path(args.results_dir))
    print(md_path.read_text())
    print(f"best layer: {payload['best_layer']} (set model.alignment_layer, or make it the "
          "default in nmt.transformer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
