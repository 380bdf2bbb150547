"""What the stack's delivery processes leased and put back unsent, by the limit that held it.

Read from the stack's own metrics files (``boomerang_deliveries_held_back_total``), so a scenario
can report how much of its claiming went for nothing.
"""

from __future__ import annotations

from app.metrics.files import MachineCollector
from bench.stack import Bench

METRIC = "boomerang_deliveries_held_back_total"


def held_back(bench: Bench) -> dict[str, int]:
    """The stack's counts so far, by reason."""
    counts: dict[str, int] = {}
    for family in MachineCollector(bench.stack.log_dir / "metrics").collect():
        for sample in family.samples:
            if sample.name == METRIC:
                reason = sample.labels["reason"]
                counts[reason] = counts.get(reason, 0) + int(sample.value)
    return counts


def since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What was put back between two readings; reasons with none left out."""
    return {
        reason: count - before.get(reason, 0)
        for reason, count in sorted(after.items())
        if count > before.get(reason, 0)
    }
