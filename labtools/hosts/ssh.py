"""A machine reached over SSH (paramiko) as a `Host`: key auth, known_hosts checking, jump host."""

from __future__ import annotations

import select
import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from labtools.base.errors import CommandError, HostKeyError, HostUnreachable, LabError
from labtools.hosts import namespaces
from labtools.hosts.base import Host, Process, Result, Session, start_script, started

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


class SSHSession(Session):
    def __init__(self, host: SSHHost, argv: list[str], chan: paramiko.Channel):
        self.host, self.argv, self.chan = host, argv, chan

    def _send(self, data: bytes) -> None:
        self.chan.sendall(data)

    def _recv(self, timeout: float) -> bytes:
        self.chan.settimeout(timeout)
        try:
            return self.chan.recv(4096)
        except TimeoutError:
            return b""

    def close(self) -> str:
        err = bytearray()
        try:
            self.chan.shutdown_write()  # the agent's end of input: it exits by itself
            deadline = time.monotonic() + 5
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
            while self.chan.recv_stderr_ready():
                err += self.chan.recv_stderr(65536)
        except (OSError, EOFError):
            pass
        self.chan.close()
        return err.decode(errors="replace").strip()


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
                return namespaces.connect_in(c.netns, (c.host, c.port), timeout=c.timeout)
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
            # Read both streams as they come: they share one flow-control window. Until the server's EOF, not
            # just its exit status: that may arrive while the last of stderr is still waiting for window space.
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.eof_received or chan.closed:
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
        return started(self, argv, self.run(start_script(argv, env or {}, log)), log)

    def session(self, argv: Sequence[str]) -> SSHSession:
        argv = [str(a) for a in argv]
        self.run(["true"])  # connects (or reconnects) first, with the usual errors
        transport = self.client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=self.config.timeout)
        chan.exec_command(self._command(argv, {}))
        return SSHSession(self, argv, chan)

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


