"""Commands through another host: ``kubectl exec`` into a pod, ``sudo -n``; the one place root is asked for."""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from labtools.hosts.base import Host, Process, Result, Session, start_script, started

# --------------------------------------------------------------------------- through another host


class ExecHost(Host):
    """Commands run on `via`, wrapped in `prefix`: ``kubectl exec -i POD --`` into a pod, ``sudo -n``.

    Files travel through the command's stdin, so this needs nothing but ``sh`` and ``cat`` at the far
    end (a container image has no sftp).
    """

    def __init__(self, name: str, via: Host, prefix: Sequence[str]):
        self.name, self.via, self.prefix = name, via, [str(a) for a in prefix]

    def _run(self, argv: list[str], *, timeout: float, env: dict[str, str], input: bytes | None) -> Result:
        cmd = [*self.prefix, *(["env", *(f"{k}={v}" for k, v in env.items())] if env else []), *argv]
        res = self.via.run(cmd, check=False, timeout=timeout, input=input)
        return Result(self.name, tuple(argv), res.returncode, res.stdout, res.stderr)

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: str | None = None) -> Process:
        argv = [str(a) for a in argv]
        log = log or f"/tmp/labtools-{Path(argv[0]).name}-{time.time_ns()}.log"
        return started(self, argv, self.run(start_script(argv, env or {}, log)), log)

    def session(self, argv: Sequence[str]) -> Session:
        return self.via.session([*self.prefix, *(str(a) for a in argv)])

    def put(self, local: str | Path, remote: str) -> None:
        q = shlex.quote(remote)
        self.run(["sh", "-c", f"cat > {q}.tmp && mv {q}.tmp {q}"], input=Path(local).read_bytes(), timeout=300)

    def get(self, remote: str, local: str | Path) -> None:
        res = self.run(["base64", remote], timeout=300)  # Result holds text: binary files travel as base64
        Path(local).write_bytes(base64.b64decode(res.stdout))

    def install(self, local: str | Path) -> str:
        local = Path(local)
        remote = f"/tmp/labtools-{local.name}"
        self.put(local, remote)
        self.run(["chmod", oct(local.stat().st_mode & 0o777)[2:], remote])
        return remote

    def close(self) -> None:
        self.via.close()


SUDO = ("sudo", "-n")  # never prompts: a login that may not sudo without a password fails at once


def privileged(argv: Sequence[str], needed: bool) -> list[str]:
    """`argv` run as root: prefixed with ``sudo -n`` when the login is not root (`needed`)."""
    return [*(SUDO if needed else ()), *argv]


def as_root(host: Host, needed: bool) -> Host:
    """`host` itself, or `host` through ``sudo -n`` when its login is not root (`needed`)."""
    return ExecHost(host.name, host, list(SUDO)) if needed else host
