"""A normal (non-editable) install: a wheel built from the checkout gives the console
commands, the shipped models and the Python API, used from a folder outside the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.shipped import SHIPPED_DIR, shipped_models

REPO = Path(__file__).resolve().parents[1]
API_CALL = ("import nmt\nfrom nmt import Translator\n"
            "print(nmt.__file__)\n"
            "print(Translator.load('de-en').translate(['Ein Hund rennt.'])[0].text)\n")


def copy_checkout(target: Path) -> Path:
    """The files a wheel is built from, without the checkout's runs, caches and build dirs."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "nmt", target / "nmt",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in shipped_models(SHIPPED_DIR):
        shutil.copytree(SHIPPED_DIR / name, target / "checkpoints" / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtualenv (seeing this machine's TensorFlow) with the wheel of this checkout."""
    root = tmp_path_factory.mktemp("install")
    (root / "source").mkdir()
    source = copy_checkout(root / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source),
                    "--wheel-dir", str(root / "wheels")], check=True, timeout=600)
    wheel = next((root / "wheels").glob("nmt-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=600)
    (root / "elsewhere").mkdir()
    return venv


def test_the_console_command_translates_from_another_folder(installed):
    result = subprocess.run([str(installed / "bin" / "nmt-translate"), "Ein Hund rennt."],
                            cwd=installed.parent / "elsewhere", capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lower().startswith("a dog")
    assert result.stderr == ""


def test_the_train_command_is_installed_and_answers_help(installed):
    result = subprocess.run([str(installed / "bin" / "nmt-train"), "--help"],
                            cwd=installed.parent / "elsewhere", capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--src" in result.stdout and "--corpus" in result.stdout


def test_the_python_api_loads_a_shipped_model_by_name(installed):
    result = subprocess.run([str(installed / "bin" / "python"), "-c", API_CALL],
                            cwd=installed.parent / "elsewhere", capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    module_file, translation = result.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(installed)  # the wheel's nmt, not the checkout's
    assert translation.lower().startswith("a dog")
