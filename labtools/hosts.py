"""One way to run commands anywhere: `Host.run()` on a local network namespace or an SSH machine.

Everything above this layer (topology, SRv6, datapaths, measurement) is written once against
`Host` and runs unchanged on the emulated lab (`NetnsHost`) and on real VMs (`SSHHost`).
"""

from __future__ import annotations

import base64
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from labtools import netns
from labtools.errors import CommandError, HostKeyError, HostUnreachable, LabError


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
    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after `timeout`."""

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise CommandError(self.host.name, self.argv, None, timeout=timeout)
            time.sleep(0.05)

    def output(self) -> str:
        """The process' combined stdout and stderr so far."""
        return self.host.read_text(self.log)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Host(ABC):
    """A machine that runs commands: a network namespace here, or a VM over SSH."""

    name: str

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


# --------------------------------------------------------------------------- netns


class NetnsProcess(Process):
    def __init__(self, host: NetnsHost, argv: list[str], popen: subprocess.Popen, log: str):
        self.host, self.argv, self.popen, self.log = host, argv, popen, log

    def running(self) -> bool:
        return self.popen.poll() is None

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


class NetnsHost(Host):
    """A network namespace on this machine (`ip netns exec`). The filesystem is shared."""

    def __init__(self, name: str, ns: str, logdir: str | Path = "/tmp"):
        self.name, self.ns, self.logdir = name, ns, Path(logdir)

    def _prefix(self) -> list[str]:
        if not netns.exists(self.ns):
            raise HostUnreachable(
                f"[{self.name}] network namespace {self.ns} does not exist: is the lab up? (`labtools lab up`)"
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


# --------------------------------------------------------------------------- ssh


@dataclass
class SSHConfig:
    """How to reach a machine over SSH. Host keys are checked against known_hosts by default."""

    host: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    password: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    timeout: float = 10.0
    jump: SSHConfig | None = None
    netns: str | None = None  # open the TCP connection from inside this local network namespace
    passphrase: str | None = None  # of the key file

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


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

    def stop(self, timeout: float = 5.0) -> None:
        for sig in ("TERM", "KILL"):
            if not self.running():
                return
            self.signal(sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.running():
                time.sleep(0.1)


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


def _started(host: Host, argv: list[str], res: Result, log: str) -> ShellProcess:
    try:
        pid = int(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LabError(f"[{host.name}] could not start {shlex.join(argv)}: {res.stdout!r} {res.stderr!r}") from None
    return ShellProcess(host, argv, pid, log)


class SSHHost(Host):
    """A machine reached over SSH with paramiko: key auth, known_hosts checking, jump host."""

    def __init__(self, name: str, config: SSHConfig):
        self.name, self.config = name, config
        self._client: paramiko.SSHClient | None = None
        self._jump: SSHHost | None = None

    # -- connection

    def _open_socket(self) -> socket.socket | paramiko.Channel | None:
        c = self.config
        if c.jump is not None:
            self._jump = SSHHost(f"{self.name}/jump", c.jump)
            transport = self._jump.client.get_transport()
            assert transport is not None
            try:
                return transport.open_channel("direct-tcpip", (c.host, c.port), ("::1", 0), timeout=c.timeout)
            except (paramiko.SSHException, OSError) as e:
                raise HostUnreachable(
                    f"[{self.name}] jump host {c.jump.target} could not open a connection to {c.target}: {e}"
                ) from None
        if c.netns is not None:
            try:
                return netns.connect_in(c.netns, (c.host, c.port), timeout=c.timeout)
            except OSError as e:
                raise HostUnreachable(
                    f"[{self.name}] cannot reach {c.target} from namespace {c.netns}: {e.strerror or e}"
                ) from None
        return None

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        c = self.config
        client = paramiko.SSHClient()
        client.load_system_host_keys()
        if c.known_hosts and Path(c.known_hosts).exists():
            client.load_host_keys(c.known_hosts)
        # Reject unknown keys unless the inventory explicitly says to accept (and record) them.
        client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy() if c.accept_new_host_key else paramiko.RejectPolicy()
        )
        pkey = None
        if c.key:
            try:
                pkey = paramiko.PKey.from_path(c.key, password=c.passphrase)
            except (OSError, paramiko.SSHException, ValueError) as e:
                raise LabError(f"[{self.name}] cannot load SSH key {c.key}: {e}") from None
        sock = self._open_socket()
        try:
            client.connect(
                c.host,
                port=c.port,
                username=c.user,
                pkey=pkey,
                password=c.password,
                timeout=c.timeout,
                banner_timeout=c.timeout,
                auth_timeout=c.timeout,
                sock=sock,
                allow_agent=c.key is None and c.password is None,
                look_for_keys=c.key is None and c.password is None,
            )
        except paramiko.BadHostKeyException as e:
            raise HostKeyError(
                f"[{self.name}] host key of {c.target} does NOT match known_hosts "
                f"(got {e.key.get_name()} {e.key.get_fingerprint().hex()}): "
                "the machine was reinstalled, or someone is in the middle. Fix known_hosts by hand."
            ) from None
        except paramiko.AuthenticationException as e:
            how = f"key {c.key}" if c.key else "password" if c.password else "agent/default keys"
            raise HostUnreachable(f"[{self.name}] authentication failed for {c.target} with {how}: {e}") from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise HostKeyError(
                    f"[{self.name}] unknown host key for {c.target}: add it to "
                    f"{c.known_hosts or '~/.ssh/known_hosts'} (e.g. ssh-keyscan), or set "
                    "`accept_new_host_key: true` for this machine in the inventory"
                ) from None
            raise HostUnreachable(f"[{self.name}] SSH to {c.target} failed: {e}") from None
        except (OSError, paramiko.ssh_exception.NoValidConnectionsError) as e:
            raise HostUnreachable(
                f"[{self.name}] cannot reach {c.target}: {getattr(e, 'strerror', None) or e}"
            ) from None
        if c.accept_new_host_key and c.known_hosts:
            client.save_host_keys(c.known_hosts)
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    # -- commands

    @staticmethod
    def _command(argv: Sequence[str], env: Mapping[str, str]) -> str:
        # `env` works whatever the server's AcceptEnv says.
        prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
        return shlex.join([*prefix, *argv])

    def _run(self, argv: list[str], *, timeout: float, env: dict[str, str], input: bytes | None) -> Result:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            self.close()
            transport = self.client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=self.config.timeout)
        try:
            chan.exec_command(self._command(argv, env))
            if input is not None:
                chan.sendall(input)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            # Read both streams as they come: they share one flow-control window.
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready():
                    break
                elif time.monotonic() > deadline:
                    raise CommandError(
                        self.name,
                        argv,
                        None,
                        out.decode(errors="replace"),
                        err.decode(errors="replace"),
                        timeout=timeout,
                    )
                else:
                    select.select([chan], [], [], 0.1)
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        return Result(self.name, tuple(argv), rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: str | None = None) -> Process:
        argv = [str(a) for a in argv]
        log = log or f"/tmp/labtools-{Path(argv[0]).name}-{time.time_ns()}.log"
        return _started(self, argv, self.run(start_script(argv, env or {}, log)), log)

    def put(self, local: str | Path, remote: str) -> None:
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), remote)

    def install(self, local: str | Path) -> str:
        local = Path(local)
        remote = f"/tmp/labtools-{local.name}"
        tmp = f"{remote}.{time.time_ns()}.tmp"
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), tmp)
            sftp.chmod(tmp, local.stat().st_mode & 0o777)
            # A rename replaces the file even while a copy of it runs ("text file busy" for a plain write).
            sftp.posix_rename(tmp, remote)
        return remote

    def get(self, remote: str, local: str | Path) -> None:
        with self.client.open_sftp() as sftp:
            sftp.get(remote, str(local))


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
        return _started(self, argv, self.run(start_script(argv, env or {}, log)), log)

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


def as_root(host: Host, needed: bool) -> Host:
    """`host` itself, or `host` through ``sudo -n`` when its login is not root (`needed`)."""
    return ExecHost(host.name, host, ["sudo", "-n"]) if needed else host
