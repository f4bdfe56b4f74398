"""The attention study's report: docs/attention-study.md and its figures, written from the
runs' metrics.json and result.json files alone (see `nmt.study_runs`), so that every number in it
is computed and re-running regenerates it byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmt.errors import NmtError
from nmt.files import atomic_path, atomic_write_text
from nmt.rundir import METRICS_FILE
from nmt.study_runs import (
    DEFAULT_DOCS_DIR,
    RESULT_FILE,
    STUDY_FILE,
    StudySettings,
    finished,
    plan,
    read_json,
    read_study,
)

logger = logging.getLogger(__name__)

REPORT_NAME = "attention-study"  # docs/attention-study.md and docs/attention-study/*.png
PNG_DPI = 80

# Thresholds of the discussion: smaller differences are reported as ties, not winners.
BLEU_TIE = 0.5  # BLEU points
SPEED_TIE = 0.10  # relative difference of tokens/s or sentences/s
SHARPNESS_TIE = 0.05  # average weight on the most-attended source token


@dataclass
class RunRow:
    """The figures of one finished run, as the report shows them."""

    name: str
    score: str
    mode: str
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


def run_row(run_dir: Path) -> RunRow:
    """Read metrics.json and result.json of a finished run."""
    metrics, result = read_json(run_dir / METRICS_FILE), read_json(run_dir / RESULT_FILE)
    epochs = metrics.get("epochs") or []
    if not epochs:
        raise NmtError(f"{run_dir / METRICS_FILE} has no finished epoch")
    return RunRow(
        name=run_dir.name, score=result["score"], mode=result["mode"],
        parameters=int(metrics["parameters"]), tokens_per_second=training_speed(epochs),
        epochs=int(epochs[-1]["epoch"]), best_epoch=int(metrics["best"]["epoch"]),
        best_val_bleu=float(metrics["best"]["val_bleu"]), test_bleu=float(result["bleu"]),
        test_chrf=float(result["chrf"]), entropy=float(result["attention_entropy"]),
        max_weight=float(result["max_attention_weight"]),
        decode_speed=float(result["sentences_per_second"]),
        curve=[(float(e["wall_time"]), float(e["val_bleu"])) for e in epochs], result=result,
        # Not the first epoch (it traces the step) nor the last (cut short by the budget).
        epoch_speeds=[float(e["tokens_per_second"]) for e in epochs[1:-1]])


def training_speed(epochs: Sequence[dict]) -> float:
    """Target tokens per second over the whole run: all tokens / all epochs' seconds."""
    tokens = sum(float(e["tokens"]) for e in epochs)
    seconds = sum(float(e["train_seconds"]) for e in epochs)
    return tokens / max(seconds, 1e-9)


TABLE_HEADER = ["score", "mode", "parameters", "train tokens/s", "epochs",
                "best val BLEU", "test BLEU", "test chrF", "entropy (nats)",
                "max weight", "decode sent/s"]


def table_cells(row: RunRow) -> list[str]:
    """The table cells of a run, rounded as the document shows them."""
    return [f"`{row.score}`", row.mode, f"{row.parameters:,}",
            f"{row.tokens_per_second:,.0f}", str(row.epochs), f"{row.best_val_bleu:.2f}",
            f"{row.test_bleu:.2f}", f"{row.test_chrf:.2f}", f"{row.entropy:.3f}",
            f"{row.max_weight:.3f}", f"{row.decode_speed:.1f}"]


def markdown_table(rows: Sequence[RunRow]) -> list[str]:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    return lines + ["| " + " | ".join(table_cells(row)) + " |" for row in rows]


def plot_curves(rows: Sequence[RunRow], path: Path, budget: float) -> Path:
    """Validation BLEU against wall time, one line per run (hard runs dashed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    colours = _colours(rows)
    for row in rows:
        minutes = [wall / 60.0 for wall, _ in row.curve]
        axes.plot(minutes, [bleu for _, bleu in row.curve], marker="o", markersize=3,
                  linestyle="-" if row.mode == "soft" else "--", color=colours[row.score],
                  label=row.name)
    axes.axvline(budget, color="grey", linewidth=1, linestyle=":", label="budget")
    axes.set_xlim(left=0)
    axes.set_ylim(0, 1.1 * max([bleu for row in rows for _, bleu in row.curve] + [0.1]))
    axes.set_xlabel("wall time (minutes, training + validation)")
    axes.set_ylabel("validation BLEU (greedy)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncols=2)
    return _save_figure(figure, path)


def _colours(rows: Sequence[RunRow]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    scores = list(dict.fromkeys(row.score for row in rows))
    return {score: palette(index % 10) for index, score in enumerate(scores)}


def _save_figure(figure, path: Path) -> Path:
    """Write a figure (no date in the file) to a temporary name, then rename it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=PNG_DPI)
    return path


