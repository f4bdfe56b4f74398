"""The discussion of the attention study's report: paragraphs whose every claim is computed
from the runs' figures (`nmt.study_rows`).

A difference between two settings counts only when it is larger than the spread of their
seeds (max - min of the larger of the two); with a single seed per setting there is no
spread, and fixed thresholds take its place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence

from nmt.study_rows import RunRow, SettingRow, slow_rows
from nmt.study_runs import StudySettings
from nmt.study_stats import Spread, differs

# Used instead of the seeds' spread when a setting has one seed only.
BLEU_TIE = 0.5  # BLEU points
SHARPNESS_TIE = 0.05  # average weight on the most-attended source token
SPEED_TIE = 0.10  # relative difference of tokens/s
HEAD_SPREAD = 0.15  # peak weights of heads of one layer further apart than this: "spread"


def discussion(rows: Sequence[RunRow], settings: Sequence[SettingRow],
               study: StudySettings) -> list[str]:
    """Paragraphs (separated by empty strings) about `settings` and the long `rows`."""
    paragraphs = []
    slow = slow_rows(rows)
    for arch in dict.fromkeys(s.architecture for s in settings):
        soft = [s for s in settings if s.architecture == arch and s.mode == "soft"]
        if soft:
            paragraphs += [_quality(soft), _sharpness(soft), _speed(soft, slow)]
        paragraphs += [_hard_cost(hard, soft) for hard in settings
                       if hard.architecture == arch and hard.mode == "hard"]
    paragraphs += [p for p in (_architectures(settings, study), head_text(settings),
                               _long_budget(rows, settings), _slow(rows, study)) if p]
    paragraphs.append(_caveats(rows, study))
    return [p for paragraph in paragraphs for p in (paragraph, "")][:-1]


def _floor(a: SettingRow, b: SettingRow, single_seed_floor: float) -> float:
    """The threshold under the seeds' spread: `single_seed_floor` if a setting has 1 run."""
    return single_seed_floor if min(len(a.runs), len(b.runs)) < 2 else 0.0


def _noise(a: Spread, b: Spread, floor: float) -> str:
    return f"{max(a.width, b.width, floor):.2f}"


def _quality(soft: Sequence[SettingRow]) -> str:
    ranked = sorted(soft, key=lambda s: (-s.of("test_bleu").mean, s.score))
    best, worst = ranked[0], ranked[-1]
    arch = best.architecture
    if len(ranked) == 1:
        return (f"**Quality ({arch}).** `{best.score}` reached a mean test BLEU of "
                f"{best.of('test_bleu').mean:.2f}.")
    runner = ranked[1]
    a, b = best.of("test_bleu"), runner.of("test_bleu")
    floor = _floor(best, runner, BLEU_TIE)
    text = (f"**Quality ({arch}).** On the test set the soft scores range from a mean "
            f"{worst.of('test_bleu').mean:.2f} BLEU (`{worst.score}`) to {a.mean:.2f} "
            f"(`{best.score}`). ")
    if not differs(a, b, floor):
        close = [f"`{s.score}`" for s in ranked if not differs(a, s.of("test_bleu"),
                                                                _floor(best, s, BLEU_TIE))]
        text += (f"{_join(close)} lie within the noise of the best ({_noise(a, b, floor)} "
                 f"BLEU for the top two: the spread of their seeds, or {BLEU_TIE} with a "
                 "single seed), so the study names no single winner.")
    else:
        text += (f"`{best.score}` leads the next score, `{runner.score}`, by "
                 f"{a.mean - b.mean:.2f} BLEU, more than the spread of their seeds "
                 f"({_noise(a, b, floor)}).")
    val_best = max(soft, key=lambda s: (s.of("best_val_bleu").mean, s.score))
    if val_best.score != best.score:
        text += (f" By mean validation BLEU the best soft score is `{val_best.score}` "
                 f"({val_best.of('best_val_bleu').mean:.2f}), so the two sets disagree on "
                 "the order.")
    return text


def _sharpness(soft: Sequence[SettingRow]) -> str:
    ranked = sorted(soft, key=lambda s: (-s.of("max_weight").mean, s.score))
    sharp, flat = ranked[0], ranked[-1]
    arch = sharp.architecture
    peak, low = sharp.of("max_weight"), flat.of("max_weight")
    text = f"**Sharpness ({arch}).** "
    if len(ranked) == 1:
        return text + (f"`{sharp.score}` puts {peak.mean:.2f} of the weight on the "
                       "most-attended source piece on average.")
    if not differs(peak, low, _floor(sharp, flat, SHARPNESS_TIE)):
        text += (f"The soft scores align about equally sharply: the average weight on the "
                 f"most-attended source piece lies between {low.mean:.2f} and {peak.mean:.2f}, "
                 "within the spread of their seeds.")
    else:
        text += (f"`{sharp.score}` aligns sharpest, with {peak.mean:.2f} of the weight on the "
                 f"most-attended source piece on average (entropy "
                 f"{sharp.of('entropy').mean:.2f} nats), `{flat.score}` most diffusely "
                 f"({low.mean:.2f}, entropy {flat.of('entropy').mean:.2f} nats).")
    best = max(soft, key=lambda s: (s.of("test_bleu").mean, s.score))
    text += (" The sharpest-aligning score is also the best by test BLEU."
             if best.score == sharp.score else
             f" Sharper attention did not mean better translations here: `{best.score}` has "
             f"the best mean test BLEU with an average peak weight of "
             f"{best.of('max_weight').mean:.2f}.")
    return text


