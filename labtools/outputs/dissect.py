"""Packet dissection of captures: one tidy row per packet and header layer, with a tshark cross-check.

`dissect(pcaps)` reads pcap / pcapng files with scapy (streaming, `PcapReader`) and returns a pandas DataFrame
with one row per **header layer** of every frame:

- ``kind="ipv6"``: an IPv6 fixed header (also the IPv6 header quoted inside an ICMPv6 error, ``quoted=True``);
- ``kind="srh"``: a Segment Routing Header (routing type 4, RFC 8754);
- ``kind="ext"``: any other IPv6 extension header (hop-by-hop, destination options, fragment, other routing types);
- ``kind="l4"``: the upper-layer header after the last IPv6 / extension header (TCP, UDP, ICMPv6, ...);
- ``kind="non-ipv6"``: a frame with no IPv6 header at all (ARP, IPv4, LLDP, ...) gets exactly one such row, so
  every frame of the capture is accounted for; ``proto`` names its network layer (``arp``, ``ipv4``, ...) and
  ``src``/``dst`` hold its addresses where it has them (ARP: sender/target protocol address).

``depth`` is the IPv6 nesting level a row belongs to: 0 for the outermost IPv6 header and the extension headers
and L4 header that follow it, 1 for the next IPv6 header inside it (IPv6 in SRH in IPv6, IPv6-in-IPv6 with next
header 41, the quoted packet of an ICMPv6 error), and so on. ``layer`` numbers the rows of one frame in order
(0, 1, 2, ...). ``frame`` is 1-based like tshark's ``frame.number``.

SRH ``segments`` are in wire order (Segment List[0] first, i.e. the *final* segment first), space separated, as
tshark lists ``ipv6.routing.srh.addr``.

Link types are what scapy knows: Ethernet, Linux cooked capture v1 and v2 (``tcpdump -i any``), raw IP,
BSD loopback. A frame whose capture length is shorter than its wire length (snaplen), or whose IPv6 payload
length runs past the captured bytes, or whose headers scapy could not decode, is flagged ``truncated=True`` on
every row; `dissect` then warns once per file with `TruncatedPacketWarning` naming the frames.

`tshark_fields(pcap)` runs ``tshark -T fields`` on the same file and `compare(pcap)` aligns the two views frame by
frame and header by header (tshark reports nested headers as comma-separated occurrences, in order) and returns
the disagreements. Conventions differ in a few places and are converted before comparing: tshark prints the flow
label, traffic class and TCP flags in hex (``0x012345``, ``0x000000b8``, ``0x0012``) and the SRH tag as raw bytes
(``002a``); this module reports them as integers (``tcp_flags`` as scapy's letters, e.g. ``SA``).
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from scapy.error import Scapy_Exception
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
    _IPv6ExtHdr,
)
from scapy.layers.l2 import ARP
from scapy.packet import NoPayload, Packet, Padding, Raw
from scapy.utils import PcapReader

from labtools.base.errors import LabError

__all__ = [
    "COLUMNS",
    "Disagreement",
    "DissectWarning",
    "TruncatedPacketWarning",
    "compare",
    "dissect",
    "dissect_records",
    "iter_records",
    "table_rows",
    "tshark_fields",
]

COLUMNS: tuple[str, ...] = (
    "pcap",  # the file as given
    "point",  # the capture point: the file name without its suffix (e.g. `router-ens7`)
    "frame",  # 1-based frame number, as tshark's frame.number
    "time",  # capture timestamp, seconds since the epoch
    "caplen",  # captured bytes of the frame
    "wirelen",  # bytes of the frame on the wire
    "layer",  # row number within the frame: 0, 1, 2, ...
    "depth",  # IPv6 nesting level: 0 = outermost IPv6 header (and what follows it), 1 = the next, ...
    "kind",  # ipv6 | srh | ext | l4 | non-ipv6
    "src",
    "dst",
    "nh",  # next header (IPv6 header, SRH or extension header)
    "hlim",
    "plen",
    "fl",  # flow label, integer
    "tc",  # traffic class, integer
    "segleft",  # SRH (and other routing headers): segments left
    "lastentry",  # SRH: last entry
    "segments",  # SRH: the segment list in wire order, space separated
    "tag",  # SRH: tag, integer
    "ext",  # kind=ext: hop-by-hop | destopts | fragment | routing
    "proto",  # kind=l4: tcp | udp | icmpv6 | icmp | ...; kind=non-ipv6: arp | ipv4 | ...
    "sport",
    "dport",
    "icmp_type",
    "icmp_code",
    "tcp_flags",  # scapy's letters: S, SA, FA, R, ...
    "length",  # kind=l4: captured bytes of the L4 header and its payload (link padding excluded)
    "quoted",  # the header is part of the packet quoted inside an ICMPv6 error message
    "truncated",  # the frame is cut short (snaplen, payload length beyond the captured bytes, undecodable)
)

_INT_COLUMNS = ("frame", "caplen", "wirelen", "layer", "depth", "nh", "hlim", "plen", "fl", "tc", "segleft",
                "lastentry", "tag", "sport", "dport", "icmp_type", "icmp_code", "length")  # fmt: skip

_TCP_FLAG_LETTERS = "FSRPAUECN"  # scapy's order: bit 0 = FIN, bit 1 = SYN, ...


class DissectWarning(UserWarning):
    """Something in a capture could not be dissected completely; the rows say which frames."""


class TruncatedPacketWarning(DissectWarning):
    """Frames of a capture are truncated (snaplen, cut file, malformed headers); their rows have truncated=True."""


_MAGICS = {
    bytes.fromhex(m)
    for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1", "0a0d0d0a")  # pcap (us, ns; both byte orders), pcapng
}


def _open(path: Path) -> PcapReader:
    if not path.is_file():
        raise LabError(f"{path}: no such capture file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic not in _MAGICS:
        what = "an empty file" if not magic else f"magic number {magic.hex()}"
        raise LabError(f"{path}: not a pcap or pcapng capture file ({what})")
    try:
        return PcapReader(str(path))
    except (Scapy_Exception, EOFError, OSError, ValueError) as e:
        raise LabError(f"{path}: not a pcap or pcapng capture file ({e})") from e


def _payload_bytes(layer: Packet) -> int:
    """Captured bytes below `layer` (its payload), link-layer padding excluded."""
    pad = layer.getlayer(Padding)
    n = len(bytes(layer.payload))
    return n - (len(pad.load) if pad is not None else 0)


def _l4_row(layer: Packet) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "l4", "length": len(bytes(layer)) - _padding_len(layer)}
    if isinstance(layer, TCP):
        flags = int(layer.flags)
        letters = "".join(c for i, c in enumerate(_TCP_FLAG_LETTERS) if flags & (1 << i))
        row.update(proto="tcp", sport=layer.sport, dport=layer.dport, tcp_flags=letters)
    elif isinstance(layer, UDP):
        row.update(proto="udp", sport=layer.sport, dport=layer.dport)
    elif layer.__class__.__module__.endswith("inet6") and layer.__class__.__name__.startswith("ICMPv6"):
        row.update(proto="icmpv6", icmp_type=layer.getfieldval("type"), icmp_code=layer.getfieldval("code"))
    elif isinstance(layer, ICMP):
        row.update(proto="icmp", icmp_type=layer.type, icmp_code=layer.code)
    else:
        row.update(proto=layer.name.lower())
    return row


def _padding_len(layer: Packet) -> int:
    pad = layer.getlayer(Padding)
    return len(pad.load) if pad is not None else 0


def _non_ipv6_row(pkt: Packet) -> dict[str, Any]:
    """The frame's network layer: the first layer that is not a link layer (Ethernet, VLAN, cooked capture)."""
    layer: Packet = pkt
    while not isinstance(layer, NoPayload) and layer.payload is not None and _is_link(layer):
        if isinstance(layer.payload, NoPayload):
            break
        layer = layer.payload
    row: dict[str, Any] = {"kind": "non-ipv6", "length": len(bytes(layer)) - _padding_len(layer)}
    if isinstance(layer, IP):
        row.update(proto="ipv4", src=layer.src, dst=layer.dst, nh=layer.proto, hlim=layer.ttl)
    elif isinstance(layer, ARP):
        row.update(proto="arp", src=layer.psrc, dst=layer.pdst)
    else:
        row.update(proto=layer.name.lower())
    return row


