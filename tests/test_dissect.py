"""labtools.outputs.dissect: scapy dissection of captures into tidy rows,, checked field by field against tshark."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapReader, wrpcap

from labtools import cli
from labtools.base.errors import LabError
from labtools.outputs import dissect

CLIENT, POD = "2001:db8:1234:5679::1", "2001:db8:1234:5678:8:2:1:841"
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}

requires_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None, reason="tshark is missing: `apt-get install -y tshark` (make system-deps)"
)


def echo(seq: int = 1, fl: int = 0xABCDE, hlim: int = 64) -> Packet:
    """The thesis' ICMPv6 echo request from the client to the pod: 64 bytes of ICMPv6 (8 header + 56 data)."""
    return IPv6(src=CLIENT, dst=POD, fl=fl, hlim=hlim) / ICMPv6EchoRequest(id=0x1234, seq=seq, data=bytes(range(56)))


def srv6(inner: Packet, segs: list[str] | None = None, segleft: int = 0, tag: int = 0, fl: int = 0xABCDE) -> Packet:
    """The router's `encap seg6 mode encap segs fc00::2`, tunsrc fc00::1: outer IPv6 + SRH + the inner packet."""
    segs = segs or ["fc00::2"]
    return (
        IPv6(src="fc00::1", dst=segs[segleft], fl=fl, hlim=63)
        / IPv6ExtHdrSegmentRouting(addresses=segs, segleft=segleft, lastentry=len(segs) - 1, tag=tag)
        / inner
    )


def write(tmp_path: Path, name: str, pkts: list[Packet], **kw: object) -> Path:
    path = tmp_path / f"{name}.pcap"
    wrpcap(str(path), [p if p.haslayer(Ether) or kw else Ether(**MACS) / p for p in pkts], **kw)
    return path


def rows(df: pd.DataFrame, frame: int = 1) -> list[dict]:
    return df[df["frame"] == frame].to_dict("records")


