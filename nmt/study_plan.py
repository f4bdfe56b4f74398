"""The attention study's plan: which runs, in which order, and how long they take.

The plan unfolds in three phases, each decided by the finished runs of the previous one:

1. soft attention with every score, for every architecture, seed-major (all runs of the
   first seed, then the second, ...), so that an interrupted study already has a complete
   first-seed picture;
2. hard attention with the `hard_top` best soft scores of each architecture (by mean best
   validation BLEU over seeds), again seed-major;
3. the longer-budget check: the `long_top` best settings overall (architecture, score,
   mode; by mean validation BLEU), plus additive-soft of every architecture not among them,
   once each (first seed) with `long_factor` times the budget.

Pure Python: reads metrics.json and result.json files, never TensorFlow.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nmt.rundir import METRICS_FILE
from nmt.study_runs import (
    LONG_BASELINE_SCORE,
    RESULT_FILE,
    RunSpec,
    StudySettings,
    best_bleu,
    cpus_used,
    finished,
    read_json,
)
from nmt.study_stats import rank, slow_runs, training_speed

# Estimated seconds to evaluate one run on this 2-core machine: (loading the data and the
# model and tracing the search, per test sentence at beam 5). The first edition's RNN runs
# decoded 210-300 sentences/s; the Transformer decodes 1,000 sentences in 60-100 s.
EVALUATION_SECONDS = {"rnn": (20.0, 0.005), "transformer": (30.0, 0.08)}
# Minutes per epoch (training and validation) of the base configs before the study has
# finished a run of the architecture (then its runs' own epochs are used): measured on a
# 2-core AVX2 machine (85 GFLOP/s float32 matmul), the slowest the study has run on. RNN
# 143 s an epoch at 3,100 target tokens/s; Transformer 152 s at 3,150, plus about 170 s of
# XLA compilation in its first epoch (3.2 minutes an epoch over 4 epochs). Both were float32
# then; since 2026-12-04 both train in bfloat16 (the Transformer without XLA), 47 and 69 s an
# epoch on an AVX512-BF16 machine, where bfloat16 is native (on AVX2 it is emulated).
EPOCH_MINUTES = {"rnn": 2.4, "transformer": 3.2}
STARTUP_SECONDS = 15.0  # per run, outside its budget: reading the corpus, building the model
FULL_TEST_SENTENCES = 1000  # test_2016_flickr


def soft_runs(settings: StudySettings) -> list[RunSpec]:
    """Phase 1: every score with soft attention, seed-major, architectures in order."""
    return [RunSpec(arch, score, "soft", seed) for seed in settings.seeds
            for arch in settings.architectures for score in settings.scores]


def hard_scores(settings: StudySettings, study_dir: Path,
                architectures: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Architecture -> its `hard_top` soft scores with the best mean validation BLEU over
    seeds (ties broken by name), for `architectures` (default: all); needs their soft runs
    finished."""
    picks = {}
    for arch in settings.architectures if architectures is None else architectures:
        values = {score: [best_bleu(study_dir / RunSpec(arch, score, "soft", seed).name)
                          for seed in settings.seeds] for score in settings.scores}
        picks[arch] = rank(values)[:settings.hard_top]
    return picks


def hard_runs(settings: StudySettings, picks: dict[str, list[str]]) -> list[RunSpec]:
    """Phase 2: the picked scores with hard attention, seed-major (architectures without
    picks yet have none)."""
    return [RunSpec(arch, score, "hard", seed) for seed in settings.seeds
            for arch in settings.architectures for score in picks.get(arch, [])]


def long_settings(settings: StudySettings, study_dir: Path,
                  runs: list[RunSpec]) -> list[tuple[str, str, str]]:
    """The settings of phase 3: the `long_top` best by mean validation BLEU over `runs`,
    then additive-soft of each architecture not among them (none when `long_top` is 0)."""
    if settings.long_top == 0:
        return []
    values: dict[tuple[str, str, str], list[float]] = {}
    for spec in runs:
        values.setdefault(spec.setting, []).append(best_bleu(study_dir / spec.name))
    picked = rank(values)[:settings.long_top]
    for arch in settings.architectures:
        baseline = (arch, LONG_BASELINE_SCORE, "soft")
        if baseline in values and baseline not in picked:
            picked.append(baseline)
    return picked


def plan(settings: StudySettings, study_dir: Path) -> list[RunSpec]:
    """Every run decided so far, in training order: an architecture's hard runs are added
    once its soft runs are finished (they pick its scores; so a worker need not wait for the
    other architecture's), the longer runs once every soft and hard run is."""
    soft = soft_runs(settings)
    ready = [arch for arch in settings.architectures
             if all(finished(study_dir / spec.name) for spec in soft if spec.architecture == arch)]
    runs = soft + hard_runs(settings, hard_scores(settings, study_dir, ready))
    if len(ready) < len(settings.architectures) or not all(
            finished(study_dir / spec.name) for spec in runs):
        return runs
    return runs + [RunSpec(*setting, settings.seeds[0], settings.long_factor)
                   for setting in long_settings(settings, study_dir, runs)]


