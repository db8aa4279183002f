"""A `Host` that runs nothing: it records what it is asked and answers from a small script.

What httpx's `MockTransport` is to an HTTP client, this is to code written against `Host` (the switcher,
the datapaths' apply paths, the SRv6 plans): unit tests run it without root or a lab, read back the
commands it would have run, in order, and script the few answers the code reads (`nft list`, `cat`, a
`command -v` probe). Nothing here touches this machine.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from labtools.hosts.base import Host, Process, Result, Session


@dataclass(frozen=True)
class Reply:
    """A scripted answer: the exit code and output of a command."""

    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


#: An answer in the script: a `Reply`, a string (its stdout, exit code 0), or a function of the argv giving either.
Answer = Reply | str | Callable[[list[str]], "Reply | str"]


@dataclass(frozen=True)
class Call:
    """One thing a recording host was asked: `run` or `start` (argv, stdin: text, or bytes where it is not UTF-8),
    `put`/`get` (source, destination) or `install` (the local file)."""

    host: str
    kind: str
    argv: tuple[str, ...]
    input: str | bytes | None = None

    def __str__(self) -> str:
        return f"[{self.host}] {self.kind} {shlex.join(self.argv)}"


class RecordingProcess(Process):
    """A background process that was only recorded: it has already finished, with no output."""

    def __init__(self, host: RecordingHost, argv: list[str], log: str):
        self.host, self.argv, self.log = host, argv, log

    def running(self) -> bool:
        return False

    def interrupt(self) -> None:
        return None

    def stop(self, timeout: float = 5.0) -> None:
        return None


class RecordingSession(Session):
    """A session that runs nothing: each request is recorded (kind ``request``) and answered by the host's
    table, looked up with the session's command line."""

    def __init__(self, host: RecordingHost, argv: list[str]):
        self.host, self.argv, self._pending = host, argv, b""

    def _send(self, data: bytes) -> None:
        self.host._record("request", self.argv, data)
        reply = self.host._answer(self.argv)
        self._pending = (reply.stdout if reply.stdout.endswith("\n") else reply.stdout + "\n").encode()

    def _recv(self, timeout: float) -> bytes:
        out, self._pending = self._pending, b""
        return out

    def close(self) -> str:
        self.host._record("close", self.argv)
        return ""


class RecordingHost(Host):
    """Records every call; `run` answers from `answers`, the first of whose keys occurs in the command line
    (its words joined by spaces); other commands exit 0 with no output, or fail the test when `strict`.

    `log`, a list shared by several hosts, keeps the order of calls across machines; `calls` holds this
    host's own. `is_local` says which side of the `Host` seam to play: this machine's kernel and tools, or
    a remote machine asked with `command -v` (the default).
    """

    def __init__(self, name: str = "host", answers: Mapping[str, Answer] | None = None, *,
                 log: list[Call] | None = None, strict: bool = False, is_local: bool = False):  # fmt: skip
        self.name, self.answers, self.strict, self.is_local = name, dict(answers or {}), strict, is_local
        self.calls: list[Call] = []
        self.log = log

    @property
    def commands(self) -> list[list[str]]:
        """The argv of every command run (not started in the background), in order."""
        return [list(c.argv) for c in self.calls if c.kind == "run"]

    def _record(self, kind: str, argv: Sequence[str], input: bytes | None = None) -> None:
        call = Call(self.name, kind, tuple(str(a) for a in argv), _text(input))
        self.calls.append(call)
        if self.log is not None:
            self.log.append(call)

    def _answer(self, argv: list[str]) -> Reply:
        line = " ".join(argv)
        for needle, answer in self.answers.items():
            if needle in line:
                got = answer(argv) if callable(answer) else answer
                return Reply(stdout=got) if isinstance(got, str) else got
        if self.strict:
            raise AssertionError(f"[{self.name}] unscripted command: {shlex.join(argv)}")
        return Reply()

    def _run(self, argv: list[str], *, timeout: float, env: dict[str, str], input: bytes | None) -> Result:
        self._record("run", argv, input)
        reply = self._answer(argv)
        return Result(self.name, tuple(argv), reply.returncode, reply.stdout, reply.stderr)

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: str | None = None) -> Process:
        self._record("start", argv)
        return RecordingProcess(self, [str(a) for a in argv], log or f"/tmp/labtools-{self.name}.log")

    def session(self, argv: Sequence[str]) -> Session:
        self._record("session", argv)
        return RecordingSession(self, [str(a) for a in argv])

    def put(self, local: str | Path, remote: str) -> None:
        self._record("put", [str(local), remote])

    def get(self, remote: str, local: str | Path) -> None:
        self._record("get", [remote, str(local)])

    def install(self, local: str | Path) -> str:
        self._record("install", [str(local)])
        # Where NetnsHost (this filesystem) and SSHHost (the remote /tmp) would put it.
        return str(Path(local).resolve()) if self.is_local else f"/tmp/labtools-{Path(local).name}"


def _text(data: bytes | None) -> str | bytes | None:
    """Stdin as the test would compare it: text (rules, scripts), or the bytes of a binary stream (BPF map entries)."""
    try:
        return data.decode() if data is not None else None
    except UnicodeDecodeError:
        return data
