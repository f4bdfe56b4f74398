"""The repository's own promises: README's set-up commands are what CI runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_setup_commands() -> list[str]:
    """The lines of README.md's first code block: the two set-up commands."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README.md starts without a bash block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_ci_installs_as_readme_says_and_runs_its_test_command():
    install_and_run, test_command = readme_setup_commands()
    install = install_and_run.split("&&")[0].strip()
    commands = ci_commands()
    assert any(line.endswith(install.removeprefix("pip install ")) and "pip install" in line
               for line in commands), f"CI does not install as README says: {install}"
    assert commands[-1] == test_command, "CI's last command is not README's test command"


def test_the_test_command_is_an_executable_script_that_runs_pytest():
    script = REPO / readme_setup_commands()[1].split()[0]
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert "chromium-driver" in text
    assert 'exec python -m pytest -n 2 --dist loadfile "$@"' in text
    # -n needs pytest-xdist, which README's install command brings with the test extras
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    test_extras = re.search(r"^test = \[(.*)\]$", pyproject, re.MULTILINE)
    assert test_extras and '"pytest-xdist' in test_extras.group(1)