def plot_sentence(rows: Sequence[RunRow], number: int, path: Path) -> Path:
    """Heatmaps of the `number`-th example sentence, one panel per run, in one figure."""
    from nmt.plotting import plot_attention_grid

    panels = []
    for row in rows:
        example = row.result["examples"][number]
        panels.append((row.name, np.asarray(example["attention"], dtype=np.float64),
                       example["source_tokens"], example["target_tokens"]))
    source = rows[0].result["examples"][number]["source"]
    # plot_attention_grid never overwrites; the rename does.
    with atomic_path(path, suffix=path.suffix) as temporary:
        plot_attention_grid(panels, temporary, title=source, columns=4, dpi=PNG_DPI)
    return path


def write_report(study_dir: str | Path, docs_dir: str | Path = DEFAULT_DOCS_DIR) -> Path:
    """Write docs/attention-study.md and its figures from the study's files."""
    study_dir, docs_dir = Path(study_dir), Path(docs_dir)
    saved = read_study(study_dir)
    if saved is None:
        raise NmtError(f"no study in {study_dir} (no {STUDY_FILE}); run the study first")
    settings, _ = saved
    specs = plan(settings, study_dir)
    rows = [run_row(study_dir / spec.name) for spec in specs if finished(study_dir / spec.name)]
    missing = [spec.name for spec in specs if not finished(study_dir / spec.name)]
    figures = docs_dir / REPORT_NAME
    figures.mkdir(parents=True, exist_ok=True)
    if rows:
        plot_curves(rows, figures / "curves.png", settings.budget)
        for number in range(len(settings.sentences)):
            plot_sentence(rows, number, figures / f"sentence-{number + 1}.png")
    text = render_report(settings, study_dir, docs_dir, rows, missing)
    path = docs_dir / f"{REPORT_NAME}.md"
    atomic_write_text(path, text)
    logger.info("wrote %s", path)
    return path


def render_report(settings: StudySettings, study_dir: Path, docs_dir: Path,
                  rows: Sequence[RunRow], missing: Sequence[str]) -> str:
    """The Markdown document; every number in it comes from `rows`."""
    d = settings.base_config["data"]
    lines = [
        f"# Attention study: {len(settings.scores)} scores, soft and hard, on "
        f"{d['corpus']} {d['src']}→{d['tgt']}", "",
        f"*Generated by `python -m nmt.study` from the runs in `{study_dir}` (their "
        "`metrics.json` and `result.json`); do not edit by hand. Regenerate it with "
        f"`python -m nmt.study --report-only --study-dir {study_dir} --docs-dir {docs_dir}`"
        "; running the study command again resumes or completes the study.*", "",
        "## Setup", "",
        *_setup_lines(settings, rows), "",
    ]
    if missing or len(rows) < len(settings.scores) + settings.hard_top:
        pending = ", ".join(missing)
        if all(name.endswith("-soft") for name in missing) and settings.hard_top:
            pending += (f"{'; ' if pending else ''}"
                        f"{_plural(settings.hard_top, 'hard-attention run')}, chosen once "
                        "every soft run is finished")
        lines += [f"**Unfinished study**: no results yet for {pending}. Run the study command "
                  "again to finish it.", ""]
    if not rows:
        return "\n".join(lines) + "\n"
    lines += ["## Results", "", *markdown_table(rows), "", *_column_notes(rows), "",
              "## Validation BLEU over wall time", "",
              f"![validation BLEU against wall time]({REPORT_NAME}/curves.png)", "",
              "## Attention of three test sentences", "",
              f"Sentences {', '.join(str(i + 1) for i in settings.sentences)} of "
              f"{settings.test_split} (line numbers), beam {settings.beam}, best weights; one "
              "panel per run, source pieces across, the produced target pieces down.", ""]
    for number, example in enumerate(rows[0].result["examples"]):
        lines += [f"### Sentence {number + 1}", "", f"- source: {_text(example['source'])}",
                  f"- reference: {_text(example['reference'])}"]
        lines += [f"- {row.name}: {_text(row.result['examples'][number]['translation'])}"
                  for row in rows]
        lines += ["", f"![attention of sentence {number + 1}]"
                      f"({REPORT_NAME}/sentence-{number + 1}.png)", ""]
    lines += ["## Discussion", "", *discussion(rows, settings), ""]
    return "\n".join(lines) + "\n"


