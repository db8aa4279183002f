"""Checks for what the lab needs from the machine, with errors that name the fix."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from labtools.base.errors import PrerequisiteError

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


@functools.cache
def kernel_has_seg6_lwtunnel() -> bool:
    """Whether this kernel has CONFIG_IPV6_SEG6_LWTUNNEL (``encap seg6`` / ``seg6local`` routes).

    Tried in a throw-away network namespace (`unshare -n`): nothing is left behind, nothing of the
    root namespace is touched, and it works whether or not /proc/config.gz exists.
    """
    script = "ip link set lo up && ip -6 route add 2001:db8::/64 encap seg6 mode encap segs fc00::2 dev lo"
    try:
        res = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


SEG6_MISSING = (
    "this kernel has no SRv6 routes (CONFIG_IPV6_SEG6_LWTUNNEL is not set: `ip -6 route ... encap seg6` says "
    "'lwt encapsulation type not supported'). The thesis' tunnel needs `encap seg6` on the router and "
    "`seg6local End.DT6` on the worker; boot a kernel with CONFIG_IPV6_SEG6_LWTUNNEL=y to bring it up"
)


def require_seg6_lwtunnel() -> None:
    """Raise a `PrerequisiteError` that names the kernel option when SRv6 routes are unavailable."""
    if os.geteuid() == 0 and not kernel_has_seg6_lwtunnel():
        raise PrerequisiteError(SEG6_MISSING)
