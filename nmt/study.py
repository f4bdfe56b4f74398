"""The attention study: every scoring function, soft and hard, in both architectures.

    python -m nmt.study --data-dir path/to/multi30k               # 3-8 hours on 2 cores
    python -m nmt.study --data-dir path/to/multi30k --workers 2   # two runs at once
    python -m nmt.study --dry-run                                 # the plan and its time
    python -m nmt.study --data-dir DIR --epochs 8 --study-dir studies/attention-8-epochs
    python -m nmt.study --report-only                             # document only

One German-to-English Multi30k model is trained per architecture (RNN, Transformer), score
in `nmt.attention.SCORES` and seed with soft attention; then hard attention with the
`--hard-top` best soft scores of each architecture; then the `--long-top` best settings
once more with `--long-factor` times the budget (`nmt.study_plan`). Every run of an
architecture uses the same base config and budget (4 epochs by default, or minutes of wall
time with `--budget`); only the score, the attention mode and the seed differ. The study
directory (its layout, the settings and the run specs: `nmt.study_runs`) holds study.json
and one run directory per run, each with a result.json of the test_2016_flickr evaluation
(beam 5), written last.

A run counts as finished when its result.json exists, so running the same command again
after an interruption skips finished runs, evaluates runs that finished training, and
resumes the interrupted training from its last checkpoint. `--workers N` trains N runs at
once, each in a process pinned to its share of the CPUs (the small study models use two
cores poorly); runs are claimed through locks, so workers never train the same run, and
speeds are compared only between runs on as many CPUs. With a budget in minutes,
`--rerun-slow` moves runs that trained markedly slower than their siblings aside and trains
them again.

The report (`docs/attention-study.md` and the PNGs in `docs/attention-study/`, drawn by
`nmt.study_report`) is written from the runs' metrics.json and result.json files alone:
every number in it is computed, and `--report-only` regenerates it without data or models.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from nmt.errors import BusyError, NmtError  # noqa: E402
from nmt.files import atomic_write_text  # noqa: E402
from nmt.locking import folder_lock  # noqa: E402
from nmt.machine import machine_facts  # noqa: E402
from nmt.quiet import load_tensorflow  # noqa: E402
from nmt.rundir import (  # noqa: E402
    BEST_WEIGHTS_FILE,
    METRICS_FILE,
    TOKENIZER_FILES,
    checked_write,
)
from nmt.study_plan import (  # noqa: E402
    epoch_minutes,
    estimated_minutes,
    outline,
    plan,
    set_aside,
    slow_run_names,
)
from nmt.study_report import write_report  # noqa: E402
from nmt.study_runs import (  # noqa: E402
    CLAIM_FILE,
    DEFAULT_BUDGET,
    DEFAULT_CONFIGS,
    DEFAULT_DOCS_DIR,
    DEFAULT_HARD_TOP,
    DEFAULT_LONG_FACTOR,
    DEFAULT_LONG_TOP,
    DEFAULT_SEEDS,
    DEFAULT_STUDY_DIR,
    DEFAULT_TEST_LIMIT,
    RESULT_FILE,
    RunSpec,
    StudySettings,
    finished,
    read_study,
    resolve_settings,
    run_config,
    training_done,
    write_study,
)
from nmt.xla_cache import enable_xla_cache  # noqa: E402

if TYPE_CHECKING:
    from nmt.translator import Translation

logger = logging.getLogger(__name__)


def share_tokenizers(study_dir: Path, run_dir: Path, specs: Sequence[RunSpec]) -> None:
    """Copy the sentencepiece models of an earlier run into a new run directory.

    Training them is deterministic, so this only saves time; it also guarantees that every
    run sees exactly the same subwords.
    """
    if all((run_dir / name).exists() for name in TOKENIZER_FILES):
        return
    for spec in specs:
        donor = study_dir / spec.name
        if donor != run_dir and all((donor / name).is_file() for name in TOKENIZER_FILES):
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in TOKENIZER_FILES:
                with checked_write(run_dir, name) as temporary:
                    shutil.copyfile(donor / name, temporary)
            logger.info("%s: reusing the tokenizers of %s", run_dir.name, spec.name)
            return


def continue_short_run(settings: StudySettings, study_dir: Path, spec: RunSpec) -> str | None:
    """Start a longer run as a copy of its seed's finished one-budget run (without its
    result.json, and with training not yet done), so that training goes on from its last
    epoch instead of repeating it. Only for a budget in epochs and a schedule in
    `nmt.study_runs.STEP_SCHEDULES` (`StudySettings.long_runs_continue`). Returns the name
    of the copied run, or None when the run is trained from scratch."""
    run_dir = study_dir / spec.name
    short = study_dir / RunSpec(*spec.setting, spec.seed).name
    if (not spec.long or not settings.long_runs_continue(spec.architecture)
            or run_dir.exists() or not finished(short)):
        return None
    copying = run_dir.with_name(f"{run_dir.name}.copying")
    shutil.rmtree(copying, ignore_errors=True)  # left by an interrupted copy
    shutil.copytree(short, copying, ignore=shutil.ignore_patterns(RESULT_FILE, ".lock"))
    metrics = json.loads((copying / METRICS_FILE).read_text(encoding="utf-8"))
    metrics.pop("stopped_by", None)  # training goes on
    atomic_write_text(copying / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    copying.rename(run_dir)
    return short.name


def train_run(settings: StudySettings, spec: RunSpec, run_dir: Path, data_dir: str | None,
              progress: bool) -> dict:
    """Train (or resume) one run with `nmt.training.train`; returns its metrics."""
    from nmt.training import train

    return train(run_config(settings, spec, data_dir), run_dir, progress=progress)


@dataclass
class EvaluationSet:
    """The test sentences of the study and the heatmap examples."""

    sources: list[str]
    references: list[str]
    examples: list[tuple[int, str, str]]  # (index in the split, source, reference)


def load_test_set(settings: StudySettings, data_dir: str | None) -> EvaluationSet:
    """The (limited) test split and the heatmap sentences (indices into the full split)."""
    from nmt.data import load_split

    d = next(iter(settings.base_configs.values()))["data"]  # the same for every architecture
    sources, references = load_split(d["corpus"], settings.test_split, d["src"], d["tgt"],
                                     d["cache_dir"], data_dir or d["data_dir"], progress=False)
    bad = [i for i in settings.sentences if not 0 <= i < len(sources)]
    if bad:
        raise NmtError(f"heatmap sentence {bad[0]} is not in {settings.test_split} "
                       f"({len(sources)} sentences)")
    examples = [(i, sources[i], references[i]) for i in settings.sentences]
    limit = settings.test_limit
    return EvaluationSet(sources[:limit], references[:limit], examples)


def evaluate_run(settings: StudySettings, spec: RunSpec, run_dir: Path,
                 test: EvaluationSet) -> dict:
    """Translate the test set with the best weights; write and return result.json.

    The heatmap sentences are translated first, which also traces the beam search, so
    that the timed translation of the test set measures decoding only. A Transformer's
    test translation also returns every layer's and head's cross-attention (one extra
    teacher-forced pass per batch, inside the timed translation) for `head_statistics`.
    """
    from nmt.attention import weight_statistics
    from nmt.evaluation import corpus_scores
    from nmt.translator import Translator

    translator = Translator.load(run_dir)
    options = {"beam": settings.beam, "alpha": settings.length_penalty,
               "batch_size": settings.batch_size}
    examples = translator.translate([source for _, source, _ in test.examples], **options)
    heads = translator.has_heads
    start = time.perf_counter()
    translations = translator.translate(test.sources, heads=heads, **options)
    seconds = time.perf_counter() - start
    scores = corpus_scores([t.text for t in translations], test.references)
    entropy, max_weight, tokens = weight_statistics([t.attention for t in translations])
    result = {
        "run": spec.name, "architecture": spec.architecture, "score": spec.score,
        "mode": spec.mode, "seed": spec.seed, "budget_factor": spec.factor,
        "split": settings.test_split, "sentences": len(test.sources), "beam": settings.beam,
        "length_penalty": settings.length_penalty, "weights": BEST_WEIGHTS_FILE,
        **scores, "attention_entropy": entropy, "max_attention_weight": max_weight,
        "target_tokens": tokens, "decode_seconds": seconds, "decode_with_heads": heads,
        "sentences_per_second": len(test.sources) / max(seconds, 1e-9),
        **(head_statistics([t.heads for t in translations]) if heads else {}),
        "examples": [_example(index, reference, t) for (index, _, reference), t
                     in zip(test.examples, examples, strict=True)],
        "machine": {**machine_facts(), "cpus_used": len(os.sched_getaffinity(0))},
    }
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    return result


def head_statistics(heads: Sequence[np.ndarray | None]) -> dict[str, list[list[float]]]:
    """`nmt.attention.weight_statistics` per layer and head of a Transformer's cross-attention.

    Args:
        heads: per translation `Translation.heads`, [layers, heads, tt, ts] (None or
            empty for an empty translation, skipped).

    Returns:
        {"head_entropy": [layers][heads] mean entropy in nats, "head_max_weight":
        [layers][heads] mean largest weight}.
    """
    from nmt.attention import weight_statistics

    stacks = [np.asarray(h, np.float32) for h in heads if h is not None and np.size(h)]
    if not stacks:
        return {"head_entropy": [], "head_max_weight": []}
    layers, count = stacks[0].shape[:2]
    entropy = [[0.0] * count for _ in range(layers)]
    peak = [[0.0] * count for _ in range(layers)]
    for layer in range(layers):
        for head in range(count):
            entropy[layer][head], peak[layer][head], _ = weight_statistics(
                [h[layer, head] for h in stacks])
    return {"head_entropy": entropy, "head_max_weight": peak}


def _example(index: int, reference: str, translation: Translation) -> dict:
    """A heatmap sentence of result.json: `Translation.to_json`'s fields the report uses
    (attention to 4 decimals), with its index in the split and its reference."""
    shown = translation.to_json(attention_digits=4)
    return {"index": index, "source": shown["source"], "reference": reference,
            **{key: shown[key] for key in ("translation", "source_tokens", "target_tokens",
                                           "attention")}}


def run_study(settings: StudySettings, study_dir: str | Path, data_dir: str | None = None,
              progress: bool = True, rerun: bool = False, workers: int = 1) -> list[RunSpec]:
    """Train and evaluate every run that is not finished yet; returns the full plan.

    `rerun`: first move the runs flagged as slow aside (`rerun_slow`). `workers` > 1
    trains that many runs at once, each in its own process on its share of the CPUs
    (`run_workers`). The study directory is locked meanwhile (`nmt.locking`): a second
    study on it raises BusyError naming the first."""
    study_dir = Path(study_dir)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise NmtError(f"--data-dir {data_dir}: no such directory")
    if rerun and settings.in_epochs:
        raise NmtError(f"--rerun-slow: the study in {study_dir} trains every run for "
                       f"{settings.budget_text()}, so a slow run trained the same model as a "
                       "fast one; there is nothing to train again")
    with folder_lock(study_dir, "study directory", "wait until that study ends, or give "
                     "another --study-dir"):
        write_study(study_dir, settings, data_dir)
        if rerun:
            rerun_slow(settings, study_dir)
        if workers > 1:
            run_workers(settings, study_dir, data_dir, progress, workers)
        else:
            work_through_plan(settings, study_dir, data_dir, progress)
        return plan(settings, study_dir)


def work_through_plan(settings: StudySettings, study_dir: Path, data_dir: str | None,
                      progress: bool, wait_seconds: float = 15.0) -> None:
    """Train and evaluate planned runs until every run is finished; the loop of one worker.

    The plan grows as its phases finish (`nmt.study_plan.plan`), so it is asked again after
    every run. A worker claims a run with the lock of `.claim-<run>` in the study
    directory, so that workers beside it (`run_workers`) take other runs; when every
    unfinished run is claimed, it waits `wait_seconds` for theirs to finish the phase."""
    test: EvaluationSet | None = None
    while True:
        specs = plan(settings, study_dir)
        pending = [spec for spec in specs if not finished(study_dir / spec.name)]
        if not pending:
            return
        claimed = _claim(study_dir, pending)
        if claimed is None:
            time.sleep(wait_seconds)
            continue
        spec, claim = claimed
        with claim:
            test = _train_and_evaluate(settings, study_dir, data_dir, progress, spec, specs,
                                       test)
        gc.collect()


def _claim(study_dir: Path, pending: Sequence[RunSpec]
           ) -> tuple[RunSpec, contextlib.ExitStack] | None:
    """The first of `pending` that no other worker holds and that is still unfinished, with
    the stack that holds its claim (close it when the run is done); None when there is none."""
    for spec in pending:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(folder_lock(study_dir, f"run {spec.name} of the study",
                                            "another worker trains it", CLAIM_FILE + spec.name))
        except BusyError:
            continue
        if not finished(study_dir / spec.name):
            return spec, stack
        stack.close()
    return None


def _train_and_evaluate(settings: StudySettings, study_dir: Path, data_dir: str | None,
                        progress: bool, spec: RunSpec, specs: Sequence[RunSpec],
                        test: EvaluationSet | None) -> EvaluationSet:
    """Train (or resume) one claimed run and evaluate it; returns the test set, loaded once
    per worker."""
    run_dir = study_dir / spec.name
    step = f"[{specs.index(spec) + 1}/{len(outline(settings, study_dir))}] {spec.name}"
    if not training_done(run_dir):
        source = continue_short_run(settings, study_dir, spec)
        if source:
            logger.info("%s: continuing %s, whose %s are its first", step, source,
                        settings.budget_text())
        logger.info("%s: training for %s", step, settings.budget_text(spec.factor))
        share_tokenizers(study_dir, run_dir, specs)
        train_run(settings, spec, run_dir, data_dir, progress)
    test = test or load_test_set(settings, data_dir)
    logger.info("%s: evaluating on %s (%d sentences, beam %d)", step, settings.test_split,
                len(test.sources), settings.beam)
    result = evaluate_run(settings, spec, run_dir, test)
    logger.info("%s: BLEU %.2f  chrF %.2f", step, result["bleu"], result["chrf"])
    return test


def run_workers(settings: StudySettings, study_dir: Path, data_dir: str | None,
                progress: bool, workers: int) -> None:
    """`work_through_plan` in `workers` processes at once, each pinned to its share of this
    process's CPUs with as many TensorFlow threads (small models use two cores poorly: two
    one-core runs train about 1.4x the tokens of one two-core run on a 2-core machine).

    Raises:
        NmtError: a worker failed (its error is in the log above it); the finished runs
            are kept, and the same command resumes the study.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if workers > len(cpus):
        raise NmtError(f"--workers {workers}: this process may use {len(cpus)} CPUs; give "
                       f"--workers {len(cpus)} or fewer")
    shares = [cpus[index::workers] for index in range(workers)]
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow per worker
    processes = [context.Process(target=_worker, name=f"worker {index + 1}",
                                 args=(settings, study_dir, data_dir, progress, share))
                 for index, share in enumerate(shares)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise NmtError(f"{', '.join(failed)} of the study in {study_dir} failed (see above); "
                       "the finished runs are kept: run the same command again to resume")


def _worker(settings: StudySettings, study_dir: Path, data_dir: str | None, progress: bool,
            cpus: list[int]) -> None:
    """A worker process of `run_workers`: on `cpus` only, with one TensorFlow thread per
    CPU (set before TensorFlow starts)."""
    os.sched_setaffinity(0, cpus)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(len(cpus))
    os.environ["TF_NUM_INTEROP_THREADS"] = str(len(cpus))
    name = multiprocessing.current_process().name
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", stream=sys.stderr)
    load_tensorflow()
    try:
        work_through_plan(settings, study_dir, data_dir, progress)
    except (NmtError, KeyboardInterrupt) as error:
        if isinstance(error, NmtError):
            print(f"[{name}] error: {error}", file=sys.stderr)
        sys.exit(1)


def rerun_slow(settings: StudySettings, study_dir: Path) -> list[Path]:
    """Move every run flagged as slow aside (`<name>.slow-<n>`), so that the study trains
    it again; returns the new paths. Call it under the study directory's lock."""
    moved = []
    for name, median in sorted(slow_run_names(settings, study_dir).items()):
        moved.append(set_aside(study_dir / name))
        logger.info("%s trained slower than its siblings (median %.0f tokens/s): moved to %s, "
                    "training it again", name, median, moved[-1].name)
    return moved


def plan_text(settings: StudySettings, study_dir: Path) -> str:
    """`--dry-run`: the planned runs, their budgets and the estimated total time."""
    runs = outline(settings, study_dir)
    todo = [run for run in runs if not run.done]
    lines = [f"{'done' if run.done else 'todo'}  {settings.budget_text(run.factor, True):>9}  "
             f"{run.name}" for run in runs]
    per_epoch, measured = epoch_minutes(settings, study_dir)
    minutes = sum(estimated_minutes(settings, run, per_epoch) for run in todo)
    sentences = settings.test_limit or "all"
    undecided = any("unless" in run.name for run in runs)
    lines.append(f"{'up to ' if undecided else ''}{len(runs)} runs ({len(runs) - len(todo)} "
                 f"finished); about {minutes / 60:.1f} hours left ({minutes:.0f} minutes: "
                 f"training budgets, start-up and evaluation on {sentences} test sentences)")
    if settings.in_epochs:
        speeds = ", ".join(f"{arch} {per_epoch[arch]:.1f} ("
                           + ("this study's runs" if arch in measured else
                              "a 2-core AVX2 machine's, until the study has its own") + ")"
                           for arch in settings.architectures)
        lines[-1] += f"; minutes per epoch: {speeds}"
    if any("<" in run.name for run in runs):
        lines[-1] += "; the runs in <...> will be chosen by the finished runs"
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nmt.study",
        description="Train one Multi30k model per attention score and architecture (soft, "
                    "then hard for the best scores, then a few longer runs) with identical "
                    "settings, seeds and budget, and write docs/attention-study.md. Running it "
                    "again resumes the study.")
    parser.add_argument("--data-dir", help="local Multi30k folder (default: download into the "
                        "config's cache_dir)")
    parser.add_argument("--config", help=f"RNN base config (default: {DEFAULT_CONFIGS['rnn']})")
    parser.add_argument("--transformer-config", help="Transformer base config (default: "
                        f"{DEFAULT_CONFIGS['transformer']})")
    parser.add_argument("--architectures", nargs="+", choices=list(DEFAULT_CONFIGS),
                        help="architectures to study (default: both)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, metavar="N",
                        help=f"train every run for N epochs (the default: {DEFAULT_BUDGET:g}; "
                             "the same models on any machine, however busy)")
    budget.add_argument("--budget", type=float, metavar="MINUTES",
                        help="train every run for MINUTES of wall time instead (comparable "
                             "only between runs on one otherwise idle machine)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="one run per seed "
                        f"and setting (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--study-dir", default=DEFAULT_STUDY_DIR,
                        help="the study's runs and study.json (default: %(default)s)")
    parser.add_argument("--docs-dir", default=DEFAULT_DOCS_DIR,
                        help="where attention-study.md and its figures go (default: "
                             "%(default)s)")
    parser.add_argument("--scores", nargs="+", metavar="SCORE",
                        help="soft-attention scores to train (default: all of SCORES)")
    parser.add_argument("--hard-top", type=int, help="hard-attention runs for the N best "
                        f"soft scores of each architecture (default: {DEFAULT_HARD_TOP})")
    parser.add_argument("--long-top", type=int, help="train the N best settings overall once "
                        "more with --long-factor times the budget, plus additive-soft of each "
                        f"architecture; 0 = no longer runs (default: {DEFAULT_LONG_TOP})")
    parser.add_argument("--long-factor", type=float, help="budget multiple of the longer runs "
                        f"(default: {DEFAULT_LONG_FACTOR:g})")
    parser.add_argument("--test-limit", type=int, help="evaluate on the first N test "
                        f"sentences only (default: {DEFAULT_TEST_LIMIT})")
    parser.add_argument("--rerun-slow", action="store_true", help="a study with a budget in "
                        "minutes: move runs that trained slower than their siblings aside "
                        "(<run>.slow-<n>) and train them again")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="train N runs at once, each in its own process pinned to its "
                             "share of the CPUs; on 2 cores 2 workers train about 1.4x faster "
                             "(default: %(default)s)")
    parser.add_argument("--dry-run", "--plan", action="store_true", help="print the planned "
                        "runs and the estimated time, train nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="only regenerate the document from the finished runs")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up messages")
    return parser


