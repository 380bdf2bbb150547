"""Job types: plain functions registered by name with ``@job``.

A job function takes its ``input`` dict and a ``JobContext`` and returns a JSON-serialisable
result. Raising any exception fails the job with a readable error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

BUILTIN_MODULES = ("app.jobtypes.builtin",)


class JobContext:
    """What a running job may use: its id and a way to report progress."""

    def __init__(self, job_id: str, report: Callable[[dict[str, Any]], None]):
        self.job_id = job_id
        self._report = report

    def progress(self, percent: float, message: str | None = None) -> None:
        """Record progress (0-100) and raise a ``job.progress`` event for subscribers."""
        self._report(
            {"percent": round(max(0.0, min(100.0, float(percent))), 2), "message": message}
        )


JobFunction = Callable[[dict[str, Any], JobContext], Any]


@dataclass(frozen=True)
class JobType:
    name: str
    function: JobFunction
    description: str


_REGISTRY: dict[str, JobType] = {}


def job(name: str) -> Callable[[JobFunction], JobFunction]:
    """Register the decorated function as job type ``name``."""

    def register(function: JobFunction) -> JobFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.function is not function:
            raise ValueError(f"job type {name!r} is already registered by {existing.function}")
        doc = (function.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = JobType(name, function, doc[0] if doc else "")
        return function

    return register


def load_job_modules(extra: Iterable[str] = ()) -> dict[str, JobType]:
    """Import the built-in and configured job modules so their ``@job`` functions register."""
    for module in (*BUILTIN_MODULES, *extra):
        importlib.import_module(module)
    return dict(_REGISTRY)


def get_job_type(name: str) -> JobType | None:
    """The registered job type called ``name``."""
    return _REGISTRY.get(name)


def job_type_names() -> list[str]:
    """Every registered job type, sorted."""
    return sorted(_REGISTRY)
