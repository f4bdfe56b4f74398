#!/usr/bin/env python
"""BLEU and chrF (sacrebleu, default signature) of a checkpoint on val and test_2016_flickr.

    python bench/bench_quality.py --data-dir ../shared/corpora/multi30k

Greedy and beam 5. Writes bench/results/bench_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, write_results  # noqa: E402
from nmt.config import DEFAULT_LENGTH_PENALTY  # noqa: E402

RELEASED = REPO / "checkpoints" / "multi30k-de-en"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(RELEASED))
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--limit", type=int, help="only the first N sentences of each split")
    parser.add_argument("--length-penalty", type=float,
                        default=DEFAULT_LENGTH_PENALTY)
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)

    from nmt.data import load_split
    from nmt.evaluation import corpus_scores
    from nmt.translator import Translator

    translator = Translator.load(args.checkpoint)
    d = translator.config.data
    rows, runs = [], []
    for split in ("val", "test_2016_flickr"):
        sources, references = load_split(d.corpus, split, d.src, d.tgt, d.cache_dir,
                                         args.data_dir, progress=False)
        sources, references = sources[: args.limit], references[: args.limit]
        for beam in (1, 5):
            hypotheses = [t.text for t in translator.translate(
                sources, beam=beam, alpha=args.length_penalty, batch_size=64)]
            scores = corpus_scores(hypotheses, references)
            runs.append({"split": split, "beam": beam, "sentences": len(sources), **scores})
            rows.append([split, "greedy" if beam == 1 else f"beam {beam}",
                         round(scores["bleu"], 2), round(scores["chrf"], 2)])
    payload = {"checkpoint": str(args.checkpoint), "length_penalty": args.length_penalty,
               "runs": runs, "bleu_signature": runs[-1]["bleu_signature"],
               "chrf_signature": runs[-1]["chrf_signature"]}
    _, md_path = write_results("bench_quality", payload, ["split", "search", "BLEU", "chrF"],
                               rows, Path(args.results_dir))
    print(md_path.read_text())
    print(f"BLEU signature: {payload['bleu_signature']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
