"""Low-level network-namespace helpers: naming, listing, teardown, and sockets opened inside one.

Everything the lab makes lives in namespaces named ``<prefix>-<name>``; the prefix has no hyphen,
so one lab's prefix can never match another's names, and ``teardown(prefix)`` finds exactly its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from labtools.base.errors import CommandError, HostUnreachable, LabError
from labtools.base.waiting import Timeout, until
from labtools.model.topology import check_prefix

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def ns_name(prefix: str, name: str) -> str:
    return f"{check_prefix(prefix)}-{name}"


def list_namespaces() -> list[str]:
    """All named network namespaces on this machine."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def lab_namespaces(prefix: str) -> list[str]:
    """The namespaces that belong to the lab with this prefix."""
    start = f"{check_prefix(prefix)}-"
    return [n for n in list_namespaces() if n.startswith(start)]


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is `ns`."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def kill_all(ns: str, grace: float = 1.0) -> list[int]:
    """SIGTERM every process in `ns`, then SIGKILL what is left after `grace` seconds."""
    victims = pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(Timeout):
            until(lambda: not pids(ns), timeout=grace)
        victims = pids(ns)
        if not victims:
            break
    return victims


def delete(ns: str) -> None:
    """Kill the namespace's processes and delete it (its interfaces go with it)."""
    kill_all(ns)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if exists(ns):  # a half-made entry (e.g. `ip netns add` killed midway) is just a file
        try:
            (NETNS_DIR / ns).unlink()
        except OSError as e:
            raise LabError(f"could not remove network namespace {ns}: {e}") from e


def teardown(prefix: str) -> list[str]:
    """Remove every namespace of the lab `prefix`, with its processes and links."""
    removed = []
    for ns in lab_namespaces(prefix):
        delete(ns)
        removed.append(ns)
    return removed


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in(ns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has entered network namespace `ns`.

    Sockets keep the namespace they were created in, so a socket made here can be used
    from any thread afterwards. Only that thread switches; the process stays where it was.
    """
    if not exists(ns):
        raise HostUnreachable(f"network namespace {ns} does not exist: is the lab up? (`labtools lab up`)")
    box: dict[str, object] = {}

    def worker() -> None:
        try:
            _setns(str(NETNS_DIR / ns))
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=worker, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def connect_in(ns: str, address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    """A TCP connection to `address`, opened from inside namespace `ns`."""
    return call_in(ns, lambda: socket.create_connection(address, timeout=timeout))


def ip(*args: str) -> None:
    """Run `ip ARGS` in the root namespace's context (it only ever targets lab namespaces)."""
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise CommandError("local", ["ip", *args], p.returncode, p.stdout, p.stderr)


def has_link(ns: str, ifname: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", "dev", ifname], capture_output=True).returncode == 0


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str, mtu: int | None = None) -> None:
    """A veth pair made directly inside two namespaces (never in the root one), unless it exists."""
    if has_link(ns_a, name_a):
        return
    m = ["mtu", str(mtu)] if mtu else []
    ip("link", "add", name_a, "netns", ns_a, *m, "type", "veth", "peer", "name", name_b, "netns", ns_b, *m)


def create(ns: str) -> None:
    """The namespace `ns` with its loopback up, unless it exists."""
    if not exists(ns):
        ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")


def switch(ns: str, mtu: int | None = None) -> None:
    """A switch: namespace `ns` holding bridge br0, up. No multicast snooping: ND floods as on a VM switch."""
    create(ns)
    if not has_link(ns, "br0"):
        ip("-n", ns, "link", "add", "br0", *(["mtu", str(mtu)] if mtu else []), "type", "bridge", "mcast_snooping", "0")
    ip("-n", ns, "link", "set", "br0", "up")


def plug(switch_ns: str, port: str, ns: str, ifname: str, mtu: int | None = None) -> None:
    """A veth from interface `ifname` of `ns` to bridge port `port` of the switch in `switch_ns`."""
    veth(ns, ifname, switch_ns, port, mtu)
    ip("-n", switch_ns, "link", "set", port, "master", "br0", "up")
