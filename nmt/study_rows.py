"""The figures of the attention study's finished runs and of its settings (a setting is an
architecture, a score and a mode; its runs are the seeds), read from the runs' metrics.json
and result.json files. The report (`nmt.study_report`) and its discussion
(`nmt.study_discussion`) show only what these hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nmt.errors import NmtError
from nmt.rundir import METRICS_FILE
from nmt.study_runs import RESULT_FILE, SettingOf, cpus_used, read_json
from nmt.study_stats import Spread, slow_runs, spread, training_speed


@dataclass
class RunRow(SettingOf):
    """The figures of one finished run, as the report shows them."""

    name: str
    architecture: str
    score: str
    mode: str
    seed: int
    factor: float  # times the study's budget
    parameters: int
    tokens_per_second: float
    epochs: int
    best_epoch: int
    best_val_bleu: float
    test_bleu: float
    test_chrf: float
    entropy: float
    max_weight: float
    decode_speed: float
    curve: list[tuple[float, float]]  # (wall time in seconds, validation BLEU) per epoch
    result: dict
    epoch_speeds: list[float] = field(default_factory=list)  # tokens/s of the full epochs
    head_entropy: list[list[float]] = field(default_factory=list)  # [layers][heads]
    head_max_weight: list[list[float]] = field(default_factory=list)  # [layers][heads]
    cpus: int = 0  # the CPUs its process could use (`--workers` shares them); 0: unknown


def run_row(run_dir: Path) -> RunRow:
    """Read metrics.json and result.json of a finished run."""
    metrics, result = read_json(run_dir / METRICS_FILE), read_json(run_dir / RESULT_FILE)
    epochs = metrics.get("epochs") or []
    if not epochs:
        raise NmtError(f"{run_dir / METRICS_FILE} has no finished epoch")
    return RunRow(
        name=run_dir.name, architecture=result["architecture"], score=result["score"],
        mode=result["mode"], seed=int(result["seed"]),
        factor=float(result["budget_factor"]), parameters=int(metrics["parameters"]),
        tokens_per_second=training_speed(epochs), cpus=cpus_used(result),
        epochs=int(epochs[-1]["epoch"]),
        best_epoch=int(metrics["best"]["epoch"]),
        best_val_bleu=float(metrics["best"]["val_bleu"]), test_bleu=float(result["bleu"]),
        test_chrf=float(result["chrf"]), entropy=float(result["attention_entropy"]),
        max_weight=float(result["max_attention_weight"]),
        decode_speed=float(result["sentences_per_second"]),
        curve=[(float(e["wall_time"]), float(e["val_bleu"])) for e in epochs], result=result,
        # Not the first epoch (it traces the step) nor the last (cut short by the budget).
        epoch_speeds=[float(e["tokens_per_second"]) for e in epochs[1:-1]],
        head_entropy=result.get("head_entropy") or [],
        head_max_weight=result.get("head_max_weight") or [])


@dataclass
class SettingRow:
    """The one-budget runs of one setting (architecture, score, mode): one per seed."""

    architecture: str
    score: str
    mode: str
    runs: list[RunRow]

    @property
    def setting(self) -> tuple[str, str, str]:
        return self.architecture, self.score, self.mode

    @property
    def label(self) -> str:
        """How the text names the setting: "rnn `dot` soft"."""
        return f"{self.architecture} `{self.score}` {self.mode}"

    def of(self, figure: str) -> Spread:
        """Mean and range over seeds of a RunRow attribute ("test_bleu", ...)."""
        return spread(getattr(run, figure) for run in self.runs)

    def heads(self, figure: str) -> list[list[float]]:
        """Mean over seeds of "head_entropy" or "head_max_weight", [layers][heads]."""
        tables = [getattr(run, figure) for run in self.runs if getattr(run, figure)]
        if not tables:
            return []
        return [[sum(t[layer][head] for t in tables) / len(tables)
                 for head in range(len(tables[0][layer]))] for layer in range(len(tables[0]))]


def settings_of(rows: Sequence[RunRow]) -> list[SettingRow]:
    """The one-budget runs grouped by setting, in the order of their first run."""
    groups: dict[tuple[str, str, str], SettingRow] = {}
    for row in rows:
        if not row.long:
            groups.setdefault(row.setting, SettingRow(*row.setting, [])).runs.append(row)
    return list(groups.values())


def slow_rows(rows: Sequence[RunRow]) -> dict[str, float]:
    """The runs flagged slow by `nmt.study_stats.slow_runs` (siblings: the same setting on
    as many CPUs): run name -> the median speed of its siblings."""
    return slow_runs({row.name: (row.speed_group(row.cpus), row.tokens_per_second)
                      for row in rows})
