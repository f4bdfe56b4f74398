#!/usr/bin/env python
"""Translation speed, old code against new, side by side in one run.

    python bench/bench_translate.py --data-dir ../shared/corpora/multi30k

"Old" is the code at `--baseline` (default: the commit this work started from), exported
with `git archive` into a temporary folder; "new" is this checkout. Both translate with the
checkpoint `checkpoints/multi30k-de-en` as written at `--checkpoint-commit` (an older run
directory, without checksums.json), unless `--checkpoint` names another. Measured, each side
in its own processes, alternating old and new:

* greedy and beam 5 at batch size 1 and 64 on the test_2016_flickr sentences, in
  sentences/s, after a full warm-up pass (every batch shape compiled once): the best of
  `--repeats` timed passes, since a batch-64 pass lasts about a second and this kind of
  shared machine stalls for part of one now and then;
* `translate.py -i FILE` wall time on the first `--document-sentences` training sentences
  (beam 5, batch 64: the defaults), from process start to exit, and how many lines differ;
* "new" runs with translate.py's default `--dtype auto` (float32, and bfloat16 for searches
  of 64 or more hypotheses where the CPU has it, `nmt.precision`); both measures again for
  the new code in float32 throughout (`--dtype float32`), the "new, float32" column;
* the cold start: wall time of `translate.py "Ein Mann fährt Fahrrad."`, best of
  `--cold-repeats`; the new code's first run starts with an empty XLA cache
  (`nmt.xla_cache`) and is reported on its own; and where one start's time goes.

Writes bench/results/bench_translate.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No nmt import at the top: a worker process imports the nmt of the side it measures.
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BASELINE = "b12b977"  # the code before issue 20 (compiled search, bfloat16, faster start)
CHECKPOINT_COMMIT = "803871b"  # checkpoints/multi30k-de-en as the old code wrote it
CHECKPOINT = "checkpoints/multi30k-de-en"
SETTINGS = ((1, 1), (1, 64), (5, 1), (5, 64))  # (beam, batch size)
FLOAT32 = "new, float32"  # the new code with --dtype float32
COLD_SENTENCE = "Ein Mann fährt Fahrrad."
# The old code's start imports tensorflow_text too; the new one leaves it for later.
START_PART = "import TensorFlow (nmt.quiet.load_tensorflow)"
# Floors of issue 20: (measure, floor, direction); "x old" floors compare with the old code.
FLOORS = {"greedy, batch 64": (1400.0, "min"), "beam 5, batch 64": (350.0, "min"),
          "greedy, batch 1": (165.0, "min"), "beam 5, batch 1": (100.0, "min")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--checkpoint", help="run directory for both sides (default: "
                        f"{CHECKPOINT} at --checkpoint-commit)")
    parser.add_argument("--checkpoint-commit", default=CHECKPOINT_COMMIT)
    parser.add_argument("--baseline", default=BASELINE, help="commit of the old code")
    parser.add_argument("--baseline-repo", help="a checkout of the old code instead")
    parser.add_argument("--limit", type=int, help="time only the first N test sentences")
    parser.add_argument("--document-sentences", type=int, default=10000)
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes of each search setting (the best is reported)")
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # code folder of one side
    parser.add_argument("--dtype", help=argparse.SUPPRESS)  # the worker's Translator dtype
    args = parser.parse_args(argv)
    if args.worker:
        sys.path.insert(0, args.worker)
        return speed_worker(args)
    sys.path.insert(0, str(REPO))
    from bench.common import write_results

    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tr-")))
        old = Path(args.baseline_repo) if args.baseline_repo else export_tree(
            args.baseline, ["nmt", "translate.py"], scratch / "old")
        checkpoint = Path(args.checkpoint) if args.checkpoint else export_tree(
            args.checkpoint_commit, [CHECKPOINT], scratch / "checkpoint") / CHECKPOINT
        payload = measure(args, {"old": old, "new": REPO}, checkpoint, scratch)
    payload.update(baseline=args.baseline_repo or args.baseline,
                   checkpoint=args.checkpoint or f"{CHECKPOINT} at {args.checkpoint_commit}")
    _, md_path = write_results("bench_translate", payload,
                               ["measure", "old", "new", "new / old", FLOAT32, "float32 / old",
                                "floor", "met by"],
                               table_rows(payload), Path(args.results_dir))
    print(md_path.read_text())
    return 0


def export_tree(commit: str, paths: list[str], destination: Path) -> Path:
    """`paths` of the repository at `commit`, written under `destination` (git archive)."""
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit, *paths], cwd=REPO,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    return destination


def measure(args, code: dict[str, Path], checkpoint: Path, scratch: Path) -> dict:
    """Every figure of both sides (see the module docstring)."""
    sides = {"old": (code["old"], []), "new": (code["new"], ["--dtype", "auto"]),
             FLOAT32: (code["new"], ["--dtype", "float32"])}
    speeds = {side: run_worker(folder, checkpoint, args, options)
              for side, (folder, options) in sides.items()}
    document = write_document(args.data_dir, args.document_sentences, scratch / "document.de")
    walls, lines = {}, {}
    for side, (folder, options) in sides.items():
        output = scratch / f"document.{side.replace(' ', '-')}.en"
        walls[side] = wall_time(folder, checkpoint, ["-i", str(document), "-o", str(output),
                                                     "--quiet", *options], scratch)
        lines[side] = output.read_text().splitlines()
    differ = {side: sum(a != b for a, b in zip(lines["old"], lines[side], strict=True))
              for side in sides if side != "old"}
    cold = cold_starts(code, checkpoint, args.cold_repeats, scratch)
    return {"sentences": speeds["new"]["sentences"],
            "runs": {side: speeds[side]["runs"] for side in sides},
            "parts": {side: speeds[side]["parts"] for side in code},
            "document": {"sentences": args.document_sentences, "seconds": walls,
                         "lines_that_differ": differ},
            "cold_start_seconds": cold}


def run_worker(folder: Path, checkpoint: Path, args, options: list[str]) -> dict:
    """The speed figures of the code in `folder` (with translate.py `options`: --dtype),
    measured in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder),
               "--checkpoint", str(checkpoint), *options]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    command += ["--repeats", str(args.repeats)]
    completed = subprocess.run(command, check=True, capture_output=True, text=True,
                               env=side_environment(folder, None))
    return json.loads(completed.stdout.strip().splitlines()[-1])


