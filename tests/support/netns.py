"""Hosts a test can kill or cut off: Linux network namespaces on a private bridge.

A ``Network`` is one bridge in the root namespace with an address on a private /24
(10.231.N.0/24, N picked from the pid and checked free, so two runs never clash). Each
``Namespace`` is joined to it by a veth pair and gets the next address; the bridge's address
serves whatever runs in the root namespace (Postgres, Redis) to every namespace. Nothing routes
beyond the /24: processes in a namespace reach only the bridge's address and each other.

Cutting a host off sets the bridge's end of its veth down: packets to and from it are dropped,
as in a real partition (nothing is refused at once), until it is set up again.

Everything made here is removed by ``Network.remove`` (namespaces, their processes, veths, the
bridge), which the fixtures call however the test ended. A run killed before it could clean up
leaves its bridge labelled with its pid; ``remove_stale`` removes what such a run left. Needs
root and iproute2's ``ip``; ``unavailable`` says why not when they are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Every name made here starts with this, then the network's number: "bmf17b", "bmf17h2".
PREFIX = "bmf"
SUBNET = "10.231"
# The bridge's alias: who made it, so a later run can tell a dead run's leftovers from a live one.
OWNER = "boomerang fleet tests, pid "


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{PREFIX}probe{os.getpid() % 10000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> str:
    """Run ``ip <args>``; its output. Fails loudly: a half-made network is worse than none."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _taken_numbers() -> set[int]:
    """The /24s of 10.231 some interface already has an address in."""
    taken = set()
    for line in ip("-o", "-4", "addr", "show").splitlines():
        for word in line.split():
            if word.startswith(SUBNET + "."):
                taken.add(int(word.split(".")[2]))
    return taken


@dataclass
class Namespace:
    """One host: a network namespace with one address on the bridge."""

    name: str
    address: str
    # The veth end on the bridge, in the root namespace; the other end is inside.
    outer: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        """Every process that runs in this namespace, whatever its process group."""
        done = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(pid) for pid in done.stdout.split()]

    def kill_all(self) -> int:
        """SIGKILL every process in the namespace at once, as a host that loses power; how many
        there were."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(pids)

    def cut_off(self) -> None:
        """Drop every packet to and from the host (a partition) until ``reconnect``."""
        ip("link", "set", self.outer, "down")

    def reconnect(self) -> None:
        """End the partition."""
        ip("link", "set", self.outer, "up")


@dataclass
class Network:
    """A bridge on a private /24 and the namespaces joined to it."""

    number: int
    namespaces: dict[str, Namespace] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Network:
        """A new bridge on a /24 no interface uses yet."""
        taken = _taken_numbers()
        start = os.getpid() % 240 + 10
        for offset in range(240):
            number = (start + offset - 10) % 240 + 10
            if number in taken or Path(f"/sys/class/net/{PREFIX}{number}b").exists():
                continue
            network = cls(number)
            try:
                ip("link", "add", network.bridge, "type", "bridge")
            except RuntimeError:
                continue  # another run took it meanwhile
            try:
                ip("link", "set", "dev", network.bridge, "alias", f"{OWNER}{os.getpid()}")
                ip("addr", "add", f"{network.address}/24", "dev", network.bridge)
                ip("link", "set", network.bridge, "up")
            except BaseException:
                network.remove()
                raise
            return network
        raise RuntimeError(f"no free /24 left in {SUBNET}.0.0/16")

    @classmethod
    def remove_stale(cls) -> list[int]:
        """Remove the networks (namespaces, processes, bridge) of runs that died without
        cleaning up; their numbers."""
        removed = []
        for alias in Path("/sys/class/net").glob(f"{PREFIX}*b/ifalias"):
            owner = alias.read_text().strip()
            if not owner.startswith(OWNER) or Path(f"/proc/{owner.removeprefix(OWNER)}").exists():
                continue
            network = cls(int(alias.parent.name.removeprefix(PREFIX).removesuffix("b")))
            for line in ip("netns", "list").splitlines():
                name = line.split(" ", 1)[0]
                rest = name.removeprefix(f"{PREFIX}{network.number}")
                if rest != name and rest[:1].isalpha():  # bmf17h2 is network 17's, bmf171h2 not
                    network.namespaces[name] = Namespace(name, "", name)
            network.remove()
            removed.append(network.number)
        return removed

    @property
    def bridge(self) -> str:
        """The bridge's interface name."""
        return f"{PREFIX}{self.number}b"

    @property
    def address(self) -> str:
        """The bridge's own address: the root namespace's servers listen here."""
        return f"{SUBNET}.{self.number}.1"

    @property
    def cidr(self) -> str:
        """The whole /24."""
        return f"{SUBNET}.{self.number}.0/24"

    def add(self, label: str, host_number: int) -> Namespace:
        """A namespace named after ``label`` (a few letters and digits) at ``.host_number``."""
        name = f"{PREFIX}{self.number}{label}"
        outer, inner = name, f"{name}i"
        assert len(inner) <= 15, f"interface name {inner!r} is too long"
        namespace = Namespace(name, f"{SUBNET}.{self.number}.{host_number}", outer)
        ip("netns", "add", name)
        self.namespaces[name] = namespace
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", name)
        ip("link", "set", outer, "master", self.bridge, "up")
        ip("-n", name, "addr", "add", f"{namespace.address}/24", "dev", inner)
        ip("-n", name, "link", "set", inner, "up")
        ip("-n", name, "link", "set", "lo", "up")
        return namespace

    def delete(self, namespace: Namespace) -> None:
        """Kill the namespace's processes and remove it with its veth pair."""
        namespace.kill_all()
        with contextlib.suppress(RuntimeError):
            ip("netns", "del", namespace.name)
        # Deleting the namespace deletes the inner end, and with it the outer one; but be sure.
        with contextlib.suppress(RuntimeError):
            ip("link", "del", namespace.outer)
        self.namespaces.pop(namespace.name, None)

    def remove(self) -> None:
        """Remove every namespace (and its processes) and the bridge."""
        for namespace in list(self.namespaces.values()):
            self.delete(namespace)
        with contextlib.suppress(RuntimeError):
            ip("link", "del", self.bridge)
