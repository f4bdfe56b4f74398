"""The attention study's shared ground: its settings, its runs and the files they leave.

Both halves of the study use this module: `nmt.study` trains and evaluates the runs,
`nmt.study_report` writes the document from what they left. A study directory holds

    study.json                       the settings; a resumed study must use the same ones
    <arch>-<score>-<mode>-s<seed>/   a run directory (`nmt.rundir`) of `nmt.training.train`,
        result.json                  plus its test evaluation (beam 5), written last
    <...>-x<factor>/                 a longer-budget run (`--long-factor` times the budget)
    <run>.slow-<n>/                  a run set aside by `--rerun-slow` (never deleted)
    .claim-<run>                     locked by the worker training the run (`--workers`)

A run counts as finished when its result.json exists. Pure Python: no TensorFlow (unless
`StudySettings.validate(deep=True)` builds every run's `Config`).
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nmt.config import ARCHITECTURES, Config
from nmt.errors import NmtError
from nmt.files import atomic_write_text
from nmt.rundir import METRICS_FILE

STUDY_FILE = "study.json"
CLAIM_FILE = ".claim-"  # + the run's name
RESULT_FILE = "result.json"

# One base config per architecture: the released recipes at half width (RNN) and at
# 2 layers of 128 features (Transformer).
DEFAULT_CONFIGS = {"rnn": "configs/attention-study.json",
                   "transformer": "configs/attention-study-transformer.json"}
CONFIG_FLAGS = {"rnn": "--config", "transformer": "--transformer-config"}
DEFAULT_STUDY_DIR = "studies/attention"
DEFAULT_DOCS_DIR = "docs"
# The budget of a run: epochs (the default: the same models on any machine, however busy),
# or minutes of wall time (`--budget`; comparable only between runs on one idle machine).
# 2 architectures x 5 scores x 2 seeds soft + 2 x 2 x 2 hard = 28 runs, and up to 5 longer
# runs of 3 budgets: 43 budgets. 4 epochs take about 3 (RNN) to 4.6 minutes (Transformer) on
# a 2-core AVX512-BF16 machine in bfloat16 (about 3 hours in all, estimated from epochs measured
# on 2026-12-04), about 10 on a 2-core AVX2 one.
BUDGET_UNITS = ("epochs", "minutes")
DEFAULT_BUDGET = 4.0
DEFAULT_BUDGET_UNIT = "epochs"
DEFAULT_HARD_TOP = 2
DEFAULT_SEEDS = (1234, 2345)
DEFAULT_LONG_TOP = 3
DEFAULT_LONG_FACTOR = 3.0
DEFAULT_TEST_LIMIT = 500  # Transformer beam-5 decoding of all 1,000 takes 60-100 s here
LONG_BASELINE_SCORE = "additive"  # every architecture's additive-soft run is also run long
# Learning-rate schedules that depend on the step alone, not on the run's length.
STEP_SCHEDULES = ("constant", "inverse_sqrt")
STUDY_EPOCHS = 1000  # with a budget in minutes, the clock, not the epoch count, ends every run
TEST_SPLIT = "test_2016_flickr"
# Test sentences whose heatmaps are drawn: 12, 10 and 13 words, the last two with a
# verb-final German clause, so that alignments have to leave the diagonal.
HEATMAP_SENTENCES = (9, 24, 45)

SETTINGS_HELP = {
    "base_configs": "--config/--transformer-config", "architectures": "--architectures",
    "budget": "--epochs/--budget", "budget_unit": "--epochs/--budget", "scores": "--scores",
    "hard_top": "--hard-top", "seeds": "--seeds",
    "long_top": "--long-top", "long_factor": "--long-factor", "test_limit": "--test-limit",
}


# --------------------------------------------------------------------------- settings
@dataclass
class StudySettings:
    """Everything that makes runs comparable; saved in study.json, fixed for a study."""

    base_configs: dict[str, dict[str, Any]]  # architecture -> Config.to_dict() of its base
    budget: float  # per run: epochs, or minutes of wall time (training plus validation)
    scores: list[str]
    hard_top: int  # hard-attention runs for this many best soft scores of each architecture
    seeds: list[int]
    long_top: int = DEFAULT_LONG_TOP  # best settings overall trained again, longer
    long_factor: float = DEFAULT_LONG_FACTOR  # ... with this many times the budget
    test_limit: int | None = DEFAULT_TEST_LIMIT
    config_files: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CONFIGS))
    sentences: list[int] = field(default_factory=lambda: list(HEATMAP_SENTENCES))
    test_split: str = TEST_SPLIT
    beam: int = 5
    length_penalty: float = 0.6
    batch_size: int = 64
    epochs: int = STUDY_EPOCHS  # the epoch cap of a budget in minutes (large: the clock ends)
    budget_unit: str = "minutes"  # or "epochs" (study.json files before epochs: minutes)

    @property
    def architectures(self) -> list[str]:
        return list(self.base_configs)

    @property
    def in_epochs(self) -> bool:
        return self.budget_unit == "epochs"

    def long_runs_continue(self, architecture: str) -> bool:
        """Whether a longer run of `architecture` goes on from its seed's one-budget run: with
        a budget in epochs and a schedule that depends on the step alone (STEP_SCHEDULES; a
        cosine schedule follows the run's length), their first epochs are the same."""
        schedule = self.base_configs[architecture]["train"].get("lr_schedule")
        return self.in_epochs and schedule in STEP_SCHEDULES

    def run_budget(self, factor: float = 1.0) -> float:
        """A run's budget in the study's unit: `factor` times the budget (whole epochs)."""
        budget = self.budget * factor
        return float(max(1, round(budget))) if self.in_epochs else budget

    def budget_text(self, factor: float = 1.0, short: bool = False) -> str:
        """"4 epochs", "3.5 minutes" ("3.5 min" when `short`) for `factor` times the budget."""
        amount = self.run_budget(factor)
        if self.in_epochs:
            return f"{amount:g} epoch{'' if amount == 1 else 's'}"
        return f"{amount:g} {'min' if short else 'minutes'}"

    def validate(self, deep: bool = True) -> StudySettings:
        """Raise NmtError for settings no study can run with; return self.

        `deep` also builds every soft run's `Config` (which imports TensorFlow)."""
        from nmt.cli.train import score_names  # the registry's names, without TensorFlow

        names = score_names()
        unknown = [s for s in self.scores if s not in names]
        if unknown:
            raise NmtError(f"unknown attention score {unknown[0]!r}; expected some of {names}")
        for option, values in (("--scores", self.scores), ("--seeds", self.seeds),
                               ("--architectures", self.architectures)):
            if not values or len(set(values)) != len(values):
                raise NmtError(f"{option}: expected distinct values, received {values}")
        _check(0 <= self.hard_top <= len(self.scores), "--hard-top",
               f"0..{len(self.scores)} (the number of scores)", self.hard_top)
        _check(self.budget_unit in BUDGET_UNITS, "budget unit", f"one of {BUDGET_UNITS}",
               self.budget_unit)
        if self.in_epochs:
            _check(self.budget >= 1 and float(self.budget).is_integer(), "--epochs",
                   "a whole number >= 1", self.budget)
        else:
            _check(self.budget > 0, "--budget", "> 0 minutes", self.budget)
        _check(self.long_top >= 0, "--long-top", ">= 0", self.long_top)
        _check(self.long_factor > 1, "--long-factor", "> 1", self.long_factor)
        _check(self.test_limit is None or self.test_limit >= 1, "--test-limit", ">= 1",
               self.test_limit)
        if deep:
            self._check_same_data()
            for arch in self.architectures:  # every score must fit the base model's sizes
                for score in self.scores:
                    run_config(self, RunSpec(arch, score, "soft", self.seeds[0]), None)
        return self

    def _check_same_data(self) -> None:
        """Every architecture must read the same data into the same subwords: the runs
        share one pair of tokenizers, and the comparison is on equal terms."""
        first, *others = self.architectures
        for arch in others:
            if self.base_configs[arch]["data"] != self.base_configs[first]["data"]:
                raise NmtError(f"{CONFIG_FLAGS[arch]} {self.config_files.get(arch)}: its data "
                               f"section differs from {CONFIG_FLAGS[first]} "
                               f"{self.config_files.get(first)}; the study compares the "
                               "architectures on the same data and subwords")

    def comparable(self) -> dict[str, Any]:
        """The settings without where the data lives (which may move between machines)."""
        values = asdict(self)
        values.pop("config_files")
        values["base_configs"] = copy.deepcopy(values["base_configs"])
        for base in values["base_configs"].values():
            for key in ("data_dir", "cache_dir"):
                base.get("data", {}).pop(key, None)
        return values


def _check(condition: bool, option: str, expected: str, received: Any) -> None:
    if not condition:
        raise NmtError(f"{option}: expected {expected}, received {received}")


def cpus_used(result: dict) -> int:
    """The CPUs a run's process could use, from its result.json (`--workers` pins each
    worker to its share; runs evaluated before that was recorded had the whole machine)."""
    machine = result.get("machine") or {}
    return int(machine.get("cpus_used") or machine.get("cores") or 0)


class SettingOf:
    """For a run's description with `architecture`, `score`, `mode` and `factor` fields."""

    @property
    def setting(self) -> tuple[str, str, str]:
        """(architecture, score, mode): what the runs of other seeds share."""
        return self.architecture, self.score, self.mode

    @property
    def long(self) -> bool:
        """A longer-budget run (`factor` times the study's budget)."""
        return self.factor != 1.0

    def speed_group(self, cpus: int) -> tuple[str, str, str, int]:
        """The runs whose training speeds compare: the same setting on as many CPUs."""
        return (*self.setting, cpus)


@dataclass(frozen=True)
class RunSpec(SettingOf):
    """One run of the study: architecture, score, attention mode, seed and budget factor."""

    architecture: str
    score: str
    mode: str
    seed: int
    factor: float = 1.0  # times the study's budget (> 1: a longer-budget run)

    @property
    def name(self) -> str:
        suffix = f"-x{self.factor:g}" if self.long else ""
        return f"{self.architecture}-{self.score}-{self.mode}-s{self.seed}{suffix}"



def load_base_config(path: str | Path, architecture: str, validate: bool = True
                     ) -> dict[str, Any]:
    """A base config file as a complete `Config.to_dict()` (validated, which imports
    TensorFlow), or as its raw JSON (`validate=False`, for `--dry-run`)."""
    flag = CONFIG_FLAGS[architecture]
    if not Path(path).is_file():
        raise NmtError(f"config file not found: {path}; run from the repository root or pass "
                       f"{flag} FILE")
    values = Config.load(path).to_dict() if validate else read_json(Path(path))
    found = values.get("model", {}).get("architecture", "rnn")
    if found != architecture:
        raise NmtError(f"{flag} {path}: expected a config with model.architecture "
                       f"{architecture!r}, received {found!r}")
    return values


def run_config(settings: StudySettings, spec: RunSpec, data_dir: str | None) -> Config:
    """The `Config` of one run: its architecture's base config with score, mode, seed,
    budget and epochs set."""
    values = copy.deepcopy(settings.base_configs[spec.architecture])
    values["model"].update(score=spec.score, attention_mode=spec.mode)
    if settings.in_epochs:  # the schedule (cosine) anneals over exactly these epochs
        values["train"].update(time_budget=None, epochs=int(settings.run_budget(spec.factor)))
    else:
        values["train"].update(time_budget=settings.run_budget(spec.factor),
                               epochs=settings.epochs)
    values["train"]["seed"] = spec.seed
    if data_dir is not None:
        values["data"]["data_dir"] = str(data_dir)
    try:
        return Config.from_dict(values)
    except NmtError as error:
        raise NmtError(f"run {spec.name}: {error}") from error


def read_study(study_dir: Path) -> tuple[StudySettings, str | None] | None:
    """Saved settings and data directory of the study in `study_dir`, or None."""
    path = study_dir / STUDY_FILE
    if not path.exists():
        return None
    values = read_json(path)
    saved = values.get("settings") if isinstance(values, dict) else None
    if isinstance(saved, dict) and "base_config" in saved and "base_configs" not in saved:
        raise NmtError(f"{path} was written by the first edition of the attention study (one "
                       "seed, RNN only); give a new --study-dir to start a second-edition study")
    try:
        names = {f.name for f in fields(StudySettings)}
        settings = StudySettings(**{k: v for k, v in saved.items() if k in names})
    except (AttributeError, TypeError) as error:
        raise NmtError(f"{path} is not a study file ({error}); delete the folder to start "
                       "a new study") from error
    return settings, values.get("data_dir")


def write_study(study_dir: Path, settings: StudySettings, data_dir: str | None) -> None:
    """Save the settings (and data location) in study.json."""
    payload = {"settings": asdict(settings), "data_dir": data_dir,
               "created": datetime.datetime.now().isoformat(timespec="seconds")}
    previous = study_dir / STUDY_FILE
    if previous.exists():
        payload["created"] = json.loads(previous.read_text(encoding="utf-8")).get(
            "created", payload["created"])
    atomic_write_text(previous, json.dumps(payload, indent=2) + "\n")


def resolve_settings(requested: dict[str, Any], saved: StudySettings | None,
                     study_dir: Path, deep: bool = True) -> StudySettings:
    """The settings of a new study (defaults + `requested`), or those of the saved study.

    `requested` maps StudySettings field names to values given on the command line (None =
    not given); "config_files" maps architectures to given files. A resumed study takes its
    saved settings; a given value that differs from them raises NmtError saying how to
    resume or start a new study. `deep`: validate the configs (imports TensorFlow).
    """
    given = {key: value for key, value in requested.items()
             if value is not None and key != "config_files"}
    files = {arch: path for arch, path in (requested.get("config_files") or {}).items() if path}
    if saved is None:
        architectures = given.pop("architectures", None) or list(ARCHITECTURES)
        config_files = {arch: files.get(arch, DEFAULT_CONFIGS[arch]) for arch in architectures}
        bases = {arch: load_base_config(config_files[arch], arch, deep)
                 for arch in architectures}
        if "scores" not in given:
            from nmt.cli.train import score_names

            given["scores"] = score_names()
        values = {"budget": DEFAULT_BUDGET, "budget_unit": DEFAULT_BUDGET_UNIT,
                  "hard_top": DEFAULT_HARD_TOP, "seeds": list(DEFAULT_SEEDS), **given}
        return StudySettings(base_configs=bases, config_files=config_files,
                             **values).validate(deep)
    candidate_values = {**asdict(saved), **given}
    candidate_values.pop("architectures", None)
    bases = dict(saved.base_configs)
    bases.update({arch: load_base_config(path, arch, deep) for arch, path in files.items()})
    candidate = StudySettings(**{**candidate_values, "base_configs": bases}).comparable()
    candidate["architectures"] = given.get("architectures", saved.architectures)
    reference = {**saved.comparable(), "architectures": saved.architectures}
    changed = [key for key in reference if candidate[key] != reference[key]]
    if changed:
        details = "; ".join(f"{SETTINGS_HELP.get(key, key)}: study has "
                            f"{_short(reference[key])}, requested {_short(candidate[key])}"
                            for key in changed)
        raise NmtError(f"the study in {study_dir} was started with other settings ({details}). "
                       "Run again without these options (or with the saved values) to resume "
                       "it, or choose a new --study-dir to start a new study.")
    return saved


def _short(value: Any) -> str:
    return "different base configs" if isinstance(value, dict) else repr(value)


# ------------------------------------------------------------------------------- runs
def finished(run_dir: Path) -> bool:
    """A run is finished when its evaluation, written last, exists."""
    return (run_dir / RESULT_FILE).is_file()


def read_json(path: Path) -> Any:
    """A JSON file of the study, or NmtError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise NmtError(f"cannot read {path}: {error}") from error


def training_done(run_dir: Path) -> bool:
    """True when `train` returned for this run: metrics.json records why it stopped."""
    path = run_dir / METRICS_FILE
    return path.is_file() and "stopped_by" in read_json(path)


def best_bleu(run_dir: Path) -> float:
    """The best validation BLEU in a run's metrics.json (-inf when there is none)."""
    best = read_json(run_dir / METRICS_FILE).get("best") or {}
    return float(best.get("val_bleu", float("-inf")))