def side_environment(folder: Path, xla_cache: Path | None) -> dict:
    """Environment of one side's process: its code first on the path; an XLA cache of the
    bench's own (or none), never the user's."""
    env = {**os.environ, "PYTHONPATH": str(folder), "TF_CPP_MIN_LOG_LEVEL": "2",
           "NMT_XLA_CACHE": str(xla_cache) if xla_cache else "off"}
    env.pop("TF_XLA_FLAGS", None)
    return env


def speed_worker(args) -> int:
    """In the side's own process: time the parts of a start, then every search setting."""
    parts, start = {}, time.perf_counter()
    from nmt.quiet import load_tensorflow  # as translate.py starts (the old code's too)

    load_tensorflow()
    parts[START_PART] = time.perf_counter() - start
    from nmt.data import load_split
    from nmt.translator import Translator

    start = time.perf_counter()
    translator = Translator.load(args.checkpoint, **({"dtype": args.dtype} if args.dtype else {}))
    parts["load the model"] = time.perf_counter() - start
    for label in ("first sentence (old: traced and compiled; new: eager)",
                  "second sentence (new: traced and compiled)", "third sentence"):
        start = time.perf_counter()
        translator.translate([COLD_SENTENCE], beam=5)
        parts[label] = time.perf_counter() - start
    d = translator.config.data
    sources, _ = load_split("multi30k", "test_2016_flickr", d.src, d.tgt, d.cache_dir,
                            args.data_dir, progress=False)
    sources = sources[: args.limit]
    runs = []
    for beam, batch_size in SETTINGS:
        translator.translate(sources, beam=beam, batch_size=batch_size)  # every shape once
        passes = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            translator.translate(sources, beam=beam, batch_size=batch_size)
            passes.append(len(sources) / (time.perf_counter() - start))
        runs.append({"beam": beam, "batch_size": batch_size,
                     "sentences_per_second": max(passes), "passes": passes})
    print(json.dumps({"sentences": len(sources), "runs": runs, "parts": parts}))
    return 0