def _speed(soft: Sequence[SettingRow], slow: Collection[str] = ()) -> str:
    """Which soft score trains fastest: only runs on the most common number of CPUs, and
    without the runs flagged slow (a busy machine's time says nothing about the score)."""
    epochs = sorted({run.epochs for s in soft for run in s.runs})
    epoch_text = (f"every run reached {_plural(epochs[0], 'epoch')}" if len(epochs) == 1 else
                  f"runs reached {epochs[0]} to {epochs[-1]} epochs")
    fast_enough = _with_runs(soft, lambda run: run.name not in slow)
    dropped = sum(len(s.runs) for s in soft) - sum(len(s.runs) for s in fast_enough)
    soft, cpus_text = _on_common_cpus(fast_enough or soft)
    if dropped:
        cpus_text += f", without the {_plural(dropped, 'slow run')}"
    ranked = sorted(soft, key=lambda s: (-s.of("tokens_per_second").mean, s.score))
    fast, slow = ranked[0], ranked[-1]
    a, b = fast.of("tokens_per_second"), slow.of("tokens_per_second")
    text = f"**Speed ({fast.architecture}{cpus_text}).** "
    if len(ranked) == 1:
        return text + f"`{fast.score}` trained at {a.mean:,.0f} target tokens/s."
    if not differs(a, b, _floor(fast, slow, SPEED_TIE * a.mean)):
        return text + (f"The soft scores train at about the same speed, {b.mean:,.0f} to "
                       f"{a.mean:,.0f} target tokens/s on average, within the spread of "
                       f"their seeds; {epoch_text} in the budget.")
    return text + (f"`{fast.score}` trains fastest ({a.mean:,.0f} target tokens/s on "
                   f"average) and `{slow.score}` slowest ({b.mean:,.0f}, "
                   f"{1 - b.mean / a.mean:.0%} fewer), more than the spread of their seeds; "
                   f"{epoch_text} in the budget.")


def _on_common_cpus(soft: Sequence[SettingRow]) -> tuple[list[SettingRow], str]:
    """Speeds compare only between runs on as many CPUs (`--workers` shares them): the
    settings' runs on the most common count, and a note naming it when runs differ."""
    counts = Counter(run.cpus for s in soft for run in s.runs)
    if len(counts) < 2:
        return list(soft), ""
    cpus = counts.most_common(1)[0][0]
    kept = _with_runs(soft, lambda run: run.cpus == cpus)
    return kept, f", the {counts[cpus]} runs on {_plural(cpus, 'CPU')}"


def _with_runs(settings: Sequence[SettingRow], keep: Callable[[RunRow], bool]
               ) -> list[SettingRow]:
    """The settings with only the runs `keep` accepts; settings left without runs go."""
    kept = [SettingRow(s.architecture, s.score, s.mode, [r for r in s.runs if keep(r)])
            for s in settings]
    return [s for s in kept if s.runs]


def _hard_cost(hard: SettingRow, soft: Sequence[SettingRow]) -> str:
    twin = next((s for s in soft if s.score == hard.score), None)
    h = hard.of("test_bleu")
    title = f"**Hard attention, {hard.architecture} `{hard.score}`.**"
    if twin is None:
        return f"{title} Mean test BLEU {h.mean:.2f}."
    s = twin.of("test_bleu")
    floor = _floor(hard, twin, BLEU_TIE)
    if not differs(h, s, floor):
        quality = (f"its mean test BLEU ({h.mean:.2f}) is within the noise "
                   f"({_noise(h, s, floor)} BLEU) of the soft runs' ({s.mean:.2f})")
    else:
        verb = "loses" if h.mean < s.mean else "gains"
        quality = (f"it {verb} {abs(h.mean - s.mean):.2f} mean test BLEU against soft "
                   f"attention ({h.mean:.2f} vs {s.mean:.2f}; validation "
                   f"{hard.of('best_val_bleu').mean:.2f} vs {twin.of('best_val_bleu').mean:.2f})")
    speed = hard.of("tokens_per_second").mean / twin.of("tokens_per_second").mean - 1
    return (f"{title} With the same score and budget, {quality}. It trains at "
            f"{hard.of('tokens_per_second').mean:,.0f} target tokens/s ({speed:+.0%} against "
            f"soft). {_one_hot(hard)}")


def _one_hot(hard: SettingRow) -> str:
    """Hard attention is one-hot at inference; a Transformer's alignment (the average of
    its one-hot heads) is not."""
    entropy, peak = hard.of("entropy").mean, hard.of("max_weight").mean
    if peak > 0.999:
        return f"Its attention is one-hot at inference (entropy {entropy:.2f}, max weight " \
               f"{peak:.2f})."
    return (f"Every head attends one-hot at inference; their average, the alignment in the "
            f"heatmaps, has entropy {entropy:.2f} nats and max weight {peak:.2f}.")