@pytest.fixture
def agrees_with_tshark():
    """Assert that scapy and tshark agree on every compared field of a capture."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is missing: `apt-get install -y tshark` (make system-deps)")

    def check(path: Path) -> None:
        bad = dissect.compare(path)
        assert not bad, "\n".join(map(str, bad))

    return check


def test_plain_icmpv6_echo(tmp_path, agrees_with_tshark):
    path = write(
        tmp_path, "client-ens3", [echo(), IPv6(src=POD, dst=CLIENT, hlim=62) / ICMPv6EchoReply(data=b"x" * 56)]
    )
    df = dissect.dissect(path)
    assert list(df.columns) == list(dissect.COLUMNS)
    req = rows(df, 1)
    assert [r["kind"] for r in req] == ["ipv6", "l4"]
    assert [r["depth"] for r in req] == [0, 0]
    v6, l4 = req
    assert (v6["src"], v6["dst"], v6["nh"], v6["hlim"], v6["plen"], v6["fl"], v6["tc"]) == (
        CLIENT, POD, 58, 64, 64, 0xABCDE, 0)  # fmt: skip
    assert (l4["proto"], l4["icmp_type"], l4["icmp_code"], l4["length"]) == ("icmpv6", 128, 0, 64)
    assert rows(df, 2)[1]["icmp_type"] == 129 and rows(df, 2)[0]["hlim"] == 62
    assert df["point"].eq("client-ens3").all() and not df["truncated"].any()
    assert dissect.dissect_records(path)[0]["frame"] == 1  # also usable as plain dicts
    agrees_with_tshark(path)


def test_srv6_encap_as_in_the_thesis(tmp_path, agrees_with_tshark):
    path = write(tmp_path, "router-ens7", [srv6(echo())])
    outer, srh, inner, l4 = rows(dissect.dissect(path))
    # thesis Figs. 39-43: fc00::1 -> fc00::2, next header 43, payload length 128 = 24 SRH + 40 IPv6 + 64 ICMPv6
    assert (outer["kind"], outer["depth"], outer["src"], outer["dst"]) == ("ipv6", 0, "fc00::1", "fc00::2")
    assert (outer["nh"], outer["plen"], outer["hlim"], outer["fl"]) == (43, 128, 63, 0xABCDE)
    assert (srh["kind"], srh["depth"], srh["nh"], srh["segleft"], srh["lastentry"], srh["segments"], srh["tag"]) == (
        "srh", 0, 41, 0, 0, "fc00::2", 0)  # fmt: skip
    assert (inner["kind"], inner["depth"], inner["src"], inner["dst"], inner["plen"]) == ("ipv6", 1, CLIENT, POD, 64)
    assert (l4["kind"], l4["depth"], l4["proto"], l4["icmp_type"]) == ("l4", 1, "icmpv6", 128)
    agrees_with_tshark(path)


def test_srh_with_three_segments_and_a_tag(tmp_path, agrees_with_tshark):
    segs = ["fc00::2", "fc00::3", "fc00::4"]  # wire order: Segment List[0] is the final segment
    path = write(tmp_path, "srh3", [srv6(echo(), segs=segs, segleft=2, tag=0x2A), srv6(echo(2), segs=segs, segleft=1)])
    df = dissect.dissect(path)
    outer, srh = rows(df)[:2]
    assert outer["dst"] == "fc00::4" and outer["plen"] == 24 + 2 * 16 + 40 + 64
    assert (srh["segleft"], srh["lastentry"], srh["segments"], srh["tag"]) == (2, 2, "fc00::2 fc00::3 fc00::4", 42)
    assert rows(df, 2)[1]["segleft"] == 1
    agrees_with_tshark(path)


def test_ipv6_in_ipv6_and_double_encapsulation(tmp_path, agrees_with_tshark):
    ip6ip6 = IPv6(src="fc00::1", dst="fc00::2") / echo()
    double = srv6(srv6(echo(), segs=["fc00::7", "fc00::8"], segleft=1, tag=7), segs=["fc00::2"])
    path = write(tmp_path, "nested", [ip6ip6, double])
    df = dissect.dissect(path)
    assert [(r["kind"], r["depth"]) for r in rows(df, 1)] == [("ipv6", 0), ("ipv6", 1), ("l4", 1)]
    assert rows(df, 1)[0]["nh"] == 41 and rows(df, 1)[0]["plen"] == 104
    assert [(r["kind"], r["depth"]) for r in rows(df, 2)] == [
        ("ipv6", 0), ("srh", 0), ("ipv6", 1), ("srh", 1), ("ipv6", 2), ("l4", 2)]  # fmt: skip
    assert rows(df, 2)[3]["segments"] == "fc00::7 fc00::8" and rows(df, 2)[3]["tag"] == 7
    assert [r["layer"] for r in rows(df, 2)] == list(range(6))
    agrees_with_tshark(path)


def test_tcp_syn_and_udp_inside_srv6(tmp_path, agrees_with_tshark):
    syn = srv6(IPv6(src=CLIENT, dst="2001:db8:1234:5678::2") / TCP(sport=40000, dport=30001, flags="S", seq=1))
    synack = srv6(IPv6(src="2001:db8:1234:5678::2", dst=CLIENT) / TCP(sport=30001, dport=40000, flags="SA") / b"hi")
    udp = srv6(IPv6(src=CLIENT, dst=POD) / UDP(sport=40001, dport=5201) / Raw(b"u" * 100))
    path = write(tmp_path, "l4", [syn, synack, udp])
    df = dissect.dissect(path)
    tcp = rows(df, 1)[-1]
    assert (tcp["depth"], tcp["proto"], tcp["sport"], tcp["dport"], tcp["tcp_flags"], tcp["length"]) == (
        1, "tcp", 40000, 30001, "S", 20)  # fmt: skip
    assert rows(df, 2)[-1]["tcp_flags"] == "SA" and rows(df, 2)[-1]["length"] == 22
    assert (rows(df, 3)[-1]["proto"], rows(df, 3)[-1]["dport"], rows(df, 3)[-1]["length"]) == ("udp", 5201, 108)
    agrees_with_tshark(path)


def test_other_extension_headers_and_icmpv6_errors(tmp_path, agrees_with_tshark):
    hbh = IPv6(src=CLIENT, dst="ff02::16") / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest()
    too_big = IPv6(src="fc00::1", dst=CLIENT) / ICMPv6DestUnreach(code=3) / Raw(bytes(srv6(echo()))[:150])
    frag = IPv6(src=CLIENT, dst=POD) / IPv6ExtHdrFragment(id=5, m=1) / Raw(bytes(ICMPv6EchoRequest(data=b"z" * 64)))
    path = write(tmp_path, "ext", [hbh, too_big, frag])
    df = dissect.dissect(path)
    assert [r["kind"] for r in rows(df, 1)] == ["ipv6", "ext", "l4"] and rows(df, 1)[1]["ext"] == "hop-by-hop"
    quoted = rows(df, 2)
    assert [(r["kind"], r["depth"], r["quoted"]) for r in quoted] == [
        ("ipv6", 0, False), ("l4", 0, False), ("ipv6", 1, True), ("srh", 1, True), ("ipv6", 2, True),
        ("l4", 2, True)]  # fmt: skip
    assert rows(df, 3)[1]["ext"] == "fragment"
    agrees_with_tshark(path)


def test_non_ipv6_frames_are_one_row_each(tmp_path, agrees_with_tshark):
    arp = Ether(src=MACS["src"], dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="172.16.69.5", pdst="172.16.69.17")
    ipv4 = Ether(**MACS) / IP(src="172.16.69.5", dst="172.16.69.17") / UDP(sport=1, dport=2)
    path = write(tmp_path, "mixed", [arp, ipv4, Ether(**MACS) / echo()])
    df = dissect.dissect(path)
    assert df.groupby("frame").size().tolist() == [1, 1, 2]
    a, b = rows(df, 1)[0], rows(df, 2)[0]
    assert (a["kind"], a["proto"], a["src"], a["dst"]) == ("non-ipv6", "arp", "172.16.69.5", "172.16.69.17")
    assert (b["kind"], b["proto"], b["src"], b["nh"]) == ("non-ipv6", "ipv4", "172.16.69.5", 17)
    assert pd.isna(a["depth"])
    agrees_with_tshark(path)


@pytest.mark.parametrize("link", [CookedLinux, CookedLinuxV2])
def test_linux_cooked_captures(tmp_path, agrees_with_tshark, link):
    path = tmp_path / "any.pcap"
    wrpcap(str(path), [link(proto=0x86DD) / srv6(echo())])
    assert [r["kind"] for r in rows(dissect.dissect(path))] == ["ipv6", "srh", "ipv6", "l4"]
    agrees_with_tshark(path)


def test_truncated_packets_warn_and_are_flagged(tmp_path, agrees_with_tshark):
    full = bytes(Ether(**MACS) / srv6(echo()))
    path = tmp_path / "snap.pcap"
    pkts = []
    for n in (96, 14 + 40 + 10, 14 + 20):  # snaplen 96: mid inner header; mid SRH; mid outer header
        pkts.append(Ether(full[:n]))
        pkts[-1].wirelen = len(full)  # the pcap record: caplen n, original length the whole frame
    pkts.append(Ether(full[:54] + b"\x29\x00\x04"))  # broken bytes: whole on the wire, SRH of 3 bytes
    pkts.append(Ether(**MACS) / echo())
    wrpcap(str(path), pkts, snaplen=96)
    with pytest.warns(dissect.TruncatedPacketWarning, match=r"4 truncated or malformed frame\(s\): 1, 2, 3, 4"):
        df = dissect.dissect(path)
    assert df.groupby("frame")["truncated"].all().tolist() == [True, True, True, True, False]
    assert rows(df, 1)[0]["plen"] == 128 and rows(df, 1)[1]["segments"] == "fc00::2"
    assert rows(df, 3)[0]["kind"] == "non-ipv6"  # not even the outer header is whole
    agrees_with_tshark(path)


def test_file_cut_in_the_middle_of_a_record(tmp_path, agrees_with_tshark):
    path = write(tmp_path, "whole", [srv6(echo(i)) for i in range(1, 5)])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[:-50])
    with pytest.warns(dissect.TruncatedPacketWarning):
        df = dissect.dissect(cut)
    assert df.groupby("frame")["truncated"].all().tolist() == [False, False, False, True]
    agrees_with_tshark(cut)


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", b"\xa1\xb2\xc3\xd4"])
def test_not_a_capture_is_a_lab_error_naming_the_file(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(LabError, match=r"notes\.txt"):
        dissect.dissect(path)
    with pytest.raises(LabError, match=r"missing\.pcap: no such capture file"):
        dissect.dissect(tmp_path / "missing.pcap")


@requires_tshark
def test_compare_finds_disagreements(tmp_path, monkeypatch):
    path = write(tmp_path, "srv6", [srv6(echo())])
    real = dissect.dissect

    def lying(pcap):
        df = real(pcap)
        df.loc[df["kind"] == "ipv6", "hlim"] = [1, 2]
        df.loc[df["kind"] == "srh", "segments"] = "fc00::99"
        return df

    monkeypatch.setattr(dissect, "dissect", lying)
    bad = {(d.header, d.field): (d.scapy, d.tshark) for d in dissect.compare(path)}
    assert bad == {("ipv6[0]", "hlim"): (1, 63), ("ipv6[1]", "hlim"): (2, 64), ("srh[0]", "segments"): (
        "fc00::99", "fc00::2")}  # fmt: skip


@requires_tshark
def test_cli(tmp_path, capsys):
    path = write(tmp_path, "router-ens7", [srv6(echo())])
    out = tmp_path / "rows.csv"
    assert cli.main(["dissect", str(path), "--csv", str(out), "--check-tshark"]) == 0
    text = capsys.readouterr().out
    assert "segs=[fc00::2]" in text and "0xabcde" in text and "0 disagreement(s)" in text
    assert pd.read_csv(out)["plen"].iloc[0] == 128
    assert cli.main(["dissect", str(tmp_path / "nope.pcap")]) == 2


def _capture(netns: str, iface: str, path: Path) -> None:
    ns = ["ip", "netns", "exec", netns]
    dump = subprocess.Popen([*ns, "tcpdump", "-U", "-n", "-i", iface, "-c", "2", "-w", str(path), "icmp6"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert dump.stderr is not None
        seen = ""
        while "listening on" not in seen:  # tcpdump says so once its socket is open
            line = dump.stderr.readline()
            assert line, f"tcpdump exited: {seen}"
            seen += line
        subprocess.run([*ns, "ping", "-6", "-c", "1", "-W", "2", "::1"], check=True, capture_output=True, timeout=10)
        dump.wait(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()


@pytest.mark.lab  # a capture in a temporary network namespace
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is missing (make system-deps)")
def test_real_capture_on_loopback(tmp_path, agrees_with_tshark):
    """A real ping captured with tcpdump (Ethernet on lo, Linux cooked v2 on `any`) dissects and agrees."""
    netns = f"pdx-tmp-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        time.sleep(0.05)
        for iface in ("lo", "any"):
            path = tmp_path / f"{iface}.pcap"
            _capture(netns, iface, path)
            with PcapReader(str(path)) as reader:
                assert reader.linktype in ({1} if iface == "lo" else {113, 276})  # Ethernet; Linux cooked v1/v2
            df = dissect.dissect(path)
            l4 = df[df["kind"] == "l4"]
            assert l4["icmp_type"].tolist() == [128, 129], df
            assert df[df["kind"] == "ipv6"]["src"].eq("::1").all()
            agrees_with_tshark(path)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "data" / "raw").glob("reference-srv6/*/*.pcap"))


@pytest.mark.skipif(not COMMITTED, reason="no committed SRv6 captures in data/raw/reference-srv6/")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (make setup installs it)")
@pytest.mark.parametrize("pcap", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_captures_agree_with_tshark(pcap):
    assert dissect.compare(pcap) == []