def write_document(data_dir: str | None, count: int, path: Path) -> Path:
    """The first `count` German training sentences of Multi30k, one per line."""
    from nmt.data import load_split

    sources, _ = load_split("multi30k", "train", "de", "en", data_dir=data_dir, progress=False)
    path.write_text("".join(line + "\n" for line in sources[:count]), encoding="utf-8")
    return path


def wall_time(folder: Path, checkpoint: Path, arguments: list[str], scratch: Path,
              xla_cache: Path | None = None) -> float:
    """Seconds from start to exit of the side's `translate.py --checkpoint ... ARGUMENTS`."""
    if xla_cache is None:
        xla_cache = Path(tempfile.mkdtemp(dir=scratch, prefix="xla-"))  # empty: compiles all
    start = time.perf_counter()
    subprocess.run([sys.executable, str(folder / "translate.py"), "--checkpoint",
                    str(checkpoint), *arguments], check=True, capture_output=True,
                   cwd=scratch, env=side_environment(folder, xla_cache))
    return time.perf_counter() - start


def cold_starts(code: dict[str, Path], checkpoint: Path, repeats: int,
                scratch: Path) -> dict:
    """Best-of-`repeats` wall time of one sentence per side, alternating the sides; the new
    code's first run fills an empty XLA cache and is also reported on its own."""
    cache = Path(tempfile.mkdtemp(dir=scratch, prefix="xla-cold-"))
    times: dict[str, list[float]] = {side: [] for side in code}
    for _ in range(repeats + 1):
        for side, folder in code.items():
            times[side].append(wall_time(folder, checkpoint, [COLD_SENTENCE], scratch, cache))
    return {"old": min(times["old"][1:]), "new": min(times["new"][1:]),
            "new_first_run_empty_xla_cache": times["new"][0], "all": times}


def table_rows(payload: dict) -> list[list]:
    """The Markdown rows: each measure old, new, new with --dtype float32, the ratios to old,
    the issue's floor and which of the new columns meet it."""
    rows = []
    runs = {side: {(r["beam"], r["batch_size"]): r["sentences_per_second"]
                   for r in payload["runs"][side]} for side in ("old", "new", FLOAT32)}
    for beam, batch_size in SETTINGS:
        name = f"{'greedy' if beam == 1 else f'beam {beam}'}, batch {batch_size}"
        old, new, exact = (runs[side][beam, batch_size] for side in ("old", "new", FLOAT32))
        floor, _ = FLOORS[name]
        extra = " and 1.7x old" if (beam, batch_size) == (5, 64) else ""
        met = [label for label, speed in (("new", new), ("float32", exact))
               if speed >= floor and (not extra or speed >= 1.7 * old)]
        rows.append([f"{name} (sentences/s)", round(old, 1), round(new, 1), f"{new / old:.2f}x",
                     round(exact, 1), f"{exact / old:.2f}x", f">= {floor:,.0f}{extra}",
                     ", ".join(met) or "no"])
    document = payload["document"]
    seconds = document["seconds"]
    old, new, exact = seconds["old"], seconds["new"], seconds[FLOAT32]
    met = [label for label, wall in (("new", new), ("float32", exact)) if old >= 1.7 * wall]
    rows.append([f"translate.py -i, {document['sentences']:,} sentences (s)", round(old, 1),
                 round(new, 1), f"{old / new:.2f}x faster", round(exact, 1),
                 f"{old / exact:.2f}x faster", ">= 1.7x faster", ", ".join(met) or "no"])
    rows.append(["lines of that document that differ from old", "", document[
        "lines_that_differ"]["new"], "", document["lines_that_differ"][FLOAT32], "", "", ""])
    cold = payload["cold_start_seconds"]
    rows.append(["cold start, 1 sentence (s)", round(cold["old"], 2), round(cold["new"], 2),
                 f"{cold['new'] / cold['old']:.2f}x", "", "", "<= 0.7x old",
                 "new" if cold["new"] <= 0.7 * cold["old"] else "no"])
    first = cold["new_first_run_empty_xla_cache"]
    rows.append(["cold start, empty XLA cache (s)", "", round(first, 2),
                 f"{first / cold['old']:.2f}x", "", "", "", ""])
    for part in payload["parts"]["new"]:
        rows.append([f"start: {part} (s)", round(payload["parts"]["old"].get(part, 0.0), 2),
                     round(payload["parts"]["new"][part], 2), "", "", "", "", ""])
    return rows


if __name__ == "__main__":
    sys.exit(main())
