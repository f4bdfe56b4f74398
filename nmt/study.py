"""The attention study: every scoring function, soft and hard, trained and compared.

    python -m nmt.study --data-dir path/to/multi30k                      # about an hour
    python -m nmt.study --data-dir DIR --budget 20 --study-dir studies/attention-20min
    python -m nmt.study --report-only                                     # document only

One German-to-English Multi30k model is trained per score in `nmt.attention.SCORES` with
soft attention, then hard attention with the `--hard-top` scores whose soft runs reached
the best validation BLEU. Every run uses the same base config, seed and wall-clock
budget; only the score and the attention mode differ. The study directory holds

    study.json           the settings; a resumed study must use the same ones
    <score>-<mode>/      a run directory of `nmt.training.train`, plus
        result.json      test_2016_flickr evaluation (beam 5); written last, atomically

A run counts as finished when its result.json exists, so running the same command again
after an interruption skips finished runs, evaluates runs that finished training, and
resumes the interrupted training from its last checkpoint.

The report (`docs/attention-study.md` and the PNGs in `docs/attention-study/`, drawn by
`nmt.study_report`) is written from the runs' metrics.json and result.json files alone:
every number in it is computed, and `--report-only` regenerates it without data or models.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from nmt.errors import NmtError  # noqa: E402
from nmt.files import atomic_path, atomic_write_text  # noqa: E402
from nmt.machine import machine_facts  # noqa: E402

logger = logging.getLogger(__name__)

STUDY_FILE = "study.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.json"
TOKENIZER_FILES = ("source.model", "target.model")

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
    from nmt.config import Config

    return Config.load(path).to_dict()


def run_config(settings: StudySettings, spec: RunSpec, data_dir: str | None):
    """The `Config` of one run: the base config with score, mode, budget and epochs set."""
    from nmt.config import Config

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
                with atomic_path(run_dir / name) as temporary:
                    shutil.copyfile(donor / name, temporary)
            logger.info("%s: reusing the tokenizers of %s", run_dir.name, spec.name)
            return


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

    d = settings.base_config["data"]
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
    that the timed translation of the test set measures decoding only.
    """
    from nmt.evaluation import corpus_scores
    from nmt.translator import Translator

    translator = Translator.load(run_dir)
    options = {"beam": settings.beam, "alpha": settings.length_penalty,
               "batch_size": settings.batch_size}
    examples = translator.translate([source for _, source, _ in test.examples], **options)
    start = time.perf_counter()
    translations = translator.translate(test.sources, **options)
    seconds = time.perf_counter() - start
    scores = corpus_scores([t.text for t in translations], test.references)
    entropy, max_weight, tokens = attention_statistics([t.attention for t in translations])
    result = {
        "run": spec.name, "score": spec.score, "mode": spec.mode, "split": settings.test_split,
        "sentences": len(test.sources), "beam": settings.beam,
        "length_penalty": settings.length_penalty, "weights": "best.weights.h5",
        **scores, "attention_entropy": entropy, "max_attention_weight": max_weight,
        "target_tokens": tokens, "decode_seconds": seconds,
        "sentences_per_second": len(test.sources) / max(seconds, 1e-9),
        "examples": [_example(index, reference, t) for (index, _, reference), t
                     in zip(test.examples, examples, strict=True)],
        "machine": machine_facts(),
    }
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    return result


def attention_statistics(matrices: Sequence[np.ndarray]) -> tuple[float, float, int]:
    """Mean entropy (nats) and mean largest weight of the attention rows of all target
    tokens (EOS included), and the number of rows; empty translations are skipped."""
    import tensorflow as tf

    from nmt.attention import attention_entropy

    rows = [np.asarray(m, np.float32) for m in matrices if np.size(m)]
    if not rows:
        return float("nan"), float("nan"), 0
    entropies = np.concatenate([attention_entropy(tf.constant(m)).numpy() for m in rows])
    maxima = np.concatenate([m.max(axis=1) for m in rows])
    return float(entropies.mean()), float(maxima.mean()), int(maxima.size)