def _architectures(settings: Sequence[SettingRow], study: StudySettings) -> str:
    best = {}
    for s in settings:
        if s.mode == "soft" and (s.architecture not in best or s.of("test_bleu").mean >
                                 best[s.architecture].of("test_bleu").mean):
            best[s.architecture] = s
    if len(best) < 2:
        return ""
    (x, a), (y, b) = sorted(best.items(), key=lambda item: -item[1].of("test_bleu").mean)[:2]
    ta, tb = a.of("test_bleu"), b.of("test_bleu")
    verdict = ("more than the spread of their seeds" if differs(ta, tb, _floor(a, b, BLEU_TIE))
               else "within the spread of their seeds, so no difference by this study's rule")
    return (f"**Architectures.** The best soft {x} (`{a.score}`, mean test BLEU {ta.mean:.2f}) "
            f"and the best soft {y} (`{b.score}`, {tb.mean:.2f}) are {ta.mean - tb.mean:.2f} "
            f"BLEU apart, {verdict}; both had the same budget ({study.budget_text()}), "
            + ("not the same wall time or number of parameters." if study.in_epochs else
               "not the same number of parameters or training tokens."))


def head_text(settings: Sequence[SettingRow]) -> str:
    """Whether some heads of a Transformer layer align while others spread: the soft
    setting and layer whose heads' mean peak weights lie furthest apart."""
    layers = [(max(layer) - min(layer), s, number, layer)
              for s in settings if s.mode == "soft"
              for number, layer in enumerate(s.heads("head_max_weight"))]
    if not layers:
        return ""
    gap, widest, number, peaks = max(layers, key=lambda item: (item[0], -item[2]))
    entropy = widest.heads("head_entropy")[number]
    sharp, flat = peaks.index(max(peaks)), peaks.index(min(peaks))
    text = (f"**Heads.** The heads of one layer differ most in layer {number + 1} of "
            f"{widest.label}: head {sharp + 1} puts {peaks[sharp]:.2f} of its weight on one "
            f"source piece (entropy {entropy[sharp]:.2f} nats), head {flat + 1} "
            f"{peaks[flat]:.2f} (entropy {entropy[flat]:.2f} nats). ")
    if gap > HEAD_SPREAD:
        return text + (f"A gap of {gap:.2f} in peak weight: some heads align while others "
                       "spread their attention.")
    return text + (f"In every soft setting and layer the heads' peak weights lie at most "
                   f"{gap:.2f} apart (the study calls more than {HEAD_SPREAD} a difference): "
                   "the heads of a layer attend alike.")


def _long_budget(rows: Sequence[RunRow], settings: Sequence[SettingRow]) -> str:
    long = [row for row in rows if row.long]
    if not long:
        return ""
    base = {s.setting: s for s in settings}
    gains = [(row, row.test_bleu - base[row.setting].of("test_bleu").mean)
             for row in long if row.setting in base]
    if not gains:
        return ""
    parts = [f"{base[row.setting].label} {gain:+.2f}" for row, gain in gains]
    by_long = [row.setting for row in sorted(long, key=lambda r: (-r.test_bleu, r.name))]
    by_short = sorted(by_long, key=lambda key: (-base[key].of("test_bleu").mean, str(key)))
    order = ("" if len(long) < 2 else "; the longer runs' ranking by test BLEU "
             + ("keeps" if by_long == by_short else "changes") + " the order of their "
             "one-budget means")
    return (f"**Longer budget.** With {long[0].factor:g} times the budget (one seed), test "
            f"BLEU changed against the one-budget mean by {_join(parts)}{order}.")


def _slow(rows: Sequence[RunRow], study: StudySettings) -> str:
    flagged = slow_rows(rows)
    if not flagged:
        return ""
    names = _join([f"`{name}`" for name in sorted(flagged)])
    text = (f"**Slow runs.** {names} trained below 75% of the median speed of their "
            "siblings (same setting and CPUs, other seeds and the longer run); the machine was "
            "probably busy. ")
    if study.in_epochs:
        return text + ("With a budget in epochs that changes their time, not their models "
                       "or scores.")
    return text + ("Rerun them with `python -m nmt.study --rerun-slow` (the old directories "
                   "are kept as `<run>.slow-<n>`).")


def _caveats(rows: Sequence[RunRow], study: StudySettings) -> str:
    improving = [r for r in rows if r.best_epoch == r.epochs]
    text = (f"**Caveats.** Each setting was trained with {_plural(len(study.seeds), 'seed')} "
            f"({', '.join(map(str, study.seeds))}) for {study.budget_text()}. "
            f"{len(improving)} of {len(rows)} runs had their best validation BLEU in their "
            "last epoch")
    if improving:
        text += ", i.e. were still improving when the budget ran out"
    return text + (". A difference is called one only when it exceeds the spread of the "
                   "seeds (max - min); with a single seed, fixed thresholds stand in "
                   f"({BLEU_TIE} BLEU, {SHARPNESS_TIE} peak weight, {SPEED_TIE:.0%} speed).")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
