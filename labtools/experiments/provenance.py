"""What every run records about where and with what it was measured: read once per run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

from labtools.base import paths
from labtools.hosts import vm

# The Python packages whose versions decide what a run computes and draws.
PACKAGES = ("labtools", "pandas", "numpy", "scipy", "matplotlib", "seaborn", "scapy", "paramiko", "kubernetes",
            "papermill", "pydantic")  # fmt: skip


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unavailable"


def _clocksource() -> str:
    try:
        return Path("/sys/devices/system/clocksource/clocksource0/current_clocksource").read_text().strip()
    except OSError:
        return "unavailable"


def _git(*args: str) -> str:
    return _first_line(["git", "-C", str(paths.PACKAGE.parent), *args])


def _package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _lock_hash() -> str:
    try:
        lock = paths.project_root() / "requirements.lock"
        return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.exists() else "no lock file"
    except Exception:  # no project folder (an installed package run elsewhere)
        return "no lock file"


def git_dirty() -> bool:
    """Whether the checkout's code differs from its commit: changed or untracked files, except a run's own outputs
    (data/raw, data/processed), which a sweep started after another in the same session would otherwise count."""
    out = _first_line(["sh", "-c", f"git -C {paths.PACKAGE.parent} status --porcelain -- . ':(exclude)data/raw' "
                                   "':(exclude)data/processed' | head -1"])  # fmt: skip
    return out not in ("", "unavailable")


def collect(backend: str, cni: str | None = None) -> dict:
    """Kernel (in `labtools vm run` also its distribution package), tools, CPU and clock, the commit (and whether
    the tree was dirty), packages, time; on the netns lab also how its pod is attached (`cni`: the Cilium-like
    attachment ages packets once more)."""
    kernel_package = vm.kernel_package()  # in `labtools vm run`: the distribution's package and version
    return {
        "kernel": platform.release(),
        **({"kernel_package": kernel_package} if kernel_package else {}),
        "iperf3": _first_line(["iperf3", "--version"]),
        "nft": _first_line(["nft", "--version"]),
        "iptables": _first_line(["iptables", "--version"]),
        "clang": _first_line(["clang", "--version"]),
        "libbpf": _first_line(["pkg-config", "--modversion", "libbpf"]),
        "python": platform.python_version(),
        "packages": _package_versions(),
        "lock_sha256": _lock_hash(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "clocksource": _clocksource(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": git_dirty(),
        "backend": backend,
        **({"cni": cni} if cni else {}),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