def _example(index: int, reference: str, translation) -> dict:
    return {"index": index, "source": translation.source, "reference": reference,
            "translation": translation.text, "source_tokens": translation.source_tokens,
            "target_tokens": translation.target_tokens,
            "attention": np.round(translation.attention, 4).tolist()}




def run_study(settings: StudySettings, study_dir: str | Path, data_dir: str | None = None,
              progress: bool = True) -> list[RunSpec]:
    """Train and evaluate every run that is not finished yet; returns the full plan."""
    study_dir = Path(study_dir)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise NmtError(f"--data-dir {data_dir}: no such directory")
    study_dir.mkdir(parents=True, exist_ok=True)
    write_study(study_dir, settings, data_dir)
    test: EvaluationSet | None = None
    total = len(settings.scores) + settings.hard_top
    done: list[RunSpec] = []
    while True:
        todo = [spec for spec in plan(settings, study_dir) if spec not in done]
        if not todo:
            return done
        spec = todo[0]
        done.append(spec)
        run_dir = study_dir / spec.name
        if finished(run_dir):
            logger.info("[%d/%d] %s: finished earlier, skipped", len(done), total, spec.name)
            continue
        if not training_done(run_dir):
            logger.info("[%d/%d] %s: training for %g minutes", len(done), total, spec.name,
                        settings.budget)
            share_tokenizers(study_dir, run_dir, done)
            train_run(settings, spec, run_dir, data_dir, progress)
        test = test or load_test_set(settings, data_dir)
        logger.info("[%d/%d] %s: evaluating on %s (%d sentences, beam %d)", len(done), total,
                    spec.name, settings.test_split, len(test.sources), settings.beam)
        result = evaluate_run(settings, spec, run_dir, test)
        logger.info("[%d/%d] %s: BLEU %.2f  chrF %.2f", len(done), total, spec.name,
                    result["bleu"], result["chrf"])
        gc.collect()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nmt.study",
        description="Train one Multi30k model per attention score (soft, then hard for the "
                    "best scores) with identical settings and budget, and write "
                    "docs/attention-study.md. Running it again resumes the study.")
    parser.add_argument("--data-dir", help="local Multi30k folder (default: download into the "
                        "config's cache_dir)")
    parser.add_argument("--config", help=f"base config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--budget", type=float,
                        help=f"minutes of wall time per run (default: {DEFAULT_BUDGET:g})")
    parser.add_argument("--study-dir", default=DEFAULT_STUDY_DIR,
                        help="the study's runs and study.json (default: %(default)s)")
    parser.add_argument("--docs-dir", default=DEFAULT_DOCS_DIR,
                        help="where attention-study.md and its figures go (default: "
                             "%(default)s)")
    parser.add_argument("--scores", nargs="+", metavar="SCORE",
                        help="soft-attention scores to train (default: all of SCORES)")
    parser.add_argument("--hard-top", type=int, help="hard-attention runs for the N best "
                        f"soft scores (default: {DEFAULT_HARD_TOP})")
    parser.add_argument("--test-limit", type=int,
                        help="evaluate on the first N test sentences only (default: all)")
    parser.add_argument("--report-only", action="store_true",
                        help="only regenerate the document from the finished runs")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    return parser


def requested_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The StudySettings values given on the command line (None = not given)."""
    return {"base_config": load_base_config(args.config) if args.config else None,
            "config_file": args.config, "budget": args.budget, "scores": args.scores,
            "hard_top": args.hard_top, "test_limit": args.test_limit}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    study_dir = Path(args.study_dir)
    try:
        saved = read_study(study_dir)
        if args.report_only:
            if saved is None:
                raise NmtError(f"--report-only: no study in {study_dir}; run it first")
            resolve_settings(requested_settings(args), saved[0], study_dir)
        else:
            settings = resolve_settings(requested_settings(args),
                                        saved[0] if saved else None, study_dir)
            data_dir = args.data_dir or (saved[1] if saved else None)
            run_study(settings, study_dir, data_dir, progress=not args.quiet)
        from nmt.study_report import write_report

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
