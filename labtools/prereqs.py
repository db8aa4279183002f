"""Checks for what the lab needs from the machine, with errors that name the fix."""

from __future__ import annotations

import os
import shutil

from labtools.errors import PrerequisiteError

# Tool -> Debian package that provides it (what `make setup` installs).
DEBIAN_PACKAGE = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ip6tables": "iptables",
    "ip6tables-restore": "iptables",
    "ip6tables-legacy-restore": "iptables",
    "nft": "nftables",
    "iperf3": "iperf3",
    "tcpdump": "tcpdump",
    "tshark": "tshark",
    "clang": "clang",
    "llc": "llvm",
    "bpftool": "bpftool",
    "sshd": "openssh-server",
    "ping": "iputils-ping",
    "sysctl": "procps",
}


def require_root(action: str) -> None:
    """Raise unless running as root; `action` says what needed it."""
    if os.geteuid() != 0:
        raise PrerequisiteError(
            f"{action} needs root (network namespaces, routes and datapaths are kernel state): "
            f"run it as root, e.g. `sudo -E .venv/bin/labtools ...` or `sudo make ...`"
        )


def which(tool: str) -> str | None:
    """Find a tool on PATH or in the sbin directories a non-login root shell may lack."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")


def require_tools(*tools: str) -> dict[str, str]:
    """Return {tool: path}, or raise naming every missing tool and its Debian package."""
    found, missing = {}, []
    for tool in tools:
        path = which(tool)
        if path:
            found[tool] = path
        else:
            missing.append(tool)
    if missing:
        pkgs = sorted({DEBIAN_PACKAGE.get(t, t) for t in missing})
        raise PrerequisiteError(
            f"missing tool(s): {', '.join(missing)}. Run `make setup`, or `apt-get install {' '.join(pkgs)}`"
        )
    return found
