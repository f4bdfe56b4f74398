"""Shared bench plumbing: machine facts, result files (JSON + Markdown table)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from nmt.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """CPU model, cores, TensorFlow version and date, recorded with every result."""
    from nmt.machine import machine_facts

    return {**machine_facts(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def write_results(name: str, payload: dict, headers: list[str], rows: list[list],
                  results_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write `<name>.json` (everything) and `<name>.md` (the table the README shows), each
    atomically: an interrupted bench leaves the previous results whole."""
    payload = {**payload, "machine": machine()}
    json_path = results_dir / f"{name}.json"
    atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    m = payload["machine"]
    lines += ["", f"{m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, {m['date']}"]
    md_path = results_dir / f"{name}.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
