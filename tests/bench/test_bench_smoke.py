"""`python -m bench --smoke` runs every scenario on the real stack, loses nothing and writes its
figures. Speed is not asserted: only that each figure is there and is a positive number."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS
from tests.support import REPO
from tests.support.settings import DATABASE_PREFIX

pytestmark = [pytest.mark.bench, pytest.mark.timeout(700)]

# The scenarios in two runs of the benchmark, each on its own stack, so that parallel test
# workers run them side by side: e2e and streams start whole stacks of their own and take about
# as long as all the others together.
GROUPS = {
    "own_stacks": ("e2e", "streams"),
    "shared_stack": (
        "throughput",
        "slow",
        "noisy",
        "ingest",
        "backlog",
        "retention",
        "fanout",
        "ordering",
        "search",
        "dead",
    ),
}


def positive(figures: dict, *names: str) -> None:
    for name in names:
        value = figures[name]
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value > 0, (name, value)


def run_smoke(tmp_path: Path, group: str) -> dict:
    """Run the group's scenarios at smoke size; their figures by scenario."""
    out = tmp_path / "bench.json"
    only = [argument for name in GROUPS[group] for argument in ("--only", name)]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            *only,
            "--json",
            str(out),
            "--database",
            f"{DATABASE_PREFIX}_bench_smoke_{group}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        # A hang guard only: every scenario in one run took 284 s on a loaded CI machine.
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["problems"] == []
    assert report["machine"]["nproc"] > 0 and report["machine"]["memory_gb"] > 0
    scenarios = report["scenarios"]
    assert set(scenarios) == set(GROUPS[group])
    for figures in scenarios.values():
        assert "error" not in figures, figures
    return scenarios


def test_the_runs_cover_every_scenario_once():
    named = [name for names in GROUPS.values() for name in names]
    assert sorted(named) == sorted(SCENARIOS)


@pytest.mark.parametrize("group", GROUPS)
def test_smoke_benchmark_runs_every_scenario_without_losses(tmp_path, group):
    scenarios = run_smoke(tmp_path, group)
    for name in GROUPS[group]:
        CHECKS[name](scenarios)


def check_throughput(scenarios: dict) -> None:
    ours = scenarios["throughput"]["boomerang"]
    for figures in (
        ours,
        scenarios["throughput"]["raw_aiohttp"],
        scenarios["throughput"]["naive_celery"],
    ):
        assert figures["lost"] == 0
        assert figures["unique_ids"] == figures["deliveries"]
        positive(figures, "per_second", "p50_ms", "p99_ms")
    positive(ours, "x_raw", "x_naive")
    # Every attempt is logged in Postgres, as in production.
    assert ours["attempts_logged"] >= ours["unique_ids"]


def check_slow(scenarios: dict) -> None:
    slow = scenarios["slow"]
    assert slow["lost"] == 0 and slow["unique_ids"] == slow["deliveries"]
    positive(slow, "seconds_until_all_received", "per_second")


def check_noisy(scenarios: dict) -> None:
    noisy = scenarios["noisy"]
    assert noisy["lost"] == 0 and noisy["unique_ids"] == noisy["healthy_deliveries"]
    positive(noisy, "healthy_per_second", "healthy_p50_ms", "healthy_p99_ms")


def check_ingest(scenarios: dict) -> None:
    ingest = scenarios["ingest"]
    for figures in (ingest["boomerang"], ingest["boomerang_with_workers"], ingest["trivial_flask"]):
        assert figures["errors"] == 0
        positive(figures, "per_second", "p50_ms", "p99_ms")
    # Every accepted job, paused workers or not, ran and its event arrived once.
    events = ingest["events"]
    assert events["lost"] == 0 and events["duplicates"] == 0
    assert events["unique_ids"] == events["accepted"] == events["jobs_with_event"]


def check_backlog(scenarios: dict) -> None:
    backlog = scenarios["backlog"]
    positive(
        backlog,
        "delivery_worker_rss_mb_before",
        "delivery_worker_rss_mb_after",
        "sweep_nothing_due_ms",
        "sweep_due_ms",
        "claim_due_ms",
        "claim_due_batch",
    )
    assert backlog["redis_deliveries_llen"] == 0  # the backlog waits in Postgres, not in Redis
    assert backlog["due_lost"] == 0


