"""The `Host` seam: `run()`, `start()`, `put()`, `get()` and `install()` on any machine.

Everything above this layer (topology, SRv6, datapaths, measurement) is written once against
`Host` and runs unchanged on the emulated lab (`NetnsHost`) and on real VMs (`SSHHost`).
"""

from __future__ import annotations

import contextlib
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from labtools.base.errors import CommandError, LabError, PrerequisiteError
from labtools.base.prereqs import DEBIAN_PACKAGE, require_tools
from labtools.base.waiting import Timeout, until


@dataclass(frozen=True)
class Result:
    """What a finished command left behind."""

    host: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Process(ABC):
    """A background process started with `Host.start()`."""

    host: Host
    argv: list[str]
    log: str

    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def interrupt(self) -> None:
        """SIGINT the process group, as Ctrl-C would (tcpdump then flushes, a probe reports)."""

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after `timeout`."""

    def wait(self, timeout: float = 30.0) -> None:
        try:
            until(lambda: not self.running(), timeout=timeout)
        except Timeout:
            raise CommandError(self.host.name, self.argv, None, timeout=timeout) from None

    def output(self) -> str:
        """The process' combined stdout and stderr so far."""
        return self.host.read_text(self.log)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Session(ABC):
    """A long-running command spoken to over its stdin and stdout, each request answered by one line: the
    map writer that stays up between changes, as Cilium's agent does (`labtools-bpf-load --agent`)."""

    host: Host
    argv: list[str]

    @abstractmethod
    def _send(self, data: bytes) -> None: ...

    @abstractmethod
    def _recv(self, timeout: float) -> bytes:
        """Some of the command's output, within `timeout` seconds; b"" once it has ended."""

    @abstractmethod
    def close(self) -> str:
        """End the command (its stdin closed, then signals); returns what it wrote to stderr."""

    def request(self, data: bytes, timeout: float = 60.0) -> str:
        """Send `data`, return the one line that answers it; a `CommandError` when the command ends first."""
        self._send(data)
        buf, deadline = bytearray(), time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            chunk = self._recv(left) if left > 0 else b""
            if not chunk:
                err = self.close() if left > 0 else f"no answer within {timeout:g} s"
                raise CommandError(self.host.name, self.argv, -1, bytes(buf).decode(errors="replace"), err)
            buf += chunk
        return buf.decode(errors="replace").strip()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Host(ABC):
    """A machine that runs commands: a network namespace here, or a VM over SSH."""

    name: str
    #: Commands run on this machine's kernel and see its filesystem (a network namespace here): its tools
    #: are this machine's, a file it writes can be read here directly, and its kernel's features are ours.
    is_local: bool = False

    def require_tools(self, *tools: str) -> None:
        """Refuse with a PrerequisiteError naming every tool missing on this host and its Debian package."""
        if self.is_local:
            require_tools(*tools)
            return
        script = "; ".join(f"command -v {t} >/dev/null || echo {t}" for t in tools)
        missing = self.run(["sh", "-c", script], check=False).stdout.split()
        if missing:
            pkgs = sorted({DEBIAN_PACKAGE.get(t, t) for t in missing})
            raise PrerequisiteError(f"[{self.name}] missing tool(s): {', '.join(missing)}: "
                                    f"apt-get install {' '.join(pkgs)}")  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        input: str | bytes | None = None,
    ) -> Result:
        """Run `argv` and wait for it; `input` goes to its stdin. A non-zero exit raises `CommandError` if `check`."""
        argv = [str(a) for a in argv]
        data = input.encode() if isinstance(input, str) else input
        res = self._run(argv, timeout=timeout, env=dict(env or {}), input=data)
        if check and not res.ok:
            raise CommandError(self.name, argv, res.returncode, res.stdout, res.stderr)
        return res

    @abstractmethod
    def _run(self, argv: list[str], *, timeout: float, env: dict[str, str], input: bytes | None) -> Result: ...

    @abstractmethod
    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: str | None = None) -> Process:
        """Start `argv` in the background in its own process group; output goes to `log`."""

    def session(self, argv: Sequence[str]) -> Session:
        """Start `argv` as a `Session` (requests on its stdin, one line of answer each on its stdout)."""
        raise LabError(f"[{self.name}] a {type(self).__name__} cannot hold a long-running session")

    @abstractmethod
    def put(self, local: str | Path, remote: str) -> None:
        """Copy a local file to the host."""

    @abstractmethod
    def get(self, remote: str, local: str | Path) -> None:
        """Copy a file from the host to this machine."""

    def read_text(self, remote: str) -> str:
        return self.run(["cat", remote], check=False).stdout

    @abstractmethod
    def install(self, local: str | Path) -> str:
        """Make a local file (a tool, a BPF object) available on the host; returns its path there."""

    def close(self) -> None:  # noqa: B027 - deliberately optional to override
        """Release connections; a no-op where there are none."""

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ShellProcess(Process):
    """A process started by `start_script()` on a host reached through commands (SSH, kubectl exec, sudo)."""

    def __init__(self, host: Host, argv: list[str], pid: int, log: str):
        self.host, self.argv, self.pid, self.log = host, argv, pid, log

    def running(self) -> bool:
        # Decided from the output: a failing transport (ssh, kubectl exec, sudo) must not read as "gone".
        res = self.host.run(["sh", "-c", f"kill -0 {self.pid} 2>/dev/null && echo alive || echo gone"], check=False)
        state = res.stdout.strip()
        if state not in ("alive", "gone"):
            raise CommandError(self.host.name, ["kill", "-0", str(self.pid)], res.returncode, res.stdout, res.stderr)
        return state == "alive"

    def signal(self, sig: str) -> None:
        # The group (setsid made the process its leader), else the process alone (no setsid there).
        self.host.run(["sh", "-c", f"kill -{sig} -- -{self.pid} 2>/dev/null || kill -{sig} {self.pid}"], check=False)

    def interrupt(self) -> None:
        self.signal("INT")

    def stop(self, timeout: float = 5.0) -> None:
        for sig in ("TERM", "KILL"):
            if not self.running():
                return
            self.signal(sig)
            with contextlib.suppress(Timeout):
                until(lambda: not self.running(), timeout=timeout, interval=0.1)


def start_script(argv: Sequence[str], env: Mapping[str, str], log: str) -> list[str]:
    """A `sh -c` command that starts `argv` in the background, in its own session where setsid exists,
    output to `log`, and prints its pid."""
    inner = "exec " + shlex.join([*(["env", *(f"{k}={v}" for k, v in env.items())] if env else []), *argv])
    q, out = shlex.quote(inner), f">{shlex.quote(log)} 2>&1 </dev/null &"
    # `( exec ... ) &`: $! is then the process itself under dash and bash alike (bash would fork first
    # for a compound command), and setsid makes it the leader of its own group.
    script = (
        f"if command -v setsid >/dev/null; then (exec setsid sh -c {q}) {out} else (exec sh -c {q}) {out} fi; echo $!"
    )
    return ["sh", "-c", script]


def started(host: Host, argv: list[str], res: Result, log: str) -> ShellProcess:
    try:
        pid = int(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LabError(f"[{host.name}] could not start {shlex.join(argv)}: {res.stdout!r} {res.stderr!r}") from None
    return ShellProcess(host, argv, pid, log)
