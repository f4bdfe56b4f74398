"""Turn a training run into a shipped model directory: `python -m nmt.release RUN OUT`.

A shipped model holds what translation needs and nothing else: `config.json`, the two
sentencepiece models, `metrics.json`, `best.weights.h5`, whose float32 arrays are stored
as float16 (`--float32` keeps them): half the size, and `Translator.load` rebuilds the model
in float32 as before (Keras casts each array on assignment), and `checksums.json` with the
SHA-256 of the weights and tokenizers, which `Translator.load` checks. The model card
(`README.md`) is written by hand. Pure h5py and the standard library (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from nmt.errors import CheckpointError, NmtError
from nmt.rundir import (
    BEST_WEIGHTS_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILES,
    TOKENIZER_FILES,
    missing_files,
    record_checksums,
    weights_file,
)

KEEP = (*MODEL_FILES, METRICS_FILE)

WEIGHTS = BEST_WEIGHTS_FILE  # a shipped model has one set of weights, under this name
CARD = "README.md"


def copy_weights(source: Path, target: Path, dtype: np.dtype | None) -> None:
    """Copy a Keras `.weights.h5` file, casting float32 arrays to `dtype` (None: as they are)."""
    with h5py.File(source, "r") as old, h5py.File(target, "w") as new:
        for key, value in old.attrs.items():
            new.attrs[key] = value

        def visit(name: str, item) -> None:
            if isinstance(item, h5py.Group):
                group = new.require_group(name)
                for key, value in item.attrs.items():
                    group.attrs[key] = value
                return
            array = item[()]
            if dtype is not None and array.dtype == np.float32:
                array = array.astype(dtype)
            new.create_dataset(name, data=array)
            for key, value in item.attrs.items():
                new[name].attrs[key] = value

        old.visititems(visit)


def _forget_machine_paths(config_path: Path) -> None:
    """Where the corpus sat on the training machine means nothing elsewhere: the shipped
    config says `data_dir: null` (download), as a fresh checkout would."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["data"]["data_dir"] = None
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def release(run_dir: str | Path, out: str | Path, half: bool = True,
            weights: str = WEIGHTS) -> Path:
    """Write the shipped directory `out` from `run_dir` (replacing an older release of it,
    but keeping its model card). Built in a temporary directory, then renamed into place."""
    run_dir, out = Path(run_dir), Path(out)
    missing = missing_files(run_dir, (*KEEP, weights))
    if missing:
        raise CheckpointError(f"{run_dir} is not a finished run: {', '.join(missing)} missing")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in KEEP:
            shutil.copy2(run_dir / name, temporary / name)
        _forget_machine_paths(temporary / CONFIG_FILE)
        if (out / CARD).is_file():
            shutil.copy2(out / CARD, temporary / CARD)
        copy_weights(run_dir / weights, temporary / WEIGHTS, np.float16 if half else None)
        record_checksums(temporary, (*TOKENIZER_FILES, WEIGHTS))
        os.chmod(temporary, 0o755)  # mkdtemp makes it private; a release is for everyone
        for path in temporary.iterdir():
            os.chmod(path, 0o644)
        if out.exists():
            previous = out.with_name(f".{out.name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            out.rename(previous)
            temporary.rename(out)
            shutil.rmtree(previous)
        else:
            temporary.rename(out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nmt.release", description=__doc__.split(
        "\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", help="run directory written by train.py")
    parser.add_argument("out", help="shipped model directory to write, e.g. checkpoints/de-en")
    parser.add_argument("--weights", default="best", choices=["best", "last"])
    parser.add_argument("--float32", action="store_true", help="keep 32-bit weights")
    args = parser.parse_args(argv)
    try:
        path = release(args.run_dir, args.out, half=not args.float32,
                       weights=weights_file(args.weights))
    except NmtError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    size = sum(p.stat().st_size for p in path.iterdir())
    print(f"released {args.run_dir} to {path} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
