"""HTTP load from ``wrk``, an external generator, so the figure is the server's, not a Python
client's (one measured 1,013 req/s against a route that wrk drives at ~2,250).

A small Lua script POSTs JSON bodies that differ per request for a fixed time (wrk's own clock
times the run; it cannot stop early) and prints its figures as one JSON line from ``done``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# Prints wrk's figures as one JSON line once the run is over.
DONE = r"""
function done(summary, latency, requests)
    local non2xx = summary.errors.status
    io.write(string.format(
        '\nWRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d,' ..
        ' "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
        summary.requests, summary.duration, non2xx,
        summary.errors.connect + summary.errors.read + summary.errors.write +
            summary.errors.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# {n} in the body becomes a per-request number, so no two requests are identical.
SCRIPT = (
    r"""
local counter = 0
local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

function init(args)
    counter = id * 1000000000  -- each thread numbers its bodies apart from the others
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer " .. args[1]
end

function request()
    counter = counter + 1
    local body = string.gsub(BODY, "{n}", tostring(counter))
    return wrk.format(nil, nil, nil, body)
end

"""
    + DONE
)


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's packages when missing and allowed (root)."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(
        [
            "sh",
            "-c",
            "apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)",
        ],
        check=False,
        capture_output=True,
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and could not be installed (apt-get install wrk)")
    return found


def post_json(
    url: str, body: str, *, seconds: int, connections: int, api_key: str = "", threads: int = 2
) -> dict[str, Any]:
    """POST ``body`` (``{n}`` numbered per request) to ``url`` from ``connections`` connections
    for ``seconds``: wrk's figures (rate, latency percentiles, errors)."""
    script = SCRIPT.replace("BODY", json.dumps(body))
    return _run(
        script, url, seconds=seconds, connections=connections, threads=threads, args=[api_key]
    )


def _run(
    script_text: str,
    url: str,
    *,
    seconds: int,
    connections: int,
    threads: int,
    args: list[str] | None = None,
) -> dict[str, Any]:
    wrk = ensure_wrk()
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(script_text)
    try:
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        command += ["-s", script.name, url, "--", *(args or [])]
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in finished.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{finished.stdout}\n{finished.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    elapsed = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "connections": connections,
        "seconds": round(elapsed, 2),
        "per_second": round(raw["requests"] / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(raw["p50_us"] / 1000, 1),
        "p99_ms": round(raw["p99_us"] / 1000, 1),
        "errors": raw["non_2xx"] + raw["socket_errors"],
        "load_generator": "wrk",
    }


def get(
    url: str, *, seconds: int, connections: int, api_key: str = "", threads: int = 2
) -> dict[str, Any]:
    """GET ``url`` from ``connections`` connections for ``seconds``: wrk's figures."""
    script = DONE + f'\nwrk.headers["Authorization"] = "Bearer {api_key}"\n'
    return _run(script, url, seconds=seconds, connections=connections, threads=threads)