def _architecture(m: dict) -> str:
    """The base config's model in a few words (configs from before issue 21 are GRU RNNs)."""
    if m.get("architecture", "rnn") == "transformer":
        return (f"pre-layer-norm Transformer, {m['layers']} encoder and {m['layers']} decoder "
                f"layers of {m['model_dim']} features, {m['heads']} heads, feed-forward "
                f"{m['ffn_dim']}")
    cell = m.get("cell", "gru").upper()
    return (f"embeddings {m['embedding_dim']}, bidirectional {cell} encoder "
            f"{m['encoder_layers']}×2×{m['encoder_units']}, {cell} decoder "
            f"{m['decoder_layers']}×{m['decoder_units']}")


def _setup_lines(settings: StudySettings, rows: Sequence[RunRow]) -> list[str]:
    m, t, d = (settings.base_config[k] for k in ("model", "train", "data"))
    machines = sorted({f"{r.result['machine']['cpu']}, {r.result['machine']['cores']} cores, "
                       f"TensorFlow {r.result['machine']['tensorflow']}" for r in rows})
    limit = (f"its first {settings.test_limit} sentences" if settings.test_limit
             else "all sentences")
    lines = [
        f"- Base config `{settings.config_file}`: {d['src']}→{d['tgt']} {d['corpus']}, "
        f"{_architecture(m)}, dropout {m['dropout']}, Adam {t['learning_rate']:g} "
        f"({t['lr_schedule']} schedule), "
        f"{t['batch_tokens']}-token batches, seed {t['seed']}. Every run uses it unchanged "
        "except for the attention score and mode.",
        f"- Budget: {settings.budget:g} minutes of wall time per run (training plus the "
        "per-epoch greedy validation), the same for every run; the epoch cut by the budget "
        "is validated too.",
        f"- Runs: soft attention with {', '.join(f'`{s}`' for s in settings.scores)}; hard "
        f"attention (argmax at inference, straight-through Gumbel-softmax in training) with "
        f"the {_best_scores(settings.hard_top)} by validation BLEU (ties broken by name). "
        "The runs were trained one after another in one process, in table order.",
        f"- Test: {settings.test_split}, {limit}, beam {settings.beam}, length penalty "
        f"{settings.length_penalty:g}, batch {settings.batch_size}, with each run's best "
        "validation weights.",
    ]
    if rows:
        lines.append(f"- sacreBLEU: BLEU `{rows[0].result['bleu_signature']}`, chrF "
                     f"`{rows[0].result['chrf_signature']}`.")
    if machines:
        lines.append(f"- Machine: {'; '.join(machines)}.")
    return lines


def _best_scores(count: int) -> str:
    return "best soft score" if count == 1 else f"{count} best soft scores"


def _column_notes(rows: Sequence[RunRow]) -> list[str]:
    return [
        "Columns: *train tokens/s* is target tokens (no padding) per second over all epochs "
        "(the first epoch includes tracing the training step); "
        "*epochs* counts the last, cut epoch; *best val BLEU* is greedy on the validation set; "
        "*test BLEU/chrF* use beam search with the best-validation weights; *entropy* and "
        "*max weight* are the mean entropy of the attention distribution and the mean weight "
        "on the most-attended source piece, over every produced target piece of the test "
        "translations (hard attention is one-hot at inference: 0 and 1 by construction); "
        "*decode sent/s* is the speed of that same test translation.",
    ]


# ------------------------------------------------------------------------- discussion
def discussion(rows: Sequence[RunRow], settings: StudySettings) -> list[str]:
    """Paragraphs whose every claim is computed from `rows`."""
    soft = [row for row in rows if row.mode == "soft"]
    hard = [row for row in rows if row.mode == "hard"]
    paragraphs = []
    if soft:
        paragraphs += [_quality(soft), _sharpness(soft), _speed(soft)]
    paragraphs += [_hard_cost(row, soft) for row in hard]
    paragraphs.append(_caveats(rows, settings))
    return [p for paragraph in paragraphs for p in (paragraph, "")][:-1]


