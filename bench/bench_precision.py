#!/usr/bin/env python
"""What XLA and bfloat16 change in the translations of every shipped model.

    python bench/bench_precision.py --data-dir ../shared/corpora/multi30k

For each model, translates test_2016_flickr (beam 5, batch 64, the CLI defaults) with the
plain float32 graph (the reference: the search as it ran before XLA) and with every
`--variants` setting (its dtype, XLA or not, and batch size: "bfloat16" is `--dtype
bfloat16` as translate.py runs it, which searches a batch of 64 in the plain graph and one
sentence with XLA, `nmt.compiled_search`); reports BLEU, how many translations differ from
the reference, and sentences/s (a second pass, after every batch shape was compiled in the
first). The idea of
bench_half.py, applied to the search instead of the stored weights. Writes
bench/results/bench_precision.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_results  # noqa: E402

MODELS = ("multi30k-de-en", "de-en", "en-de", "multi30k-de-en-transformer")  # every shipped one
REFERENCE = ("float32", False, 64)  # (dtype, XLA, batch size)
VARIANTS = {"float32-xla": ("float32", True, 64), "bfloat16": ("bfloat16", True, 64),
            "bfloat16-batch-1": ("bfloat16", True, 1), "bfloat16-no-xla": ("bfloat16", False, 64)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--variants", default="float32-xla,bfloat16,bfloat16-batch-1",
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--data-dir", help="local Multi30k folder")
    parser.add_argument("--limit", type=int, help="only the first N sentences")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant {unknown[0]}; expected one of {', '.join(VARIANTS)}")

    runs, rows = [], []
    for model in args.models.split(","):
        for run in measure_model(model, variants, args.data_dir, args.limit):
            runs.append(run)
            rows.append([model, run["setting"], run["batch_size"], run["sentences"], run["differ"],
                         round(run["bleu"], 2), f"{run['bleu_change']:+.3f}",
                         round(run["sentences_per_second"], 1)])
            print(rows[-1], file=sys.stderr, flush=True)
    _, md_path = write_results("bench_precision", {"beam": 5, "runs": runs}, [
        "model", "search", "batch", "sentences", "translations that differ", "BLEU", "BLEU change",
        "sentences/s"], rows, Path(args.results_dir))
    print(md_path.read_text())
    return 0


def measure_model(model: str, variants: list[str], data_dir: str | None,
                  limit: int | None) -> list[dict]:
    """The reference and every variant of one shipped model on test_2016_flickr."""
    from nmt.data import load_split
    from nmt.evaluation import corpus_scores
    from nmt.translator import Translator

    settings = {"float32-graph": REFERENCE, **{name: VARIANTS[name] for name in variants}}
    results = []
    for name, (dtype, xla, batch_size) in settings.items():
        translator = Translator.load(model, dtype=dtype, jit_compile=xla)
        d = translator.config.data
        sources, references = load_split("multi30k", "test_2016_flickr", d.src, d.tgt,
                                         d.cache_dir, data_dir, progress=False)
        sources, references = sources[:limit], references[:limit]
        texts = [t.text for t in translator.translate(sources, batch_size=batch_size)]
        start = time.perf_counter()
        translator.translate(sources, batch_size=batch_size)  # every shape compiled above
        speed = len(sources) / (time.perf_counter() - start)
        results.append({"setting": name, "dtype": dtype, "xla": xla,
                        "batch_size": batch_size, "texts": texts,
                        "sentences": len(sources), "sentences_per_second": speed,
                        "bleu": corpus_scores(texts, references)["bleu"]})
    reference = results[0]
    for result in results:
        result["differ"] = sum(a != b for a, b in zip(result["texts"], reference["texts"],
                                                      strict=True))
        result["bleu_change"] = result["bleu"] - reference["bleu"]
    return [{"model": model, **{k: v for k, v in r.items() if k != "texts"}} for r in results]


if __name__ == "__main__":
    sys.exit(main())
