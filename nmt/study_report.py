"""The attention study's report: docs/attention-study.md and its figures, written from the
runs' metrics.json and result.json files alone (see `nmt.study_runs` and `nmt.study_rows`),
so that every number in it is computed and re-running regenerates it byte for byte. The
discussion's paragraphs come from `nmt.study_discussion`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nmt.errors import NmtError
from nmt.files import atomic_path, atomic_write_text
from nmt.study_discussion import discussion
from nmt.study_plan import outline, plan
from nmt.study_rows import RunRow, SettingRow, run_row, settings_of, slow_rows
from nmt.study_runs import (
    DEFAULT_DOCS_DIR,
    STEP_SCHEDULES,
    STUDY_FILE,
    StudySettings,
    finished,
    read_study,
)
from nmt.study_stats import Spread

logger = logging.getLogger(__name__)

REPORT_NAME = "attention-study"  # docs/attention-study.md and docs/attention-study/*.png
PNG_DPI = 80
SLOW_NOTE = "slow: trained slower than its siblings; rerun it"
SLOW_NOTE_EPOCHS = "slow: trained slower than its siblings (the same model, later)"


# ------------------------------------------------------------------------- tables
def _range(value: Spread, digits: int = 2) -> str:
    """"mean (min–max)" of a figure over seeds."""
    return f"{value.mean:.{digits}f} ({value.low:.{digits}f}–{value.high:.{digits}f})"


SETTING_HEADER = ["architecture", "score", "mode", "seeds", "best val BLEU", "test BLEU",
                  "test chrF", "train tokens/s", "entropy (nats)", "max weight"]


def setting_cells(setting: SettingRow) -> list[str]:
    """A row of the results table: mean (min–max) over seeds, means of the rest."""
    return [setting.architecture, f"`{setting.score}`", setting.mode, str(len(setting.runs)),
            _range(setting.of("best_val_bleu")), _range(setting.of("test_bleu")),
            _range(setting.of("test_chrf")), f"{setting.of('tokens_per_second').mean:,.0f}",
            f"{setting.of('entropy').mean:.3f}", f"{setting.of('max_weight').mean:.3f}"]


RUN_HEADER = ["run", "seed", "budget", "parameters", "CPUs", "train tokens/s", "epochs",
              "best val BLEU", "test BLEU", "test chrF", "decode sent/s", "note"]


def run_cells(row: RunRow, study: StudySettings, slow: dict[str, float]) -> list[str]:
    """A row of the runs table; the note flags a run slower than its siblings."""
    return [f"`{row.name}`", str(row.seed), study.budget_text(row.factor, short=True),
            f"{row.parameters:,}", str(row.cpus),
            f"{row.tokens_per_second:,.0f}", str(row.epochs), f"{row.best_val_bleu:.2f}",
            f"{row.test_bleu:.2f}", f"{row.test_chrf:.2f}", f"{row.decode_speed:.1f}",
            (SLOW_NOTE_EPOCHS if study.in_epochs else SLOW_NOTE) if row.name in slow
            else ""]


LONG_HEADER = ["run", "budget", "best val BLEU", "test BLEU", "test chrF",
               "one-budget best val BLEU", "one-budget test BLEU", "test BLEU change"]


def long_cells(row: RunRow, base: SettingRow, study: StudySettings) -> list[str]:
    """A longer run beside the mean (min–max) of its setting's one-budget runs."""
    return [f"`{row.name}`", study.budget_text(row.factor, short=True),
            f"{row.best_val_bleu:.2f}",
            f"{row.test_bleu:.2f}", f"{row.test_chrf:.2f}", _range(base.of("best_val_bleu")),
            _range(base.of("test_bleu")), f"{row.test_bleu - base.of('test_bleu').mean:+.2f}"]


def head_tables(settings: Sequence[SettingRow]) -> list[str]:
    """Per Transformer setting and layer, every head's "max weight / entropy", means over
    seeds; [] without per-head statistics."""
    lines: list[str] = []
    for setting in settings:
        peak, entropy = setting.heads("head_max_weight"), setting.heads("head_entropy")
        if not peak:
            continue
        if not lines:
            header = ["score", "mode", "layer"] + [f"head {h + 1}" for h in range(len(peak[0]))]
            lines = markdown_table(header, [])
        lines += [_table_row([f"`{setting.score}`", setting.mode, str(layer + 1)]
                             + [f"{p:.2f} / {e:.2f}" for p, e in zip(peak[layer],
                                                                     entropy[layer],
                                                                     strict=True)])
                  for layer in range(len(peak))]
    return lines


