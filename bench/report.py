"""The run's report: the JSON written to artifacts/bench.json and the table printed at the end."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.sizes import Sizes


def make_report(
    *,
    smoke: bool,
    sizes: Sizes,
    total_seconds: float,
    log_dir: Path,
    problems: list[str],
    results: dict[str, Any],
) -> dict[str, Any]:
    """Everything bench.json holds: when and where it ran, at what sizes, and the figures."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "smoke": smoke,
        "sizes": sizes.__dict__,
        "total_seconds": round(total_seconds, 1),
        "logs": str(log_dir),
        "problems": problems,
        "scenarios": results,
    }


def table(results: dict[str, Any]) -> str:
    """One line per figure: scenario, figure (nested names dotted), value."""
    lines: list[str] = []

    def row(scenario: str, what: str, value: Any) -> None:
        lines.append(f"{scenario:<12} {what:<34} {value}")

    row("scenario", "figure", "value")
    lines.append("-" * 72)
    for scenario, figures in results.items():
        for what, value in flatten(figures):
            row(scenario, what, value)
    return "\n".join(lines)


def flatten(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested figures as (dotted name, value) pairs, in order."""
    out: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if isinstance(value, dict):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out
