"""The models shipped with nmt: run directories under `checkpoints/`, picked by name.

`translate.py --model NAME` (and `serve`, `export`, `Translator.load(NAME)`) loads
`checkpoints/NAME/` (in an installed wheel, `nmt/models/NAME/`); `--checkpoint DIR` loads any
run directory instead. Pure Python (no TensorFlow).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt.errors import CheckpointError, NmtError
from nmt.rundir import is_run_dir

# A wheel carries the shipped models as the package `nmt.models` (pyproject.toml maps the
# checkout's checkpoints/ there); a source checkout or editable install reads checkpoints/.
_PACKAGED_DIR = Path(__file__).resolve().parent / "models"
SHIPPED_DIR = (_PACKAGED_DIR if _PACKAGED_DIR.is_dir()
               else Path(__file__).resolve().parent.parent / "checkpoints")
DEFAULT_MODEL = "de-en"


def shipped_models(folder: Path = SHIPPED_DIR) -> list[str]:
    """Names of the run directories (those with a config.json) under `folder`, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if is_run_dir(p))


def model_dir(name: str, folder: Path = SHIPPED_DIR) -> Path:
    """The run directory of shipped model `name`; CheckpointError listing them if unknown."""
    names = shipped_models(folder)
    if name not in names:
        listing = ", ".join(names) if names else "none (checkpoints/ is empty)"
        raise CheckpointError(f"unknown model '{name}'; shipped models: {listing}. Use "
                              "--checkpoint DIR for a run directory of your own")
    return folder / name


class ModelChoice(argparse.Action):
    """`--model NAME`: stores the name and remembers it was given (it conflicts with
    `--checkpoint`); with `nargs="append"`-like use (serve) collects every name given."""

    def __init__(self, *args, collect: bool = False, **kwargs):
        self.collect = collect
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.collect:
            given = getattr(namespace, "models_given", None) or []
            given.append(values)
            namespace.models_given = given
            setattr(namespace, self.dest, given)
        else:
            namespace.models_given = [values]
            setattr(namespace, self.dest, values)


def add_model_options(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """`--model NAME` (repeatable when `several`) and `--checkpoint DIR` on `parser`."""
    names = ", ".join(shipped_models()) or "none yet"
    parser.add_argument(
        "--model", action=ModelChoice, collect=several,
        default=[DEFAULT_MODEL] if several else DEFAULT_MODEL,
        help=f"shipped model under checkpoints/, one of: {names}"
             + ("; repeat it to serve several" if several else ""))
    parser.add_argument(
        "--checkpoint", action="append" if several else "store", default=None,
        help="a run directory written by train.py, instead of --model"
             + ("; repeatable" if several else ""))


def chosen_directories(args: argparse.Namespace) -> list[Path]:
    """The run directories that `--model`/`--checkpoint` on `args` name (NmtError if both)."""
    models_given = getattr(args, "models_given", None)
    checkpoints = args.checkpoint
    if checkpoints is not None and models_given:
        raise NmtError("give --model NAME or --checkpoint DIR, not both")
    if checkpoints is not None:
        return [Path(c) for c in (checkpoints if isinstance(checkpoints, list)
                                  else [checkpoints])]
    names = args.model if isinstance(args.model, list) else [args.model]
    if len(set(names)) != len(names):
        raise NmtError(f"--model names a model twice: {', '.join(names)}")
    return [model_dir(name) for name in names]


def find_model(name_or_path: str | Path, folder: Path = SHIPPED_DIR) -> Path:
    """A run directory given by path, or a shipped model given by name ("de-en").

    An existing directory wins; a bare name (a `str` without a folder) that is not one is
    looked up among the shipped models; anything else comes back as the path it names.
    """
    path = Path(name_or_path)
    if not path.is_dir() and isinstance(name_or_path, str) and len(path.parts) == 1 \
            and name_or_path in shipped_models(folder):
        return folder / name_or_path
    return path
