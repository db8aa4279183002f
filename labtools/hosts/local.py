"""A network namespace on this machine as a `Host` (`ip netns exec`); the filesystem is shared."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from labtools.base.errors import CommandError, HostUnreachable
from labtools.hosts import namespaces
from labtools.hosts.base import Host, Process, Result, Session

# --------------------------------------------------------------------------- netns


class NetnsProcess(Process):
    def __init__(self, host: NetnsHost, argv: list[str], popen: subprocess.Popen, log: str):
        self.host, self.argv, self.popen, self.log = host, argv, popen, log

    def running(self) -> bool:
        return self.popen.poll() is None

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)

    def stop(self, timeout: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.running():
                return
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue


class NetnsSession(Session):
    def __init__(self, host: NetnsHost, argv: list[str], popen: subprocess.Popen):
        self.host, self.argv, self.popen = host, argv, popen

    def _send(self, data: bytes) -> None:
        try:
            self.popen.stdin.write(data)
            self.popen.stdin.flush()
        except BrokenPipeError:
            pass  # it ended: the read that follows says so, with its stderr

    def _recv(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        return os.read(self.popen.stdout.fileno(), 4096) if ready else b""

    def close(self) -> str:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.popen.stdin.close()  # the agent's end of input: it exits by itself
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        err = self.popen.stderr.read() if self.popen.stderr else b""
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream:
                stream.close()
        return err.decode(errors="replace").strip()


class NetnsHost(Host):
    """A network namespace on this machine (`ip netns exec`). The filesystem is shared."""

    is_local = True

    def __init__(self, name: str, ns: str, logdir: str | Path = "/tmp"):
        self.name, self.ns, self.logdir = name, ns, Path(logdir)

    def _prefix(self) -> list[str]:
        if not namespaces.exists(self.ns):
            raise HostUnreachable(
                f"[{self.name}] network namespace {self.ns} does not exist: is the lab up? "
                f"(`labtools lab up --prefix {self.ns.split('-')[0]}`)"
            )
        return ["ip", "netns", "exec", self.ns]

    def _run(self, argv: list[str], *, timeout: float, env: dict[str, str], input: bytes | None) -> Result:
        try:
            p = subprocess.run(
                self._prefix() + argv,
                capture_output=True,
                timeout=timeout,
                env={**os.environ, **env},
                input=input,
            )
        except subprocess.TimeoutExpired as e:
            raise CommandError(self.name, argv, None, _s(e.stdout), _s(e.stderr), timeout=timeout) from None
        return Result(self.name, tuple(argv), p.returncode, _s(p.stdout), _s(p.stderr))

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: str | None = None) -> Process:
        argv = [str(a) for a in argv]
        if log is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            log = str(self.logdir / f"labtools-{self.ns}-{Path(argv[0]).name}-{time.monotonic_ns()}.log")
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                # If labtools dies (even by SIGKILL), its background processes die with it.
                [*self._prefix(), "setpriv", "--pdeathsig", "KILL", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        return NetnsProcess(self, argv, popen, log)

    def session(self, argv: Sequence[str]) -> NetnsSession:
        argv = [str(a) for a in argv]
        popen = subprocess.Popen([*self._prefix(), "setpriv", "--pdeathsig", "KILL", "--", *argv],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)  # fmt: skip
        return NetnsSession(self, argv, popen)

    def put(self, local: str | Path, remote: str) -> None:
        if Path(local).resolve() != Path(remote).resolve():
            shutil.copyfile(local, remote)

    def get(self, remote: str, local: str | Path) -> None:
        shutil.copyfile(remote, local)

    def read_text(self, remote: str) -> str:
        return Path(remote).read_text(errors="replace")

    def install(self, local: str | Path) -> str:
        return str(Path(local).resolve())  # same filesystem: use it where it is


def _s(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


