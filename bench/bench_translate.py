#!/usr/bin/env python
"""Translation speed of a checkpoint on the 1,000 test_2016_flickr sentences.

    python bench/bench_translate.py --data-dir ../shared/corpora/multi30k

Greedy and beam 5, batch size 1 and 64, in sentences per second (after a warm-up pass),
and the wall time of `translate.py` translating one sentence from a cold start.
Writes bench/results/bench_translate.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, write_results  # noqa: E402

RELEASED = REPO / "checkpoints" / "multi30k-de-en"


def cold_start_seconds(checkpoint: Path, repeats: int = 3) -> float:
    """Best-of-N wall time of one `translate.py` call translating one sentence."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "translate.py"), "--checkpoint",
                        str(checkpoint), "Ein Mann fährt Fahrrad."], check=True,
                       capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return min(times)


def speed(translator, sentences: list[str], beam: int, batch_size: int) -> float:
    """Sentences per second over all `sentences`, after warming up every shape once."""
    translator.translate(sentences[: max(batch_size, 8)], beam=beam, batch_size=batch_size)
    start = time.perf_counter()
    translator.translate(sentences, beam=beam, batch_size=batch_size)
    return len(sentences) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(RELEASED))
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--limit", type=int, help="translate only the first N sentences")
    parser.add_argument("--cold-repeats", type=int, default=3,
                        help="cold starts to time (the best one is reported)")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)

    from nmt.data import load_split
    from nmt.translator import Translator

    translator = Translator.load(args.checkpoint)
    d = translator.config.data
    sources, _ = load_split("multi30k", "test_2016_flickr", d.src, d.tgt, d.cache_dir,
                            args.data_dir, progress=False)
    sources = sources[: args.limit]
    rows, runs = [], []
    for beam in (1, 5):
        for batch_size in (1, 64):
            rate = speed(translator, sources, beam, batch_size)
            runs.append({"beam": beam, "batch_size": batch_size, "sentences_per_second": rate})
            rows.append(["greedy" if beam == 1 else f"beam {beam}", batch_size, round(rate, 1)])
    cold = cold_start_seconds(Path(args.checkpoint), args.cold_repeats)
    rows.append(["cold start, 1 sentence (s)", 1, round(cold, 2)])
    payload = {"checkpoint": str(args.checkpoint), "sentences": len(sources), "runs": runs,
               "cold_start_seconds": cold}
    _, md_path = write_results("bench_translate", payload,
                               ["search", "batch size", "sentences/s"], rows,
                               Path(args.results_dir))
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
