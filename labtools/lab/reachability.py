"""Reachability probes with real traffic: ICMPv6 echo (optionally jumbo, don't-fragment) and TCP."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass

from labtools.base.errors import LabError
from labtools.hosts import Host, namespaces
from labtools.lab import traffic

IPV6_HEADER, ICMP_HEADER = 40, 8


@dataclass(frozen=True)
class PingResult:
    src: str
    dst: str
    packet_bytes: int
    ok: bool
    rtt_ms: float | None
    hop_limit: int | None
    error: str = ""


def ping(
    host: Host,
    dst: str,
    *,
    packet_bytes: int | None = None,
    dont_fragment: bool = False,
    count: int = 1,
    timeout: float = 2.0,
) -> PingResult:
    """ICMPv6 echo from `host` to `dst`. `packet_bytes` is the whole IPv6 packet, headers included."""
    argv = ["ping", "-6", "-n", "-c", str(count), "-W", f"{timeout:g}"]
    size = 56
    if packet_bytes is not None:
        size = packet_bytes - IPV6_HEADER - ICMP_HEADER
        if size < 0:
            raise LabError(f"packet_bytes={packet_bytes} is smaller than the IPv6+ICMPv6 headers (48)")
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    res = host.run([*argv, dst], check=False, timeout=timeout * count + 5)
    rtt = re.search(r"time=([\d.]+) ms", res.stdout)
    ttl = re.search(r"ttl=(\d+)", res.stdout)
    return PingResult(
        host.name,
        dst,
        size + IPV6_HEADER + ICMP_HEADER,
        res.ok,
        float(rtt.group(1)) if rtt else None,
        int(ttl.group(1)) if ttl else None,
        ""
        if res.ok
        else (res.stderr or res.stdout).strip().splitlines()[-1:][0]
        if (res.stderr or res.stdout).strip()
        else f"exit {res.returncode}",
    )


@dataclass(frozen=True)
class TcpResult:
    client: str
    server: str
    dst: str
    port: int
    bytes: int
    seen_source: str  # the client address as the server saw it


def iperf3_tcp(
    client: Host, server: Host, dst: str, *, port: int = 5201, seconds: int = 1, connect_timeout: float = 5.0
) -> TcpResult:
    """One iperf3 TCP test from `client` to `dst` served by `server`; returns what both ends saw."""
    srv = traffic.start_iperf3_server(server, port)
    try:
        data = traffic.throughput(client, traffic.Target("reachability", dst, port), max(1, int(seconds)),
                                  retry_for=connect_timeout)  # fmt: skip
        accepted = re.findall(r"Accepted connection from ([0-9a-fA-F:.]+), port", srv.output())
    finally:
        srv.stop()
    if not accepted:
        raise LabError(f"[{server.name}] iperf3 server log shows no accepted connection:\n{srv.output()}")
    return TcpResult(client.name, server.name, dst, port, int(data["end"]["sum_received"]["bytes"]), accepted[-1])


class EchoServer:
    """A TCP echo server on [::]:port inside a local network namespace, recording who connected.

    Used to prove a datapath end to end: the data comes back only if DNAT, reverse NAT and every
    checksum are right, and `peers` shows the source address the endpoint really saw.
    """

    def __init__(self, ns: str, port: int = 5201):
        self.ns, self.port = ns, port
        self.peers: list[str] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EchoServer:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", self.port))
            s.listen(128)
            return s

        self._sock = namespaces.call_in(self.ns, make)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                conn.settimeout(5)
                try:
                    while data := conn.recv(65536):
                        conn.sendall(data)
                except OSError:
                    pass

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(2)


def tcp_echo(ns: str, dst: str, port: int, payload: bytes = b"labtools-echo", timeout: float = 3.0) -> bytes:
    """Connect from namespace `ns` to [dst]:port, send `payload`, return what came back."""
    with namespaces.connect_in(ns, (dst, port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got