def check_e2e(scenarios: dict) -> None:
    e2e = scenarios["e2e"]
    for system in ("boomerang", "tutorial"):
        figures = e2e[system]
        assert figures["lost"] == 0 and figures["duplicates"] == 0, (system, figures)
        assert figures["steady"]["lost"] == 0 and figures["steady"]["duplicates"] == 0
        positive(figures, "jobs", "jobs_per_second")
        positive(figures["steady"], "jobs", "submit_to_receipt_p99_ms")


def check_streams(scenarios: dict) -> None:
    streams = scenarios["streams"]
    idle = streams["idle_streams"]
    assert idle["connected"] == idle["asked"] == idle["still_open_at_end"]
    positive(idle, "rss_kb_per_stream", "open_files_limit")
    for round_ in ("push_alone", "push_beside_idle", "long_polls"):
        assert streams[round_]["lost_terminal_events"] == 0, (round_, streams[round_])
        positive(streams[round_], "jobs", "p50_ms", "p99_ms")
    for web in ("web_get_alone", "web_get_beside_long_polls"):
        assert streams[web]["errors"] == 0
        positive(streams[web], "per_second")


def check_retention(scenarios: dict) -> None:
    retention = scenarios["retention"]
    # One pass each way takes every row past retention, and the drop takes whole days.
    assert retention["batched_delete"]["rows"] == retention["rows"]
    assert retention["partition_drop"]["partitions_dropped"] == retention["days"]
    assert retention["rows_left_before"] == retention["rows_left_partitioned"] == 0
    for way in ("batched_delete", "partition_drop"):
        positive(retention[way], "seconds", "wal_bytes")


def check_fanout(scenarios: dict) -> None:
    fanout = scenarios["fanout"]
    # Without filters every event reaches all 100 callbacks; with them, exactly the events whose
    # amount (the event's number modulo 200) is at least 100 do.
    passing = sum(1 for number in range(fanout["events"]) if number % 200 >= 100)
    assert fanout["unfiltered"]["deliveries_made"] == 100 * fanout["events"]
    assert fanout["filtered"]["deliveries_made"] == 100 * passing > 0
    positive(fanout, "evaluation_us_per_filter")


def check_ordering(scenarios: dict) -> None:
    ordering = scenarios["ordering"]
    for round_ in ("unordered", "ordered", "one_key_stuck"):
        figures = ordering[round_]
        assert figures["lost"] == 0 and figures["accepted_twice"] == 0, (round_, figures)
        positive(figures, "seconds", "per_second")
    # Every key in order, the stuck one too, which got through only after its receiver did.
    assert ordering["ordered"]["out_of_order"] == ordering["one_key_stuck"]["out_of_order"] == 0
    stuck = ordering["one_key_stuck"]["stuck_key"]
    assert stuck["refused"] > 0 and stuck["accepted"] == ordering["events_per_key"]
    assert stuck["first_accepted_after_seconds"] >= ordering["stuck_seconds"]


def check_search(scenarios: dict) -> None:
    search = scenarios["search"]
    assert search["attempts"] == 4 * search["deliveries"] > 0
    for name, figures in search.items():
        if isinstance(figures, dict):  # one search: the same page with either set of indexes
            assert figures["same_rows_before_0016"], name
            assert figures["plan"] and figures["plan_before_0016"], name
            positive(figures, "ms", "before_0016_ms")
    assert search["everything"]["rows"] == 51  # a page and one more: there is a next page
    assert search["webhook_id"]["rows"] == search["job_id"]["rows"] == 1


def check_dead(scenarios: dict) -> None:
    dead = scenarios["dead"]
    for side in ("alone", "beside_dead"):
        assert dead[side]["lost"] == 0 and dead[side]["duplicates"] == 0, (side, dead[side])
        positive(dead[side], "jobs", "p50_ms", "p99_ms")
    assert dead["dead_requests_seen"] > 0  # the dead receivers really were called and hung


CHECKS: dict[str, Callable[[dict], None]] = {
    name: globals()[f"check_{name}"] for names in GROUPS.values() for name in names
}