# ------------------------------------------------------------------- the dry run
@dataclass(frozen=True)
class PlannedRun:
    """A line of `--dry-run`: a run (or a placeholder for one not decided yet)."""

    name: str
    architecture: str
    factor: float  # times the study's budget
    done: bool = False


def outline(settings: StudySettings, study_dir: Path) -> list[PlannedRun]:
    """The whole plan as far as it can be known: decided runs, then placeholders for the
    hard and long runs that the finished runs will choose (at most as many as listed)."""
    decided = plan(settings, study_dir)
    lines = [PlannedRun(spec.name, spec.architecture, spec.factor,
                        finished(study_dir / spec.name)) for spec in decided]
    picked = {spec.architecture for spec in decided if spec.mode == "hard"}
    if settings.hard_top:
        lines += [PlannedRun(f"{arch}-<soft #{rank + 1}>-hard-s{seed}", arch, 1.0)
                  for seed in settings.seeds for arch in settings.architectures
                  if arch not in picked for rank in range(settings.hard_top)]
    if not any(spec.long for spec in decided) and settings.long_top:
        suffix = f"x{settings.long_factor:g}"
        lines += [PlannedRun(f"<best #{rank + 1} overall>-s{settings.seeds[0]}-{suffix}",
                             settings.architectures[rank % len(settings.architectures)],
                             settings.long_factor)
                  for rank in range(settings.long_top)]
        if LONG_BASELINE_SCORE in settings.scores:
            lines += [PlannedRun(f"{arch}-{LONG_BASELINE_SCORE}-soft-s{settings.seeds[0]}-"
                                 f"{suffix} (unless among the best)", arch,
                                 settings.long_factor)
                      for arch in settings.architectures]
    return lines


def estimated_minutes(settings: StudySettings, run: PlannedRun,
                      epoch_minutes: dict[str, float]) -> float:
    """Training (the budget, or its epochs times `epoch_minutes` of the architecture) plus
    estimates of the start-up and of the evaluation (beam 5 on the test sentences)."""
    fixed, per_sentence = EVALUATION_SECONDS[run.architecture]
    sentences = settings.test_limit or FULL_TEST_SENTENCES
    training = settings.run_budget(run.factor)
    if run.factor != 1.0 and settings.long_runs_continue(run.architecture):
        training -= settings.run_budget()  # goes on from its seed's one-budget run
    if settings.in_epochs:
        training *= epoch_minutes[run.architecture]
    return training + (STARTUP_SECONDS + fixed + per_sentence * sentences) / 60.0


def finished_epochs(settings: StudySettings,
                    study_dir: Path) -> Iterator[tuple[RunSpec, list[dict]]]:
    """(spec, metrics epochs) of every finished planned run that recorded an epoch."""
    for spec in plan(settings, study_dir):
        run_dir = study_dir / spec.name
        if finished(run_dir):
            epochs = read_json(run_dir / METRICS_FILE).get("epochs") or []
            if epochs:
                yield spec, epochs


def epoch_minutes(settings: StudySettings, study_dir: Path) -> tuple[dict[str, float], set[str]]:
    """Minutes per epoch of each architecture: the mean over the study's finished runs
    (wall time of training and validation / epochs), else `EPOCH_MINUTES`. Also the
    architectures whose figure was measured in this study."""
    measured: dict[str, list[float]] = {}
    for spec, epochs in finished_epochs(settings, study_dir):
        measured.setdefault(spec.architecture, []).append(
            float(epochs[-1]["wall_time"]) / 60.0 / len(epochs))
    minutes = {arch: (sum(measured[arch]) / len(measured[arch]) if arch in measured
                      else EPOCH_MINUTES[arch]) for arch in settings.architectures}
    return minutes, set(measured)


# ------------------------------------------------------------------ slow runs
def run_speeds(settings: StudySettings, study_dir: Path) -> dict[str, tuple[tuple, float]]:
    """Run name -> (speed group: setting and CPUs, training tokens/s) of every finished
    planned run."""
    return {spec.name: (spec.speed_group(cpus_used(read_json(study_dir / spec.name
                                                              / RESULT_FILE))),
                        training_speed(epochs))
            for spec, epochs in finished_epochs(settings, study_dir)}


def slow_run_names(settings: StudySettings, study_dir: Path) -> dict[str, float]:
    """Finished runs that trained below 0.75x their siblings' median tokens/s (see
    `nmt.study_stats.slow_runs`): name -> that median."""
    return slow_runs(run_speeds(settings, study_dir))


def set_aside(run_dir: Path) -> Path:
    """Rename a run directory to `<name>.slow-<n>` (the first free n), so that the study
    trains it again; nothing is deleted. Returns the new path."""
    number = 1
    while (target := run_dir.with_name(f"{run_dir.name}.slow-{number}")).exists():
        number += 1
    shutil.move(str(run_dir), str(target))
    return target
