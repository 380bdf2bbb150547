"""Keep a Celery worker running: start it as a child process and start it again if it dies.

A worker can die on its own: the Redis transport has been seen to crash the worker outright
("Unrecoverable error") when Redis restarts mid-ack. Postgres holds the work, so all a crash
costs is the time until a worker is back; this loop makes that time a second or two, without
needing systemd or Kubernetes to notice. Signals sent to the supervisor go to the worker, and a
worker stopped that way is not restarted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("boomerang.supervisor")

PR_SET_PDEATHSIG = 1
RESTART_DELAYS_SECONDS = (1, 2, 5, 10, 30)
# A worker that ran this long before dying counts as healthy; the backoff starts over.
HEALTHY_AFTER_SECONDS = 60


def _die_with_parent() -> None:
    # Runs in the child before exec: if the supervisor is killed outright, take the worker with
    # it rather than leave an orphan nobody will stop (Linux only; elsewhere it is a no-op).
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def supervise(command: Sequence[str]) -> int:
    """Run ``command`` until it exits because we were asked to stop; return its exit code."""
    stopping = False
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, forward)

    failures = 0
    while True:
        started = time.monotonic()
        # Its own session, so a signal sent to our whole process group (honcho stops processes
        # that way) reaches the pool's children only through Celery's warm shutdown.
        child = subprocess.Popen(list(command), start_new_session=True, preexec_fn=_die_with_parent)
        returncode = child.wait()
        if stopping:
            return returncode
        if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
            failures = 0
        delay = RESTART_DELAYS_SECONDS[min(failures, len(RESTART_DELAYS_SECONDS) - 1)]
        failures += 1
        log.warning("worker exited with %s; starting it again in %s s", returncode, delay)
        print(
            f"supervisor: worker exited with {returncode}; restarting in {delay} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.1)
        if stopping:
            return returncode