def _is_link(layer: Packet) -> bool:
    return layer.__class__.__name__ in {"Ether", "Dot1Q", "Dot1AD", "CookedLinux", "CookedLinuxV2", "Loopback",
                                        "LLC", "SNAP", "Dot3", "IPv46", "CookedLinuxV2Hdr"}  # fmt: skip


def _frame_rows(pkt: Packet) -> tuple[list[dict[str, Any]], bool]:
    """The header rows of one frame and whether the frame is cut short or malformed."""
    rows: list[dict[str, Any]] = []
    truncated = False
    depth = -1
    after_ip = False  # the previous layer was an IPv6 or extension header: this one is the upper layer
    quoted = False
    layer: Packet = pkt
    while not isinstance(layer, NoPayload):
        # An ND Redirect quotes the redirected packet in an option field, not as its payload.
        if layer.__class__.__name__ == "ICMPv6NDOptRedirectedHdr" and isinstance(layer.pkt, Packet):
            layer, quoted = layer.pkt, True
            continue
        if isinstance(layer, IPv6):
            depth += 1
            quoted = quoted or layer.__class__.__name__ == "IPerror6"
            # an ICMPv6 error quotes only the start of the offending packet: its payload length runs past the end
            if not quoted and _payload_bytes(layer) < layer.plen:
                truncated = True
            rows.append(dict(kind="ipv6", depth=depth, src=layer.src, dst=layer.dst, nh=layer.nh, hlim=layer.hlim,
                             plen=layer.plen, fl=layer.fl, tc=layer.tc, quoted=quoted))  # fmt: skip
            after_ip = True
        elif isinstance(layer, IPv6ExtHdrSegmentRouting):
            rows.append(dict(kind="srh", depth=depth, nh=layer.nh, segleft=layer.segleft, lastentry=layer.lastentry,
                             segments=" ".join(layer.addresses), tag=layer.tag, quoted=quoted))  # fmt: skip
            after_ip = True
        elif isinstance(layer, _IPv6ExtHdr):
            ext = {"IPv6ExtHdrHopByHop": "hop-by-hop", "IPv6ExtHdrDestOpt": "destopts",
                   "IPv6ExtHdrFragment": "fragment", "IPv6ExtHdrRouting": "routing"}.get(
                       layer.__class__.__name__, layer.name.lower())  # fmt: skip
            row = dict(kind="ext", depth=depth, nh=layer.nh, ext=ext, quoted=quoted)
            if isinstance(layer, IPv6ExtHdrRouting):
                row["segleft"] = layer.segleft
            rows.append(row)
            after_ip = True
        elif after_ip:
            after_ip = False
            if isinstance(layer, (Raw, Padding)):
                prev = rows[-1]
                # bytes where the previous header announces a header scapy knows: cut short or malformed
                if prev["nh"] in (0, 6, 17, 41, 43, 44, 58, 60) and not quoted:
                    truncated = True
                if prev["nh"] != 59:
                    rows.append(dict(kind="l4", depth=depth, proto=f"nh{prev['nh']}", quoted=quoted,
                                     length=len(bytes(layer)) - _padding_len(layer)))  # fmt: skip
            else:
                rows.append(dict(_l4_row(layer), depth=depth, quoted=quoted))
        layer = layer.payload
    if depth < 0:
        rows = [_non_ipv6_row(pkt)]
    return rows, truncated


