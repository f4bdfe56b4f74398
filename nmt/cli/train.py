#!/usr/bin/env python
"""Train a translator: `python train.py --src de --tgt en [options]`.

Every option has a config-file equivalent (`--config FILE`, JSON or YAML); flags given on
the command line override the file. See `python train.py --help`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import importlib.util
import json
import logging
import sys
from pathlib import Path

from nmt.cli import ArgumentParser
from nmt.config import (
    ARCHITECTURES,
    CELLS,
    LR_SCHEDULES,
    POSITIONS,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

# (section, field, flag, type, help) for every configurable option, in --help order.
OPTIONS = [
    ("data", "corpus", "--corpus", str,
     "built-in corpus: multi30k or tatoeba, or several trained on as one: multi30k+tatoeba"),
    ("data", "src", "--src", str, "source language code, e.g. de"),
    ("data", "tgt", "--tgt", str, "target language code, e.g. en"),
    ("data", "data_dir", "--data-dir", str,
     "read the corpus files from this local folder instead of downloading them; with "
     "several corpora repeat it as NAME=DIR, e.g. --data-dir multi30k=DIR1 --data-dir "
     "tatoeba=DIR2"),
    ("data", "cache_dir", "--cache-dir", str, "download cache"),
    ("data", "train_src", "--train-src", str, "plain-text (or .gz) training source file"),
    ("data", "train_tgt", "--train-tgt", str, "plain-text (or .gz) training target file"),
    ("data", "valid_src", "--valid-src", str, "plain-text (or .gz) validation source file"),
    ("data", "valid_tgt", "--valid-tgt", str, "plain-text (or .gz) validation target file"),
    ("data", "src_vocab_size", "--src-vocab-size", int, "source sentencepiece vocabulary size"),
    ("data", "tgt_vocab_size", "--tgt-vocab-size", int, "target sentencepiece vocabulary size"),
    ("data", "max_length", "--max-length", int,
     "subword tokens per side; longer training pairs are dropped (and counted)"),
    ("data", "train_limit", "--train-limit", int, "use only the first N training pairs"),
    ("data", "valid_limit", "--valid-limit", int, "use only the first N validation pairs"),
    ("model", "architecture", "--architecture", str,
     "rnn: recurrent encoder-decoder with attention; transformer: pre-layer-norm Transformer "
     "whose every attention head uses --score and --attention-mode"),
    ("model", "score", "--score", str, "attention score (nmt.attention.SCORES)"),
    ("model", "attention_mode", "--attention-mode", str, "soft or hard attention"),
    ("model", "hard_temperature", "--hard-temperature", float,
     "Gumbel-softmax temperature of hard attention in training"),
    ("model", "attention_units", "--attention-units", int,
     "hidden size of the additive score (per head in a Transformer)"),
    ("model", "cell", "--cell", str, "rnn: recurrent cell of encoder and decoder"),
    ("model", "embedding_dim", "--embedding-dim", int, "rnn: embedding size"),
    ("model", "encoder_units", "--encoder-units", int, "rnn: units per encoder direction"),
    ("model", "encoder_layers", "--encoder-layers", int, "rnn: bidirectional encoder layers"),
    ("model", "decoder_units", "--decoder-units", int, "rnn: decoder units"),
    ("model", "decoder_layers", "--decoder-layers", int, "rnn: decoder layers"),
    ("model", "input_feeding", "--input-feeding", "bool",
     "rnn: Luong input feeding (steps through time in training: slower)"),
    ("model", "layers", "--layers", int, "transformer: encoder layers and decoder layers"),
    ("model", "model_dim", "--model-dim", int,
     "transformer: embedding and hidden size (a multiple of --heads)"),
    ("model", "heads", "--heads", int, "transformer: attention heads"),
    ("model", "ffn_dim", "--ffn-dim", int, "transformer: feed-forward hidden size"),
    ("model", "positions", "--positions", str, "transformer: position embeddings"),
    ("model", "max_positions", "--max-positions", int,
     "transformer: rows of learned position embeddings (later positions reuse the last)"),
    ("model", "share_embeddings", "--share-embeddings", "bool",
     "transformer: one embedding for source and target (needs equal vocabulary sizes)"),
    ("model", "alignment_layer", "--alignment-layer", int,
     "transformer: the cross-attention layer (from 0) whose head-average plots and "
     "alignments show"),
    ("model", "tie_embeddings", "--tie-embeddings", "bool",
     "share the target embedding with the output projection"),
    ("model", "dropout", "--dropout", float, "dropout rate"),
    ("model", "word_dropout", "--word-dropout", float,
     "probability of dropping a whole source or target word embedding in training"),
    ("train", "epochs", "--epochs", int, "maximum number of epochs"),
    ("train", "time_budget", "--time-budget", float,
     "stop after this many minutes of wall time (the last epoch is cut short and validated)"),
    ("train", "batch_tokens", "--batch-tokens", int,
     "tokens per batch, padding included (batch size = budget / bucket length)"),
    ("train", "learning_rate", "--learning-rate", float, "peak learning rate of Adam"),
    ("train", "lr_schedule", "--lr-schedule", str,
     "cosine anneals by the end of --epochs or --time-budget, whichever comes first"),
    ("train", "warmup_steps", "--warmup-steps", int, "linear warm-up steps"),
    ("train", "label_smoothing", "--label-smoothing", float, "label smoothing epsilon"),
    ("train", "clip_norm", "--clip-norm", float, "global gradient-norm clipping"),
    ("train", "seed", "--seed", int, "random seed (same seed + config = same run)"),
    ("train", "patience", "--patience", int,
     "early stopping: epochs without a better validation BLEU"),
    ("train", "jit_compile", "--jit-compile", "bool", "compile the training step with XLA"),
    ("train", "mixed_precision", "--mixed-precision", "bool",
     "compute in 16 bits: bfloat16 on CPUs (fast with AVX512-BF16 or AMX), float16 with "
     "dynamic loss scaling on GPUs; weights, softmax and loss stay float32"),
    ("train", "valid_beam", "--valid-beam", int, "beam size for validation BLEU (1 = greedy)"),
    ("train", "subword_sampling", "--subword-sampling", float,
     "subword regularisation: re-cut the training sentences on every pass by sampling "
     "sentencepiece segmentations with this alpha (smaller = more varied; 0 = off)"),
    ("train", "ema_decay", "--ema-decay", float,
     "validate and save an exponential moving average of the weights with this decay per "
     "step (e.g. 0.999; 0 = off)"),
]


SECTIONS = {"data": (DataConfig, "data"), "model": (ModelConfig, "model"),
            "train": (TrainConfig, "training")}
# Plain words for the value of a flag: by type, or by name for the strings.
METAVARS = {int: "N", float: "X", "src": "LANG", "tgt": "LANG", "cache_dir": "DIR",
            "train_src": "FILE", "train_tgt": "FILE", "valid_src": "FILE", "valid_tgt": "FILE"}
# What an unset (None) default means, for --help; files left unset have no default.
MEANING_OF_NONE = {"data_dir": "download into --cache-dir", "time_budget": "no limit",
                   "train_limit": "all", "valid_limit": "all",
                   "alignment_layer": "the penultimate layer"}
# Options whose values are a fixed list: argparse refuses anything else before TensorFlow loads.
CHOICES = {"attention_mode": ("soft", "hard"), "lr_schedule": LR_SCHEDULES,
           "architecture": ARCHITECTURES, "cell": CELLS, "positions": POSITIONS}


def build_parser() -> argparse.ArgumentParser:
    """The parser; every config option shows the default a bare run really uses (from the
    config dataclasses), grouped by section."""
    parser = ArgumentParser(
        prog="train.py",
        description="Train an attention-based translator (GRU or LSTM encoder-decoder, or "
                    "Transformer) on a parallel corpus. Without "
                    "--config, the defaults below apply (`python train.py --src de --tgt en` "
                    "trains on Multi30k); configs/ holds the recipes of the shipped models.")
    run = parser.add_argument_group("run")
    run.add_argument("--config", metavar="FILE",
                     help="JSON or YAML config file; flags override its values")
    run.add_argument("--run-dir", metavar="DIR", help="run directory (default: "
                     "checkpoints/<src>-<tgt>-[transformer-]<score>-<date-time>); an "
                     "existing one resumes")
    run.add_argument("--resume", action="store_true",
                     help="require --run-dir to exist and continue it")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--verbose", action="store_true",
                     help="show TensorFlow's start-up messages")
    run.add_argument("--distribute", choices=["none", "mirrored", "multi-worker"],
                     default="none",
                     help="tf.distribute strategy: mirrored = every local GPU (or the CPU); "
                     "multi-worker = the machines listed in the TF_CONFIG environment "
                     "variable, one process each, the same command on every machine "
                     "(default: none)")
    run.add_argument("--collective-timeout", type=float, default=600.0, metavar="SECONDS",
                     help="multi-worker: seconds a worker waits for the others in one "
                     "collective op before giving up (must exceed the chief's validation) "
                     "(default: 600)")
    groups = {section: parser.add_argument_group(title)
              for section, (_, title) in SECTIONS.items()}
    defaults = {section: dataclasses.asdict(cls()) for section, (cls, _) in SECTIONS.items()}
    choices = {**CHOICES, "score": tuple(score_names())}
    for section, name, flag, kind, text in OPTIONS:
        default = defaults[section][name]
        shown = MEANING_OF_NONE.get(name) if default is None else default
        add_config_option(groups[section], f"{section}.{name}", flag, kind,
                          text if shown is None else f"{text} (default: {shown})",
                          choices.get(name))
    return parser


def add_config_option(group, dest: str, flag: str, kind, text: str, choices) -> None:
    """One config flag; its parsed value stays None unless given, so a --config file's
    value is not overridden by a default."""
    metavar = None if choices else METAVARS.get(kind) or METAVARS.get(dest.split(".")[1], "NAME")
    if flag == "--data-dir":
        group.add_argument(flag, dest=dest, action="append", default=None, metavar="DIR",
                           help=text)
    elif kind == "bool":
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                           default=None, help=text)
    else:
        group.add_argument(flag, dest=dest, type=kind, default=None, choices=choices,
                           metavar=metavar, help=text)


def score_names() -> list[str]:
    """The names of `nmt.attention.SCORES`, in registration order, read from the module's
    source (every `@register_score("name")`) instead of importing it: importing it loads
    TensorFlow (seconds), and a mistyped --score should fail at once."""
    source = Path(importlib.util.find_spec("nmt.attention").origin).read_text(encoding="utf-8")
    names = []
    for node in ast.parse(source).body:
        for decorator in getattr(node, "decorator_list", []):
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == \
                    "register_score" and isinstance(decorator.args[0], ast.Constant):
                names.append(decorator.args[0].value)
    return names


def load_config_file(path: str) -> dict:
    from nmt.errors import ConfigError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte "
                          f"{error.start})") from error
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            reason = " ".join(str(error).split())  # one line, for the one-line error
            raise ConfigError(f"config file {path} is not valid YAML: {reason}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from error


def config_from_args(args: argparse.Namespace):
    """The config file's values (if any) with the command-line flags on top."""
    from nmt.config import Config
    from nmt.errors import ConfigError

    values = load_config_file(args.config) if args.config else {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {args.config}: expected an object with sections "
                          f"model, data, train; received {values!r}")
    for section, name, *_ in OPTIONS:
        value = getattr(args, f"{section}.{name}")
        if value is None:
            continue
        if isinstance(value, list) and len(value) == 1:  # --data-dir given once
            value = value[0]
        if not isinstance(values.setdefault(section, {}), dict):
            raise ConfigError(f"config file {args.config}: section {section!r}: expected an "
                              f"object, received {values[section]!r}")
        values[section][name] = value
    return Config.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from nmt.errors import NmtError
    from nmt.files import storage_errors

    try:
        if args.config:
            load_config_file(args.config)  # a missing or broken file fails before TensorFlow
        strategy = start_tensorflow(args)
        from nmt.distribute import is_chief
        from nmt.rundir import is_run_dir
        from nmt.training import train

        config = config_from_args(args)
        run_dir = args.run_dir or default_run_dir(config)
        chief = is_chief(strategy)
        if args.resume and chief and not is_run_dir(run_dir):
            raise NmtError(f"--resume: no run to resume in {run_dir}")
        with storage_errors():  # a full, read-only or forbidden disk: one line
            metrics = train(config, run_dir, progress=not args.quiet, strategy=strategy)
    except NmtError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: run it again with the same --run-dir to resume from the last "
              "finished epoch", file=sys.stderr)
        return 130
    except Exception as error:
        from nmt.distribute import is_worker_failure

        if args.distribute != "multi-worker" or not is_worker_failure(error):
            raise
        reason = " ".join(str(error).split())[:300]
        print(f"error: lost contact with another worker ({type(error).__name__}: {reason}); "
              "start every worker again with the same TF_CONFIG and --run-dir to resume from "
              "the chief's last finished epoch", file=sys.stderr)
        return 3
    if not chief:
        print("worker finished; the chief's run directory holds the results", file=sys.stderr)
        return 0
    best = metrics.get("best") or {}
    print(f"run directory: {run_dir}\nbest validation BLEU {best.get('val_bleu', float('nan')):.2f}"
          f" (epoch {best.get('epoch', '-')})", file=sys.stderr)
    return 0


def start_tensorflow(args: argparse.Namespace):
    """Import TensorFlow and make the tf.distribute strategy (before TensorFlow runs any op,
    as a multi-worker strategy needs), quietly unless --verbose (see nmt.quiet). With
    NMT_XLA_CACHE set, a `train.jit_compile` run keeps its compiled training step on disk
    (`nmt.xla_cache`), so a later run of the same model and batch shapes loads it."""
    from nmt.quiet import load_tensorflow, tensorflow_starting
    from nmt.xla_cache import enable_xla_cache

    enable_xla_cache()
    with tensorflow_starting(args.verbose):
        from nmt.distribute import make_strategy  # imports TensorFlow

        strategy = make_strategy(args.distribute, args.collective_timeout)
    load_tensorflow(verbose=args.verbose)  # runs the first op, which initialises the devices
    return strategy


def default_run_dir(config) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    architecture = "" if config.model.architecture == "rnn" else "transformer-"
    return str(Path("checkpoints") / f"{config.data.src}-{config.data.tgt}-{architecture}"
                                     f"{config.model.score}-{stamp}")


if __name__ == "__main__":
    sys.exit(main())
