"""The attention study's shared ground: its settings, its runs and the files they leave.

Both halves of the study use this module: `nmt.study` trains and evaluates the runs,
`nmt.study_report` writes the document from what they left. A study directory holds

    study.json           the settings; a resumed study must use the same ones
    <score>-<mode>/      a run directory (`nmt.rundir`) of `nmt.training.train`, plus
        result.json      test evaluation (beam 5); written last, atomically

A run counts as finished when its result.json exists. Pure Python: no TensorFlow.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nmt.config import Config
from nmt.errors import NmtError
from nmt.files import atomic_write_text
from nmt.rundir import METRICS_FILE

STUDY_FILE = "study.json"
RESULT_FILE = "result.json"

DEFAULT_CONFIG = "configs/attention-study.json"  # the released recipe at half width
DEFAULT_STUDY_DIR = "studies/attention"
DEFAULT_DOCS_DIR = "docs"
DEFAULT_BUDGET = 7.0  # minutes per run: 7 runs x (7 + ~1 minute of evaluation) ~ 1 hour
DEFAULT_HARD_TOP = 2
STUDY_EPOCHS = 1000  # the wall-clock budget, not the epoch count, ends every run
TEST_SPLIT = "test_2016_flickr"
# Test sentences whose heatmaps are drawn: 12, 10 and 13 words, the last two with a
# verb-final German clause, so that alignments have to leave the diagonal.
HEATMAP_SENTENCES = (9, 24, 45)


SETTINGS_HELP = {
    "base_config": "--config", "budget": "--budget", "scores": "--scores",
    "hard_top": "--hard-top", "test_limit": "--test-limit",
}


# --------------------------------------------------------------------------- settings
@dataclass
class StudySettings:
    """Everything that makes runs comparable; saved in study.json, fixed for a study."""

    base_config: dict[str, Any]  # Config.to_dict() of the base config, before the overrides
    budget: float  # minutes of wall time per run (training plus per-epoch validation)
    scores: list[str]
    hard_top: int
    test_limit: int | None = None
    config_file: str = DEFAULT_CONFIG  # where base_config came from (for the document)
    sentences: list[int] = field(default_factory=lambda: list(HEATMAP_SENTENCES))
    test_split: str = TEST_SPLIT
    beam: int = 5
    length_penalty: float = 0.6
    batch_size: int = 64
    epochs: int = STUDY_EPOCHS  # so large that the budget ends every run

    def validate(self) -> StudySettings:
        """Raise NmtError for settings no study can run with; return self."""
        from nmt.attention import SCORES

        unknown = [s for s in self.scores if s not in SCORES]
        if unknown:
            raise NmtError(f"unknown attention score {unknown[0]!r}; expected some of "
                           f"{list(SCORES)}")
        if not self.scores or len(set(self.scores)) != len(self.scores):
            raise NmtError(f"--scores: expected distinct score names, received {self.scores}")
        if not 0 <= self.hard_top <= len(self.scores):
            raise NmtError(f"--hard-top: expected 0..{len(self.scores)} (the number of "
                           f"scores), received {self.hard_top}")
        if self.budget <= 0:
            raise NmtError(f"--budget: expected > 0 minutes, received {self.budget}")
        if self.test_limit is not None and self.test_limit < 1:
            raise NmtError(f"--test-limit: expected >= 1, received {self.test_limit}")
        for spec in self.soft_runs():  # every score must fit the base model's sizes
            run_config(self, spec, None)
        return self

    def soft_runs(self) -> list[RunSpec]:
        return [RunSpec(score, "soft") for score in self.scores]

    def comparable(self) -> dict[str, Any]:
        """The settings without where the data lives (which may move between machines)."""
        values = asdict(self)
        values.pop("config_file")
        values["base_config"] = copy.deepcopy(values["base_config"])
        for key in ("data_dir", "cache_dir"):
            values["base_config"].get("data", {}).pop(key, None)
        return values


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: a score and an attention mode."""

    score: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.score}-{self.mode}"


def load_base_config(path: str | Path) -> dict[str, Any]:
    """The base config file as a complete, validated `Config.to_dict()`."""
    return Config.load(path).to_dict()


def run_config(settings: StudySettings, spec: RunSpec, data_dir: str | None) -> Config:
    """The `Config` of one run: the base config with score, mode, budget and epochs set."""
    values = copy.deepcopy(settings.base_config)
    values["model"].update(score=spec.score, attention_mode=spec.mode)
    values["train"].update(time_budget=settings.budget, epochs=settings.epochs)
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
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(StudySettings)}
        settings = StudySettings(**{k: v for k, v in values["settings"].items() if k in names})
    except (json.JSONDecodeError, KeyError, TypeError) as error:
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
                     study_dir: Path) -> StudySettings:
    """The settings of a new study (defaults + `requested`), or those of the saved study.

    `requested` maps StudySettings field names to values given on the command line
    (None = not given). A resumed study takes its saved settings; a given value that
    differs from them raises NmtError saying how to resume or start a new study.
    """
    given = {key: value for key, value in requested.items() if value is not None}
    if saved is None:
        values = {"base_config": None, "budget": DEFAULT_BUDGET, "hard_top": DEFAULT_HARD_TOP,
                  "scores": None, "config_file": DEFAULT_CONFIG, **given}
        if values["base_config"] is None:
            if not Path(values["config_file"]).is_file():
                raise NmtError(f"base config {values['config_file']} not found: run from the "
                               "repository root or pass --config FILE")
            values["base_config"] = load_base_config(values["config_file"])
        if values["scores"] is None:
            from nmt.attention import SCORES

            values["scores"] = list(SCORES)
        return StudySettings(**values).validate()
    candidate = StudySettings(**{**asdict(saved), **given}).comparable()
    reference = saved.comparable()
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
    return "a different base config" if isinstance(value, dict) else repr(value)


# ------------------------------------------------------------------------------- runs
def finished(run_dir: Path) -> bool:
    """A run is finished when its evaluation, written last, exists."""
    return (run_dir / RESULT_FILE).is_file()


def read_json(path: Path) -> dict:
    """A JSON file of the study, or NmtError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise NmtError(f"cannot read {path}: {error}") from error


def training_done(run_dir: Path) -> bool:
    """True when `train` returned for this run: metrics.json records why it stopped."""
    path = run_dir / METRICS_FILE
    return path.is_file() and "stopped_by" in read_json(path)


def hard_scores(settings: StudySettings, study_dir: Path) -> list[str]:
    """The `hard_top` scores with the best validation BLEU of their soft runs (ties: name)."""
    ranked = sorted(settings.scores, key=lambda score: (
        -_best_bleu(study_dir / RunSpec(score, "soft").name), score))
    return ranked[:settings.hard_top]


def _best_bleu(run_dir: Path) -> float:
    best = read_json(run_dir / METRICS_FILE).get("best") or {}
    return float(best.get("val_bleu", float("-inf")))


def plan(settings: StudySettings, study_dir: Path) -> list[RunSpec]:
    """All runs: soft ones, then hard ones once every soft run is finished."""
    soft = settings.soft_runs()
    if not all(finished(study_dir / spec.name) for spec in soft):
        return soft
    return soft + [RunSpec(score, "hard") for score in hard_scores(settings, study_dir)]