def _quality(soft: Sequence[RunRow]) -> str:
    ranked = sorted(soft, key=lambda r: (-r.test_bleu, r.name))
    best, worst = ranked[0], ranked[-1]
    if len(ranked) == 1:
        return f"**Quality.** `{best.score}` reached test BLEU {best.test_bleu:.2f}."
    runner = ranked[1]
    gap = best.test_bleu - runner.test_bleu
    text = (f"**Quality.** On the test set the soft scores range from {worst.test_bleu:.2f} "
            f"BLEU (`{worst.score}`) to {best.test_bleu:.2f} (`{best.score}`). ")
    if gap < BLEU_TIE:
        close = [f"`{r.score}`" for r in ranked if best.test_bleu - r.test_bleu < BLEU_TIE]
        text += (f"{_join(close)} are within {BLEU_TIE} BLEU of the best; with one run per "
                 "score the study treats such gaps as ties and names no single winner.")
    else:
        text += (f"`{best.score}` leads the next score, `{runner.score}`, by {gap:.2f} BLEU; "
                 "with one run per score, treat that as a tendency rather than a ranking.")
    val_best = max(soft, key=lambda r: (r.best_val_bleu, r.name))
    if val_best.name != best.name:
        text += (f" By validation BLEU the best soft run is `{val_best.score}` "
                 f"({val_best.best_val_bleu:.2f}), so the two sets disagree on the order.")
    return text


def _sharpness(soft: Sequence[RunRow]) -> str:
    ranked = sorted(soft, key=lambda r: (-r.max_weight, r.name))
    sharp, flat = ranked[0], ranked[-1]
    if len(ranked) == 1:
        return (f"**Sharpness.** `{sharp.score}` puts {sharp.max_weight:.2f} of the weight on "
                f"the most-attended source piece on average (entropy {sharp.entropy:.2f} nats).")
    text = "**Sharpness.** "
    if sharp.max_weight - flat.max_weight < SHARPNESS_TIE:
        text += (f"The soft scores align about equally sharply: the average weight on the "
                 f"most-attended source piece lies between {flat.max_weight:.2f} and "
                 f"{sharp.max_weight:.2f}.")
    else:
        text += (f"`{sharp.score}` aligns sharpest, with {sharp.max_weight:.2f} of the weight on "
                 f"the most-attended source piece on average (entropy {sharp.entropy:.2f} "
                 f"nats), `{flat.score}` most diffusely ({flat.max_weight:.2f}, entropy "
                 f"{flat.entropy:.2f} nats).")
    lowest = min(soft, key=lambda r: (r.entropy, r.name))
    if lowest.name != sharp.name:
        text += (f" By entropy, though, `{lowest.score}` is the sharpest ({lowest.entropy:.2f} "
                 "nats): its weight is spread over fewer pieces without a larger peak.")
    best = max(soft, key=lambda r: (r.test_bleu, r.name))
    text += (" The sharpest-aligning score is also the best by test BLEU."
             if best.name == sharp.name else
             f" Sharper attention did not mean better translations here: `{best.score}` has "
             f"the best test BLEU with an average peak weight of {best.max_weight:.2f}.")
    return text


def speed_noise(rows: Sequence[RunRow]) -> float:
    """The largest relative spread of epoch speeds within one run: how much a training
    speed measurement varies by itself on this machine."""
    spreads = [1.0 - min(r.epoch_speeds) / max(r.epoch_speeds) for r in rows
               if len(r.epoch_speeds) >= 2]
    return max(spreads, default=0.0)


def _speed_margin(rows: Sequence[RunRow]) -> float:
    return max(SPEED_TIE, speed_noise(rows))