def _table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_table_row(header), "|" + "---|" * len(header)] + [_table_row(r) for r in rows]


# ------------------------------------------------------------------------ figures
def plot_curves(rows: Sequence[RunRow], path: Path, study: StudySettings) -> Path:
    """Validation BLEU against epochs (a budget in epochs) or wall time (in minutes), one
    panel per architecture and one colour per score; every run a thin line (hard runs
    dashed, longer runs thick)."""
    from matplotlib.figure import Figure

    architectures = list(dict.fromkeys(row.architecture for row in rows))
    figure = Figure(figsize=(6.0 * len(architectures), 4.5), layout="constrained")
    panels = figure.subplots(1, len(architectures), squeeze=False, sharey=True)[0]
    colours = _colours(rows)
    top = 1.1 * max([bleu for row in rows for _, bleu in row.curve] + [0.1])
    for axes, arch in zip(panels, architectures, strict=True):
        labelled = set()
        for row in (r for r in rows if r.architecture == arch):
            label = f"{row.score} {row.mode}" + (f" x{row.factor:g}" if row.long else "")
            times = (range(1, len(row.curve) + 1) if study.in_epochs
                     else [wall / 60.0 for wall, _ in row.curve])
            axes.plot(times, [b for _, b in row.curve],
                      marker="o", markersize=2.5, linestyle="-" if row.mode == "soft" else "--",
                      linewidth=2.0 if row.long else 0.9, color=colours[row.score],
                      label=None if label in labelled else label)
            labelled.add(label)
        axes.axvline(study.run_budget(), color="grey", linewidth=1, linestyle=":",
                     label="budget")
        axes.set_xlim(left=0)
        axes.set_ylim(0, top)
        axes.set_title(arch)
        axes.set_xlabel("epoch" if study.in_epochs
                        else "wall time (minutes, training + validation)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncols=2)
    panels[0].set_ylabel("validation BLEU (greedy)")
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


def _text(text: str) -> str:
    """A sentence as literal Markdown text; "(empty)" for an empty translation."""
    if not text.strip():
        return "(empty)"
    return "".join(f"\\{c}" if c in "\\`*_[]<>|#" else c for c in text)




# ----------------------------------------------------------------------- document
def write_report(study_dir: str | Path, docs_dir: str | Path = DEFAULT_DOCS_DIR) -> Path:
    """Write docs/attention-study.md and its figures from the study's files."""
    study_dir, docs_dir = Path(study_dir), Path(docs_dir)
    saved = read_study(study_dir)
    if saved is None:
        raise NmtError(f"no study in {study_dir} (no {STUDY_FILE}); run the study first")
    settings, _ = saved
    specs = plan(settings, study_dir)
    rows = [run_row(study_dir / spec.name) for spec in specs if finished(study_dir / spec.name)]
    examples = example_rows(rows, settings)
    figures = docs_dir / REPORT_NAME
    figures.mkdir(parents=True, exist_ok=True)
    if rows:
        plot_curves(rows, figures / "curves.png", settings)
        for number in range(len(settings.sentences) if examples else 0):
            plot_sentence(examples, number, figures / f"sentence-{number + 1}.png")
    text = render_report(settings, study_dir, docs_dir, rows)
    path = docs_dir / f"{REPORT_NAME}.md"
    atomic_write_text(path, text)
    logger.info("wrote %s", path)
    return path


def example_rows(rows: Sequence[RunRow], settings: StudySettings) -> list[RunRow]:
    """The runs whose heatmaps and translations are shown: the first seed's one-budget
    runs."""
    return [row for row in rows if not row.long and row.seed == settings.seeds[0]]


def render_report(settings: StudySettings, study_dir: Path, docs_dir: Path,
                  rows: Sequence[RunRow]) -> str:
    """The Markdown document; every number in it comes from `rows`."""
    d = next(iter(settings.base_configs.values()))["data"]
    lines = [
        f"# Attention study: {len(settings.scores)} scores, soft and hard, "
        f"{_join(settings.architectures)}, on {d['corpus']} {d['src']}→{d['tgt']}", "",
        f"*Generated by `python -m nmt.study` from the runs in `{study_dir}` (their "
        "`metrics.json` and `result.json`); do not edit by hand. Regenerate it with "
        f"`python -m nmt.study --report-only --study-dir {study_dir} --docs-dir {docs_dir}`"
        "; running the study command again resumes or completes the study. Every run also "
        f"wrote TensorBoard logs (scalars, attention heatmaps, translations, hyperparameters "
        f"including architecture, score, mode and seed): `tensorboard --logdir {study_dir}`.*",
        "", "## Setup", "", *_setup_lines(settings, rows), "",
    ]
    missing = [run.name for run in outline(settings, study_dir) if not run.done]
    if missing:
        lines += [f"**Unfinished study**: no results yet for {', '.join(missing)}. Run the "
                  "study command again to finish it.", ""]
    if not rows:
        return "\n".join(lines) + "\n"
    return "\n".join(lines + _results(settings, rows) + _sentences(settings, rows)
                     + ["## Discussion", "",
                        *discussion(rows, settings_of(rows), settings), ""]) + "\n"


def _results(settings: StudySettings, rows: Sequence[RunRow]) -> list[str]:
    """The tables (settings, longer runs, runs, heads) and the curves."""
    grouped = settings_of(rows)
    slow = slow_rows(rows)
    lines = ["## Results", "", *markdown_table(SETTING_HEADER, map(setting_cells, grouped)),
             "", *_column_notes(), ""]
    base = {s.setting: s for s in grouped}
    long = [row for row in rows if row.long and row.setting in base]
    if long:
        lines += ["## Longer budget", "",
                  f"The best settings by mean validation BLEU, and additive soft attention of "
                  f"each architecture, trained once more (seed {settings.seeds[0]}) with "
                  f"{settings.long_factor:g} times the budget, beside the mean (min–max) of "
                  "their one-budget runs.", "",
                  *markdown_table(LONG_HEADER, [long_cells(row, base[row.setting], settings)
                                                for row in long]),
                  ""]
    lines += ["## Runs", "", "Every run on its own; *CPUs* are those its process could use "
              "(`--workers` pins each worker to its share); *note* flags a run that trained "
              "below 75% of the median speed of its siblings (same setting on as many CPUs: "
              "other seeds and the longer run), "
              + ("which with a budget in epochs changes its time, not its model."
                 if settings.in_epochs else "to be trained again with `--rerun-slow`."),
              "", *markdown_table(RUN_HEADER, [run_cells(row, settings, slow)
                                               for row in rows]), ""]
    heads = head_tables(grouped)
    if heads:
        lines += ["## Transformer heads", "",
                  "Cross-attention per layer and head of the Transformer runs on the test "
                  "translations: mean largest weight / mean entropy (nats), means over seeds. "
                  "The translations' attention (heatmaps, the results table) is the "
                  "alignment layer's average over heads.", "", *heads, ""]
    axis = "epochs" if settings.in_epochs else "wall time"
    return lines + [f"## Validation BLEU over {axis}", "",
                    f"![validation BLEU against {axis}]({REPORT_NAME}/curves.png)", ""]


def _sentences(settings: StudySettings, rows: Sequence[RunRow]) -> list[str]:
    """The heatmap sentences: source, reference, each shown run's translation, figure."""
    shown = example_rows(rows, settings)
    if not shown:
        return []
    lines = ["## Attention of three test sentences", "",
             f"Sentences {', '.join(str(i + 1) for i in settings.sentences)} of "
             f"{settings.test_split} (line numbers), beam {settings.beam}, best weights; one "
             f"panel per run of seed {settings.seeds[0]} (a Transformer's panel is its "
             "alignment layer's average over heads), source pieces across, the produced "
             "target pieces down.", ""]
    for number, example in enumerate(shown[0].result["examples"]):
        lines += [f"### Sentence {number + 1}", "", f"- source: {_text(example['source'])}",
                  f"- reference: {_text(example['reference'])}"]
        lines += [f"- {row.name}: {_text(row.result['examples'][number]['translation'])}"
                  for row in shown]
        lines += ["", f"![attention of sentence {number + 1}]"
                      f"({REPORT_NAME}/sentence-{number + 1}.png)", ""]
    return lines


def _setup_lines(settings: StudySettings, rows: Sequence[RunRow]) -> list[str]:
    machines = sorted({f"{r.result['machine']['cpu']}, {r.result['machine']['cores']} cores, "
                       f"TensorFlow {r.result['machine']['tensorflow']}" for r in rows})
    shares = sorted({(r.cpus, r.result["machine"]["cores"]) for r in rows})
    limit = (f"its first {settings.test_limit} sentences" if settings.test_limit
             else "all sentences")
    lines = []
    for arch, base in settings.base_configs.items():
        m, t, d = base["model"], base["train"], base["data"]
        lines.append(
            f"- {arch}: base config `{settings.config_files.get(arch, '?')}`: "
            f"{d['src']}→{d['tgt']} {d['corpus']}, {_architecture(m)}, dropout {m['dropout']}, "
            f"Adam {t['learning_rate']:g} ({t['lr_schedule']} schedule, {t['warmup_steps']} "
            f"warm-up steps), {t['batch_tokens']}-token batches"
            f"{', bfloat16 mixed precision' if t.get('mixed_precision') else ''}"
            f"{', XLA' if t.get('jit_compile') else ''}. Every run uses it unchanged except "
            "for the attention score, the mode and the seed.")
    lines += [f"- {_budget_text(settings)} Seeds: {', '.join(map(str, settings.seeds))} "
              "(`train.seed`).",
        f"- Runs: soft attention with {', '.join(f'`{s}`' for s in settings.scores)} for "
        f"each architecture and seed; hard attention (argmax at inference, straight-through "
        f"Gumbel-softmax in training) with the {_best_scores(settings.hard_top)} of each "
        "architecture by mean validation BLEU (ties broken by name); then "
        f"{_long_text(settings)}. {_workers_text(shares)}",
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


def _workers_text(shares: Sequence[tuple[int, int]]) -> str:
    """How the runs shared the machine: (CPUs a run could use, the machine's cores) pairs."""
    if all(cpus == cores for cpus, cores in shares):
        return "The runs were trained one after another, seed by seed, each on the whole machine."
    counts = " or ".join(sorted({str(cpus) for cpus, _ in shares}))
    return (f"The runs were trained seed by seed, some side by side (`--workers`): each "
            f"process was pinned to {counts} of the machine's cores (see each run's CPUs in "
            "the runs table); speeds compare only between runs on as many CPUs.")


def _budget_text(settings: StudySettings) -> str:
    if not settings.in_epochs:
        return (f"Budget: {settings.budget_text()} of wall time per run (training plus the "
                "per-epoch greedy validation), the same for every run; the epoch cut by the "
                "budget is validated too.")
    schedules = " ".join(_schedule_text(settings, arch) for arch in settings.base_configs)
    return (f"Budget: {settings.budget_text()} per run, the same for every run; a budget in "
            "epochs gives the same models on any machine, however busy, and the runs' speeds "
            f"say what each costs in time. {schedules}")


def _schedule_text(settings: StudySettings, architecture: str) -> str:
    """One sentence on how `architecture`'s learning-rate schedule meets the budget (the
    same split as `StudySettings.long_runs_continue`)."""
    schedule = settings.base_configs[architecture]["train"].get("lr_schedule")
    if schedule in STEP_SCHEDULES:
        return (f"The {architecture}'s `{schedule}` schedule depends on the step alone, not "
                "on the run's length.")
    return f"The {architecture}'s {schedule} schedule anneals over exactly the run's epochs."


def _long_text(settings: StudySettings) -> str:
    if not settings.long_top:
        return "no longer-budget runs (`--long-top 0`)"
    best = ("the best setting" if settings.long_top == 1 else
            f"the {settings.long_top} best settings")
    text = (f"the longer-budget check: {best} overall by mean validation BLEU, plus additive "
            f"soft attention of each architecture, once each (seed {settings.seeds[0]}) with "
            f"{settings.long_factor:g} times the budget")
    continuing = [arch for arch in settings.base_configs
                  if settings.long_runs_continue(arch)]
    if continuing:
        text += (f" (a longer {_join(continuing)} run goes on from its seed's one-budget run "
                 "instead of training its first epochs again, since its learning rate depends "
                 "on the step alone")
        afresh = [arch for arch in settings.base_configs if arch not in continuing]
        text += (f"; a longer {_join(afresh)} run trains afresh)" if afresh else ")")
    return text


def _best_scores(count: int) -> str:
    return "best soft score" if count == 1 else f"{count} best soft scores"


def _column_notes() -> list[str]:
    return [
        "Columns: *seeds* is the number of runs of the setting; figures are the mean over "
        "them with (min–max); *best val BLEU* is greedy on the validation set; *test "
        "BLEU/chrF* use beam search with the best-validation weights; *train tokens/s* is "
        "target tokens (no padding) per second over all epochs (the first includes tracing "
        "the training step); *entropy* and *max weight* are the mean entropy of the "
        "attention distribution and the mean weight on the most-attended source piece, over "
        "every produced target piece of the test translations (for a Transformer: of its "
        "alignment layer's average over heads; hard attention is one-hot at inference, so "
        "an RNN's shows 0 and 1 by construction). The Transformer's test translation also "
        "computes every head's attention, inside its timed decoding.",
    ]


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
