"""The attention study's arithmetic over runs: means and spreads over seeds, rankings of
settings, and the flagging of runs that trained slower than their siblings.

Pure Python on plain numbers (no NumPy, no TensorFlow), so that the planner, the report
and `--dry-run` share it and the tests can check it by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# A run trained slower than this fraction of the median speed of its siblings is flagged.
SLOW_FRACTION = 0.75


@dataclass(frozen=True)
class Spread:
    """Mean, minimum and maximum of one figure over the runs of a setting."""

    count: int
    mean: float
    low: float
    high: float

    @property
    def width(self) -> float:
        """max - min: how far the seeds of one setting lie apart (0 for one run)."""
        return self.high - self.low


def spread(values: Iterable[float]) -> Spread:
    """Mean and range of `values` (at least one)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("spread() needs at least one value")
    return Spread(len(values), statistics.fmean(values), min(values), max(values))


def differs(a: Spread, b: Spread, floor: float = 0.0) -> bool:
    """Whether two settings' means differ by more than the noise: the larger of the two
    spreads (max - min over seeds), or `floor` when that is larger (one seed has none)."""
    return abs(a.mean - b.mean) > max(a.width, b.width, floor)


def rank(values: Mapping[Hashable, Sequence[float]]) -> list:
    """Keys by descending mean of their values; ties broken by the key (its text)."""
    return sorted(values, key=lambda key: (-statistics.fmean(values[key]), str(key)))


def training_speed(epochs: Sequence[Mapping]) -> float:
    """Target tokens per second over a whole run: all tokens / all epochs' training seconds.

    Args:
        epochs: metrics.json "epochs" records, each with "tokens" and "train_seconds".
    """
    tokens = sum(float(e["tokens"]) for e in epochs)
    seconds = sum(float(e["train_seconds"]) for e in epochs)
    return tokens / max(seconds, 1e-9)


def slow_runs(speeds: Mapping[str, tuple[Hashable, float]],
              fraction: float = SLOW_FRACTION) -> dict[str, float]:
    """The runs that trained markedly slower than their siblings.

    Args:
        speeds: run name -> (setting, tokens/s); runs of one setting (architecture, score,
            mode: other seeds and the long-budget run) are siblings.
        fraction: a run is slow below `fraction` x the median speed of its siblings.

    Returns:
        run name -> the siblings' median tokens/s, for every slow run (a run without
        siblings is never slow).
    """
    flagged = {}
    for name, (setting, speed) in speeds.items():
        siblings = [s for other, (key, s) in speeds.items() if key == setting and other != name]
        if siblings and speed < fraction * statistics.median(siblings):
            flagged[name] = statistics.median(siblings)
    return flagged