def _speed(soft: Sequence[RunRow]) -> str:
    noise = speed_noise(soft)
    margin = max(SPEED_TIE, noise)
    ranked = sorted(soft, key=lambda r: (-r.tokens_per_second, r.name))
    fast, slow = ranked[0], ranked[-1]
    epochs = sorted({r.epochs for r in soft})
    epoch_text = (f"all reached {_plural(epochs[0], 'epoch')}" if len(epochs) == 1 else
                  f"they reached {epochs[0]} to {epochs[-1]} epochs")
    if len(ranked) == 1:
        return (f"**Speed.** `{fast.score}` trained at {fast.tokens_per_second:,.0f} target "
                f"tokens/s and {epoch_text} in the budget.")
    spread = 1.0 - slow.tokens_per_second / fast.tokens_per_second
    noise_text = (f" Within single runs, epoch speeds varied by up to {noise:.0%}, so smaller "
                  f"differences than that are not evidence." if noise > SPEED_TIE else "")
    if spread < margin:
        text = (f"**Speed.** The soft scores train at about the same speed, "
                f"{slow.tokens_per_second:,.0f} to {fast.tokens_per_second:,.0f} target "
                f"tokens/s ({spread:.0%} apart, less than the {margin:.0%} the study treats as "
                f"a tie); {epoch_text} in the budget.{noise_text}")
    else:
        text = (f"**Speed.** `{fast.score}` trains fastest ({fast.tokens_per_second:,.0f} target "
                f"tokens/s) and `{slow.score}` slowest ({slow.tokens_per_second:,.0f}, "
                f"{spread:.0%} fewer); {epoch_text} in the budget.{noise_text}")
    slowest_decoder = min(soft, key=lambda r: (r.decode_speed, r.name))
    fastest_decoder = max(soft, key=lambda r: (r.decode_speed, r.name))
    decode_spread = 1.0 - slowest_decoder.decode_speed / fastest_decoder.decode_speed
    if decode_spread >= SPEED_TIE:
        text += (f" Beam search ran at {slowest_decoder.decode_speed:.0f} (`"
                 f"{slowest_decoder.score}`) to {fastest_decoder.decode_speed:.0f} sentences/s "
                 f"(`{fastest_decoder.score}`).")
    return text


def _hard_cost(hard: RunRow, soft: Sequence[RunRow]) -> str:
    twin = next((r for r in soft if r.score == hard.score), None)
    if twin is None:
        return f"**Hard `{hard.score}`.** Test BLEU {hard.test_bleu:.2f}."
    delta = hard.test_bleu - twin.test_bleu
    if abs(delta) < BLEU_TIE:
        quality = (f"its test BLEU ({hard.test_bleu:.2f}) is within {BLEU_TIE} of the soft "
                   f"run's ({twin.test_bleu:.2f}), a tie by this study's rule")
    elif delta < 0:
        quality = (f"it loses {-delta:.2f} test BLEU against the soft run ({hard.test_bleu:.2f} "
                   f"vs {twin.test_bleu:.2f}; validation {hard.best_val_bleu:.2f} vs "
                   f"{twin.best_val_bleu:.2f})")
    else:
        quality = (f"it gains {delta:.2f} test BLEU over the soft run ({hard.test_bleu:.2f} vs "
                   f"{twin.test_bleu:.2f}), one run each")
    training = _relative("Training", hard.tokens_per_second, twin.tokens_per_second,
                         "tokens/s", _speed_margin([hard, twin]))
    return (f"**Hard `{hard.score}`.** With the same score and budget, {quality}. "
            f"{training}"
            f" {_relative('Beam search', hard.decode_speed, twin.decode_speed, 'sentences/s')}"
            f" Its attention is one-hot at inference (entropy {hard.entropy:.2f}, "
            f"max weight {hard.max_weight:.2f}), so the heatmaps show which single source piece "
            "each target piece read.")


def _relative(what: str, hard: float, soft: float, unit: str,
              margin: float = SPEED_TIE) -> str:
    change = hard / soft - 1.0
    if abs(change) < margin:
        return (f"{what} speed is about the same ({hard:,.0f} vs {soft:,.0f} {unit}, within "
                f"{margin:.0%}).")
    return (f"{what} is {abs(change):.0%} {'faster' if change > 0 else 'slower'} "
            f"({hard:,.0f} vs {soft:,.0f} {unit}).")


def _caveats(rows: Sequence[RunRow], settings: StudySettings) -> str:
    improving = [r for r in rows if r.best_epoch == r.epochs]
    seed = settings.base_config["train"]["seed"]
    text = (f"**Caveats.** Each setting was trained once (seed {seed}) for {settings.budget:g} "
            f"minutes. {len(improving)} of {len(rows)} runs had their best validation BLEU in "
            "their last epoch")
    if improving:
        text += (", i.e. were still improving when the budget ran out; a larger `--budget` "
                 "may change the order")
    return text + (". Speeds are single measurements per run: one is called faster only "
                   f"when it leads by more than {SPEED_TIE:.0%} and by more than the spread of "
                   "epoch speeds within the runs compared.")


def _text(text: str) -> str:
    """A sentence as literal Markdown text; "(empty)" for an empty translation."""
    if not text.strip():
        return "(empty)"
    return "".join(f"\\{c}" if c in "\\`*_[]<>|#" else c for c in text)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


# ------------------------------------------------------------------------ command line
