"""The metrics directory: where the processes of one machine keep their counts side by side.

prometheus_client's multiprocess mode gives each process its own memory-mapped files, named
``<kind>_<pid>.db``, and a scrape adds up every file. Two chores are ours:
- a process that ended leaves its files behind. Deleting them would make the machine's totals go
  down, which Prometheus takes for a counter reset (and a spike in ``rate()``); so its counts are
  folded into one ``<kind>_archive.db`` file and only then is its file removed;
- that folding and a scrape must not interleave, or a scrape could count a process twice or find
  a file gone between listing and reading it. A lock file in the directory orders them;
- prometheus_client grows its files sparsely, so on a full disk the first write to a new page is
  a SIGBUS that kills the process. ``ReservedMmapedDict`` reserves the space before mapping it,
  turning a full disk into an OSError that the recording functions swallow: metrics stop, work
  goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import mmap_dict, values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = ".lock"

_PID_IN_NAME = re.compile(r"_(\d+)\.db$")


class ReservedMmapedDict(MmapedDict):
    """prometheus_client's file of values, with its disk space reserved before it is mapped, so
    a full disk raises OSError (ENOSPC) here instead of SIGBUS on a later write."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            _reserve_new_file(filename)
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        # The entry's size, as the parent lays it out: length, key padded to 8 bytes, two doubles.
        encoded = len(key.encode("utf-8"))
        needed = self._used + 4 + encoded + (8 - (encoded + 4) % 8) + 16
        capacity = self._capacity
        while needed > capacity:
            capacity *= 2
        if capacity > self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)  # the parent then maps it all
        super()._init_value(key)


def _reserve_new_file(filename: str) -> None:
    """Create ``filename`` with its first block of space reserved, unless it exists; on a full
    disk remove the empty file again (a scrape cannot read one) and raise OSError."""
    descriptor = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(descriptor).st_size == 0:
            os.posix_fallocate(descriptor, 0, mmap_dict._INITIAL_MMAP_SIZE)
    except OSError:
        with contextlib.suppress(OSError):
            if os.fstat(descriptor).st_size == 0:
                os.unlink(filename)
        raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(directory: Path, *, exclusive: bool) -> Iterator[None]:
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_metrics_dir(path: str | os.PathLike[str]) -> Path:
    """Create the directory and fold in the counts of processes that no longer run.

    Safe while other processes count there: web and workers start side by side under
    ``boomerang up`` and each prepares the directory; only ended processes' files are touched.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    fold_ended_processes(directory)
    return directory


def fold_ended_processes(directory: Path) -> None:
    """Move the counts of every process that ended into the archive files; drop their files."""
    with _locked(directory, exclusive=True):
        for file in directory.glob("*.db"):
            match = _PID_IN_NAME.search(file.name)
            if match is None or _is_running(int(match.group(1))):
                continue
            kind = file.name.split("_", 1)[0]
            # A gauge is a process's current value, not a count: an ended process has none.
            if kind != "gauge":
                _add_into(directory / f"{kind}_archive.db", file)
            file.unlink()


def _add_into(archive: Path, file: Path) -> None:
    # Counter, histogram and summary values in these files are plain sums (histogram buckets
    # are stored per bucket, not cumulatively), so adding them key by key keeps every total.
    totals = ReservedMmapedDict(str(archive))
    try:
        for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(file)):
            current, _ = totals.read_value(key)
            totals.write_value(key, current + value, 0.0)
    finally:
        totals.close()


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, alive
    return True


def use_directory(path: str | os.PathLike[str]) -> Path:
    """Prepare ``path`` and count in it from now on, in this process and those it forks."""
    directory = prepare_metrics_dir(path)
    os.environ[MULTIPROCESS_ENV] = str(directory)
    # prometheus_client chooses in-memory or file-backed values when it is first imported, which
    # may have happened before the directory was known (a config file, a library).
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    # Every value file this process opens from now on reserves its space (see the docstring).
    values.MmapedDict = ReservedMmapedDict  # type: ignore[misc]
    return directory


def multiprocess_dir() -> Path | None:
    """The directory this process counts in, or None when it counts in memory."""
    path = os.environ.get(MULTIPROCESS_ENV)
    return Path(path) if path else None


def forget_process(pid: int) -> None:
    """A child process exited (a gunicorn worker): drop its live gauges, fold in its counts."""
    directory = multiprocess_dir()
    if directory is not None:
        mark_process_dead(pid, str(directory))
        fold_ended_processes(directory)


class MachineCollector:
    """Everything counted in ``directory``, added up across processes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def collect(self) -> Iterator[Metric]:
        with _locked(self.directory, exclusive=False):
            # An empty file is one being created (or refused by a full disk): nothing to read.
            files = [f for f in glob.glob(str(self.directory / "*.db")) if _has_content(f)]
            metrics = list(MultiProcessCollector.merge(files, accumulate=True))
        yield from metrics


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False  # removed since it was listed
