#!/usr/bin/env python
"""What storing a shipped model's weights in 16 bits changes: float32 run vs shipped model.

    python bench/bench_half.py --pair runs/de-en=de-en --pair runs/en-de=en-de \\
        --data-dir multi30k=../shared/corpora/multi30k \\
        --data-dir tatoeba=../shared/corpora/tatoeba-deu-eng

For each pair (a float32 run directory and the shipped model released from it by
`python -m nmt.release`), translates every test set of bench_quality with beam 5 and reports
how many translations differ and the BLEU of both. Writes bench/results/bench_half.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_quality import TEST_SETS  # noqa: E402
from bench.common import RESULTS, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", required=True,
                        help="RUN_DIR=SHIPPED: the float32 run and its 16-bit release (a shipped "
                             "model's name or a directory written by python -m nmt.release)")
    parser.add_argument("--data-dir", action="append", help="NAME=DIR, repeatable")
    parser.add_argument("--cache-dir", default="data")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)

    from nmt.data import data_dir_for, load_split
    from nmt.evaluation import corpus_scores
    from nmt.shipped import model_dir
    from nmt.translator import Translator

    runs, rows = [], []
    for pair in args.pair:
        run_dir, _, name = pair.partition("=")
        half_dir = Path(name) if Path(name).is_dir() else model_dir(name)
        full, half = Translator.load(run_dir), Translator.load(half_dir)
        name = half_dir.name
        d = full.config.data
        for corpus, split in TEST_SETS:
            folder = data_dir_for(args.data_dir, corpus, [c for c, _ in TEST_SETS])
            sources, references = load_split(corpus, split, d.src, d.tgt, args.cache_dir, folder,
                                             progress=False)
            outputs = [[t.text for t in model.translate(sources, beam=args.beam)]
                       for model in (full, half)]
            bleus = [corpus_scores(out, references)["bleu"] for out in outputs]
            differ = sum(a != b for a, b in zip(*outputs, strict=True))
            runs.append({"model": name, "test_set": f"{corpus} {split}",
                         "sentences": len(sources), "differ": differ, "bleu_float32": bleus[0],
                         "bleu_float16_weights": bleus[1]})
            rows.append([name, f"{corpus} {split}", len(sources), differ, round(bleus[0], 2),
                         round(bleus[1], 2)])
            print(rows[-1], file=sys.stderr, flush=True)
    _, md_path = write_results("bench_half", {"beam": args.beam, "runs": runs}, [
        "model", "test set", "sentences", "translations that differ", "BLEU float32",
        "BLEU float16 weights"], rows, Path(args.results_dir))
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
