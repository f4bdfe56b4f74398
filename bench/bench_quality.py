#!/usr/bin/env python
"""BLEU and chrF (sacrebleu, default signature) of every shipped model on every test set.

    python bench/bench_quality.py --data-dir multi30k=../shared/corpora/multi30k \\
        --data-dir tatoeba=../shared/corpora/tatoeba-deu-eng

Each model is scored, in its own direction, on Multi30k val and test_2016_flickr and on the
Tatoeba dev and test split, greedy and with the shipped beam (5). It also translates twelve
everyday sentences (every 167th pair of the Tatoeba test split: evenly spread over its
lengths, not picked by hand) with each model of that direction. Writes
bench/results/bench_quality.{json,md} and bench/results/bench_everyday.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_results  # noqa: E402
from nmt.config import DEFAULT_LENGTH_PENALTY  # noqa: E402

TEST_SETS = [("multi30k", "val"), ("multi30k", "test_2016_flickr"), ("tatoeba", "dev"),
             ("tatoeba", "test")]
EVERYDAY = 12  # sentences of the everyday table
EVERYDAY_STEP = 167  # every 167th pair of the Tatoeba test split (2,003 pairs: 0 ... 1,837)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="shipped model to score (repeatable; default: every one)")
    parser.add_argument("--checkpoint", action="append",
                        help="run directory to score instead (repeatable)")
    parser.add_argument("--data-dir", action="append",
                        help="local corpus folder as NAME=DIR, repeatable (no download)")
    parser.add_argument("--cache-dir", default="data", help="download cache")
    parser.add_argument("--limit", type=int, help="only the first N sentences of each set")
    parser.add_argument("--beams", default="1,5", help="beam sizes, comma-separated")
    parser.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY)
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other models' records of an earlier bench_quality.json "
                             "(rescore only the models given; the everyday table is left as "
                             "it is)")
    return parser


def model_directories(args: argparse.Namespace) -> list[Path]:
    from nmt.shipped import model_dir, shipped_models

    if args.checkpoint:
        return [Path(c) for c in args.checkpoint]
    return [model_dir(name) for name in (args.model or shipped_models())]


def score_model(translator, args, beams: list[int]) -> list[dict]:
    """One record per (test set, beam) in the model's direction."""
    from nmt.data import data_dir_for, load_split
    from nmt.evaluation import corpus_scores

    d, runs = translator.config.data, []
    for corpus, split in TEST_SETS:
        folder = data_dir_for(args.data_dir, corpus, [c for c, _ in TEST_SETS])
        sources, references = load_split(corpus, split, d.src, d.tgt, args.cache_dir, folder,
                                         progress=False)
        sources, references = sources[: args.limit], references[: args.limit]
        for beam in beams:
            hypotheses = [t.text for t in translator.translate(
                sources, beam=beam, alpha=args.length_penalty, batch_size=64)]
            scores = corpus_scores(hypotheses, references)
            runs.append({"model": translator.name, "direction": f"{d.src}-{d.tgt}",
                         "test_set": f"{corpus} {split}", "beam": beam,
                         "sentences": len(sources), **scores})
            print(f"{translator.name} {corpus} {split} beam {beam}: BLEU {scores['bleu']:.2f} "
                  f"chrF {scores['chrf']:.2f}", file=sys.stderr, flush=True)
    return runs


def everyday_table(translators: list, args) -> tuple[list[dict], list[list]]:
    """The twelve everyday sentences in each direction, with every model's output."""
    from nmt.data import data_dir_for, load_split

    folder = data_dir_for(args.data_dir, "tatoeba", [c for c, _ in TEST_SETS])
    records, rows = [], []
    for src, tgt in (("de", "en"), ("en", "de")):
        models = [t for t in translators if (t.config.data.src, t.config.data.tgt) == (src, tgt)]
        if not models:
            continue
        sources, references = load_split("tatoeba", "test", src, tgt, args.cache_dir, folder,
                                         progress=False)
        picked = list(range(0, len(sources), EVERYDAY_STEP))[:EVERYDAY]
        texts = [sources[i] for i in picked]
        outputs = {t.name: [r.text for r in t.translate(texts, beam=5,
                                                         alpha=args.length_penalty)]
                   for t in models}
        for row, index in enumerate(picked):
            record = {"direction": f"{src}-{tgt}", "index": index, "source": texts[row],
                      "reference": references[index],
                      **{name: out[row] for name, out in outputs.items()}}
            records.append(record)
            rows.append([f"{src}→{tgt}", texts[row], references[index],
                         " / ".join(f"{name}: {out[row]}" for name, out in outputs.items())])
    return records, rows


def merged_runs(path: Path, runs: list[dict], models: list[str]
                ) -> tuple[list[dict], list[str]]:
    """The records of `path` whose model is not rescored now, then `runs`; and the model
    names in that order."""
    import json

    earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"runs": []}
    kept = [run for run in earlier["runs"] if run["model"] not in models]
    names = list(dict.fromkeys([run["model"] for run in kept] + models))
    return kept + runs, names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nmt.translator import Translator

    beams = [int(b) for b in args.beams.split(",")]
    translators = [Translator.load(path) for path in model_directories(args)]
    runs = [run for t in translators for run in score_model(t, args, beams)]
    models = [t.name for t in translators]
    if args.merge:
        runs, models = merged_runs(Path(args.results_dir) / "bench_quality.json", runs, models)
    rows = [[r["model"], r["direction"], r["test_set"],
             "greedy" if r["beam"] == 1 else f"beam {r['beam']}", r["sentences"],
             round(r["bleu"], 2), round(r["chrf"], 2)] for r in runs]
    payload = {"models": models, "length_penalty": args.length_penalty,
               "runs": runs, "bleu_signature": runs[-1]["bleu_signature"],
               "chrf_signature": runs[-1]["chrf_signature"]}
    results = Path(args.results_dir)
    _, md_path = write_results("bench_quality", payload, ["model", "direction", "test set",
                                                          "search", "sentences", "BLEU", "chrF"],
                               rows, results)
    print(md_path.read_text())
    print(f"BLEU signature: {payload['bleu_signature']}")
    if args.merge:
        return 0
    records, table = everyday_table(translators, args)
    _, md_path = write_results("bench_everyday", {"sentences": records, "beam": 5}, [
        "direction", "source", "reference", "translations (beam 5)"], table, results)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