def requested_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The StudySettings values given on the command line (None = not given)."""
    return {"config_files": {"rnn": args.config, "transformer": args.transformer_config},
            "architectures": args.architectures, **_budget(args), "scores": args.scores,
            "hard_top": args.hard_top, "seeds": args.seeds, "long_top": args.long_top,
            "long_factor": args.long_factor, "test_limit": args.test_limit}


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    """The budget and its unit as given (None: not given)."""
    if args.epochs is not None:
        return {"budget": float(args.epochs), "budget_unit": "epochs"}
    if args.budget is not None:
        return {"budget": args.budget, "budget_unit": "minutes"}
    return {"budget": None, "budget_unit": None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    study_dir = Path(args.study_dir)
    try:
        if args.workers < 1:
            raise NmtError(f"--workers {args.workers}: give 1 or more")
        saved = read_study(study_dir)
        if args.report_only and saved is None:
            raise NmtError(f"--report-only: no study in {study_dir}; run it first")
        deep = not (args.dry_run or args.report_only)  # checking every run's config
        if deep:  # imports TensorFlow: quietly, unless --verbose
            enable_xla_cache()  # with NMT_XLA_CACHE, XLA runs share compiled training steps
            load_tensorflow(verbose=args.verbose)
        settings = resolve_settings(requested_settings(args), saved[0] if saved else None,
                                    study_dir, deep=deep)
        if args.dry_run:
            print(plan_text(settings, study_dir))
            return 0
        if not args.report_only:
            data_dir = args.data_dir or (saved[1] if saved else None)
            run_study(settings, study_dir, data_dir, progress=not args.quiet,
                      rerun=args.rerun_slow, workers=args.workers)
        write_report(study_dir, args.docs_dir)
    except NmtError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume the study in {study_dir}",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