def iter_records(pcap: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the rows of one capture, one dict per frame and header layer (keys: `COLUMNS`).

    Warns with `TruncatedPacketWarning` (once, at the end) if frames are truncated; raises `LabError` naming the
    file if it is not a pcap / pcapng capture.
    """
    path = Path(pcap)
    reader = _open(path)
    cut: list[int] = []
    try:
        frame = 0
        while True:
            try:
                pkt = reader.read_packet()
            except EOFError:
                break
            except Scapy_Exception as e:
                raise LabError(f"{path}: unreadable capture after frame {frame} ({e})") from e
            frame += 1
            caplen = len(bytes(pkt))
            wirelen = getattr(pkt, "wirelen", None) or caplen
            try:
                rows, truncated = _frame_rows(pkt)
            except Exception as e:  # scapy raised on a broken frame: keep going, flag it
                rows, truncated = [{"kind": "non-ipv6", "proto": f"undecodable: {e}"}], True
            truncated = truncated or caplen < wirelen
            if truncated:
                cut.append(frame)
            base = dict(pcap=str(pcap), point=path.stem, frame=frame, time=float(pkt.time), caplen=caplen,
                        wirelen=wirelen, truncated=truncated)  # fmt: skip
            for i, row in enumerate(rows):
                yield {c: None for c in COLUMNS} | base | {"layer": i, "quoted": False} | row
    finally:
        reader.close()
    if cut:
        shown = ", ".join(map(str, cut[:20])) + (", ..." if len(cut) > 20 else "")
        warnings.warn(f"{path}: {len(cut)} truncated or malformed frame(s): {shown} (rows have truncated=True)",
                      TruncatedPacketWarning, stacklevel=2)  # fmt: skip


def dissect_records(pcaps: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of one or more captures as a list of dicts (keys: `COLUMNS`)."""
    files = [pcaps] if isinstance(pcaps, (str, Path)) else list(pcaps)
    return [row for f in files for row in iter_records(f)]


def dissect(pcaps: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One or more captures as a tidy DataFrame: one row per frame and header layer, columns `COLUMNS`.

    Integer columns are pandas nullable integers (``Int64``); fields that do not apply to a row are missing.
    """
    df = pd.DataFrame(dissect_records(pcaps), columns=list(COLUMNS))
    for c in _INT_COLUMNS:
        df[c] = df[c].astype("Int64")
    df["truncated"] = df["truncated"].astype(bool)
    df["quoted"] = df["quoted"].astype(bool)
    return df


# --------------------------------------------------------------------------------------------- tshark cross-check

TSHARK_FIELDS: tuple[str, ...] = (
    "frame.number",
    "frame.len",
    "frame.cap_len",
    "ip.version",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.hlim",
    "ipv6.plen",
    "ipv6.flow",
    "ipv6.tclass",
    "ipv6.routing.type",
    "ipv6.routing.nxt",
    "ipv6.routing.segleft",
    "ipv6.routing.srh.last_entry",
    "ipv6.routing.srh.addr",
    "ipv6.routing.srh.tag",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.hdr_len",
    "tcp.len",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "icmpv6.type",
    "icmpv6.code",
)


def tshark_fields(pcap: str | Path, fields: Iterable[str] = TSHARK_FIELDS, tshark: str = "tshark") -> pd.DataFrame:
    """`tshark -T fields` on a capture: one row per frame, one string column per field.

    A field that occurs several times in a frame (nested IPv6 headers, several SRH segments) holds all its
    occurrences in order, comma separated, exactly as tshark prints them; absent fields are empty strings.
    Raises `LabError` if tshark is missing or fails on the file.
    """
    exe = shutil.which(tshark)
    if exe is None:
        raise LabError(f"{tshark} not found: install it (apt-get install -y tshark, or `make system-deps`)")
    fields = list(fields)
    argv = [exe, "-n", "-r", str(pcap), "-T", "fields", "-E", "header=n", "-E", "separator=/t", "-E",
            "occurrence=a", "-E", "aggregator=,", "-E", "quote=n"]  # fmt: skip
    for f in fields:
        argv += ["-e", f]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{pcap}: tshark timed out after 300 s") from e
    if res.returncode != 0:
        err = "\n".join(ln for ln in res.stderr.splitlines() if "Running as user" not in ln).strip()
        # tshark exits 2 on a capture cut short in the middle of a record, after printing every whole frame
        if not (res.returncode == 2 and res.stdout and "cut short" in err):
            raise LabError(f"{pcap}: tshark failed (exit {res.returncode}): {err}")
    lines = [ln.split("\t") for ln in res.stdout.splitlines() if ln]
    bad = [ln for ln in lines if len(ln) != len(fields)]
    if bad:
        raise LabError(f"{pcap}: unexpected tshark output line: {bad[0]!r}")
    return pd.DataFrame(lines, columns=fields, dtype=str)


@dataclass(frozen=True)
class Disagreement:
    """One field where scapy and tshark disagree about a frame (or a frame one of them has and the other not)."""

    pcap: str
    frame: int
    header: str  # e.g. "ipv6[1]", "srh[0]", "tcp[0]", "frame"
    field: str  # the dissector's column name
    scapy: object
    tshark: object

    def __str__(self) -> str:
        return f"{self.pcap} frame {self.frame} {self.header}.{self.field}: scapy={self.scapy!r} tshark={self.tshark!r}"


def _occ(value: str) -> list[str]:
    return value.split(",") if value else []


def _int(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        try:
            return int(text, 16)
        except ValueError:
            return None


def _bytes_int(text: str) -> int | None:
    hexdigits = text.replace(":", "").strip()
    return int(hexdigits, 16) if hexdigits else None


def _tcp_flags_int(letters: str | None) -> int | None:
    if letters is None:
        return None
    return sum(1 << _TCP_FLAG_LETTERS.index(c) for c in letters)


def _norm(v: object) -> object:
    if v is None:
        return None
    try:
        if pd.isna(v):  # type: ignore[arg-type]
            return None
    except (TypeError, ValueError):
        pass
    return int(v) if isinstance(v, (int,)) or hasattr(v, "__index__") else v


def compare(pcap: str | Path, tshark: str = "tshark") -> list[Disagreement]:
    """Dissect a capture with scapy and with tshark and return every field where they disagree.

    Compared, header by header in order (the n-th IPv6 header of a frame against tshark's n-th occurrence):
    IPv6 src, dst, nh, hlim, plen, fl, tc; routing headers' nh and segleft; SRH lastentry, segments, tag; TCP
    sport, dport, flags, length; UDP sport, dport, length; ICMPv6 type, code. The number of frames and of headers
    of each kind must match too. In truncated frames only the headers both tools decoded are compared, and L4
    headers are not compared in frames with a fragment header (tshark reassembles, scapy does not) nor in frames
    with an IPv4 header (the dissector gives no L4 rows under IPv4).
    An empty list means the two agree.
    """
    pcap_s = str(pcap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DissectWarning)
        df = dissect(pcap)
    ts = tshark_fields(pcap, tshark=tshark)
    out: list[Disagreement] = []
    frames = {int(f): g for f, g in df.groupby("frame", sort=True)}
    ts_frames = {int(r["frame.number"]): r for _, r in ts.iterrows()}
    for f in sorted(set(frames) ^ set(ts_frames)):
        if f in frames and f == max(frames) and bool(frames[f]["truncated"].any()):
            continue  # a file cut in the middle of its last record: tshark drops that frame, scapy keeps it
        out.append(Disagreement(pcap_s, f, "frame", "present", f in frames, f in ts_frames))
    for f in sorted(set(frames) & set(ts_frames)):
        out += _compare_frame(pcap_s, f, frames[f], ts_frames[f])
    return out


def _compare_frame(pcap: str, frame: int, rows: pd.DataFrame, t: pd.Series) -> list[Disagreement]:
    fr = _FrameComparison(pcap, frame, bool(rows["truncated"].any()))
    _compare_ipv6(fr, rows, t)
    _compare_routing(fr, rows, t)
    # Upper-layer headers, except under fragments (tshark reassembles, scapy does not) and under IPv4 (its L4
    # headers are not rows here).
    if not ((rows["ext"] == "fragment").any() or t["ip.version"]):
        _compare_l4(fr, rows, t)
    return fr.out


@dataclass
class _FrameComparison:
    """The disagreements found in one frame so far, and whether the frame was cut short."""

    pcap: str
    frame: int
    truncated: bool
    out: list[Disagreement] = field(default_factory=list)

    def check(self, header: str, fld: str, mine: object, theirs: object) -> None:
        mine = _norm(mine)
        if mine != theirs:
            self.out.append(Disagreement(self.pcap, self.frame, header, fld, mine, theirs))

    def count(self, header: str, mine: int, theirs: int) -> bool:
        """Whether the header counts agree; a mismatch is a disagreement unless the frame is truncated."""
        if mine != theirs and not self.truncated:
            self.out.append(Disagreement(self.pcap, self.frame, header, "count", mine, theirs))
        return mine == theirs


def _compare_ipv6(fr: _FrameComparison, rows: pd.DataFrame, t: pd.Series) -> None:
    """The IPv6 fixed headers, the n-th against tshark's n-th occurrence."""
    v6 = rows[rows["kind"] == "ipv6"]
    cols = {k: _occ(t[k]) for k in ("ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.hlim", "ipv6.plen", "ipv6.flow",
                                    "ipv6.tclass")}  # fmt: skip
    n_ts = len(cols["ipv6.src"])
    fr.count("ipv6", len(v6), n_ts)
    for i, (_, r) in enumerate(v6.iterrows()):
        if i >= n_ts:
            break
        h = f"ipv6[{i}]"

        def at(k: str, i: int = i) -> str:
            return cols[k][i] if i < len(cols[k]) else ""

        fr.check(h, "src", r["src"], at("ipv6.src") or None)
        fr.check(h, "dst", r["dst"], at("ipv6.dst") or None)
        fr.check(h, "nh", r["nh"], _int(at("ipv6.nxt")))
        fr.check(h, "hlim", r["hlim"], _int(at("ipv6.hlim")))
        fr.check(h, "plen", r["plen"], _int(at("ipv6.plen")))
        fr.check(h, "fl", r["fl"], _int(at("ipv6.flow")))
        fr.check(h, "tc", r["tc"], _int(at("ipv6.tclass")))


def _compare_routing(fr: _FrameComparison, rows: pd.DataFrame, t: pd.Series) -> None:
    """Routing headers (SRH and others): tshark's ipv6.routing.* occurrences, then the SRH-only fields per SRH."""
    rt = rows[(rows["kind"] == "srh") | ((rows["kind"] == "ext") & (rows["ext"] == "routing"))]
    rtype, rnxt, rsl = (_occ(t[k]) for k in ("ipv6.routing.type", "ipv6.routing.nxt", "ipv6.routing.segleft"))
    if fr.count("routing", len(rt), len(rtype)):
        for i, (_, r) in enumerate(rt.iterrows()):
            h = f"{r['kind']}[{i}]"
            fr.check(h, "nh", r["nh"], _int(rnxt[i]) if i < len(rnxt) else None)
            fr.check(h, "segleft", r["segleft"], _int(rsl[i]) if i < len(rsl) else None)
    srh = rows[rows["kind"] == "srh"]
    last, addrs, tags = (_occ(t[k]) for k in ("ipv6.routing.srh.last_entry", "ipv6.routing.srh.addr",
                                               "ipv6.routing.srh.tag"))  # fmt: skip
    if not fr.count("srh", len(srh), len(last)):
        return
    pos = 0
    for i, (_, r) in enumerate(srh.iterrows()):
        h = f"srh[{i}]"
        fr.check(h, "lastentry", r["lastentry"], _int(last[i]))
        n = len(r["segments"].split()) if r["segments"] else 0
        fr.check(h, "segments", r["segments"] or None, " ".join(addrs[pos : pos + n]) or None)
        pos += n
        fr.check(h, "tag", r["tag"], _bytes_int(tags[i]) if i < len(tags) else None)
    if pos != len(addrs) and not fr.truncated:
        fr.out.append(Disagreement(fr.pcap, fr.frame, "srh", "segment count", pos, len(addrs)))


def _compare_l4(fr: _FrameComparison, rows: pd.DataFrame, t: pd.Series) -> None:
    """TCP, UDP and ICMPv6 headers; lengths only where the frame is whole and the header is not quoted in an error."""
    l4 = rows[rows["kind"] == "l4"]
    for proto, keys in (("tcp", ("tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.hdr_len", "tcp.len")),
                        ("udp", ("udp.srcport", "udp.dstport", "udp.length")),
                        ("icmpv6", ("icmpv6.type", "icmpv6.code"))):  # fmt: skip
        mine = l4[l4["proto"] == proto]
        occ = {k: _occ(t[k]) for k in keys}
        theirs = len(occ[keys[0]])
        if not fr.count(proto, len(mine), theirs):
            continue
        for i, (_, r) in enumerate(mine.iterrows()):
            h = f"{proto}[{i}]"

            def at(k: str, i: int = i, occ: dict[str, list[str]] = occ) -> int | None:
                return _int(occ[k][i]) if i < len(occ[k]) else None

            if proto == "icmpv6":
                fr.check(h, "icmp_type", r["icmp_type"], at("icmpv6.type"))
                fr.check(h, "icmp_code", r["icmp_code"], at("icmpv6.code"))
                continue
            fr.check(h, "sport", r["sport"], at(f"{proto}.srcport"))
            fr.check(h, "dport", r["dport"], at(f"{proto}.dstport"))
            if proto == "tcp":
                fr.check(h, "tcp_flags", _tcp_flags_int(r["tcp_flags"]), at("tcp.flags"))
                if not fr.truncated and not r["quoted"] and at("tcp.len") is not None:
                    fr.check(h, "length", r["length"], (at("tcp.hdr_len") or 0) + (at("tcp.len") or 0))
            elif not fr.truncated and not r["quoted"]:
                fr.check(h, "length", r["length"], at("udp.length"))


# --------------------------------------------------------------------------------------------------- presentation

TABLE_HEADER: tuple[str, ...] = ("point", "frame", "layer", "depth", "kind", "src", "dst", "nh", "hlim", "plen", "fl",
                                 "tc", "details")  # fmt: skip


def _details(r: dict[str, Any]) -> str:
    def has(k: str) -> bool:
        return _norm(r.get(k)) is not None

    kind = r["kind"]
    parts: list[str] = []
    if kind == "srh":
        parts = [f"segleft={r['segleft']}", f"last={r['lastentry']}", f"segs=[{r['segments']}]", f"tag={r['tag']}"]
    elif kind == "ext":
        parts = [str(r["ext"])] + ([f"segleft={r['segleft']}"] if has("segleft") else [])
    elif kind in ("l4", "non-ipv6"):
        parts = [str(r["proto"])]
        if has("sport"):
            parts.append(f"{r['sport']} > {r['dport']}")
        if has("tcp_flags"):
            parts.append(f"[{r['tcp_flags'] or '.'}]")
        if has("icmp_type"):
            parts.append(f"type={r['icmp_type']} code={r['icmp_code']}")
        if has("length"):
            parts.append(f"len={r['length']}")
    if r.get("quoted"):
        parts.append("(quoted)")
    if r.get("truncated"):
        parts.append("TRUNCATED")
    return " ".join(parts)


def table_rows(df: pd.DataFrame) -> list[list[str]]:
    """Rows of `dissect`'s DataFrame for a readable text table with columns `TABLE_HEADER` (flow label in hex)."""
    out = []
    for r in df.to_dict("records"):

        def cell(k: str, r: dict[str, Any] = r) -> str:
            v = _norm(r.get(k))
            if v is None:
                return "" if k not in ("src", "dst") or r["kind"] != "non-ipv6" else "-"
            return f"{v:#x}" if k == "fl" else str(v)

        out.append([cell(k) for k in TABLE_HEADER[:-1]] + [_details(r)])
    return out
