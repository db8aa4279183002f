"""The outputs layer that the notebooks narrate: `labtools.outputs.verdicts` (notebook 01), `labtools.outputs.srv6view`
(notebook 02) and `labtools.outputs.tables` (their LaTeX), on the committed reference run; and the notebooks
themselves stay thin (no `def`/`class`, no code cell over 12 lines, no lab stack unless measuring)."""

from __future__ import annotations

import ast
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from labtools.base import paths
from labtools.model.plan import Plan, plans, profile_params
from labtools.outputs import analysis, figstyle, figures, paper, srv6view, sweepview, tables, verdicts
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_CELL_LINES = 12
RAW = ROOT / "data" / "raw" / "reference-srv6"
HAVE_SWEEPS = all((ROOT / "data" / "processed" / f"reference-{s}.csv").exists() for s in ("s1", "s2"))
HAVE_SRV6 = RAW.is_dir() and (ROOT / "data" / "processed" / "reference-srv6-matrix.csv").exists()
needs_sweeps = pytest.mark.skipif(not HAVE_SWEEPS, reason="no committed reference sweeps (reference-s1/s2.csv)")
needs_srv6 = pytest.mark.skipif(not HAVE_SRV6, reason="no committed reference SRv6 run")


# What notebook 02 printed for the reference captures.
HLIM_WHY = ("captured with the pod attached plainly: "
    "the kernel alone ages the packet (the encapsulating router does not age the inner header, End.DT6 forwards "
    "once: 64 -> 63); Cilium's bpf_host/bpf_lxc age it once more on the worker, which `lab up --cni cilium` (the "
    "default since) models: 62; re-capture where the kernel has seg6 routes, or on Debian's in a VM (`labtools vm run`)")
COMPARISON = [
    "same: hop limit at the client (request): thesis 64, measured 64",
    "DIFFERENT: hop limit at the pod (request): thesis 62, measured 63 — " + HLIM_WHY,
    "DIFFERENT: hop limit at the client (reply): thesis 62, measured 63 — the same, mirrored: Cilium ages the "
    "reply on the worker before it is encapsulated",
    *[line for p in ("router-cluster", "worker") for line in (
        f"same: outer next header at {p}: thesis 43, measured 43",
        f"same: outer payload length at {p}: thesis 128, measured 128",
        f"same: inner payload length at {p}: thesis 64, measured 64",
        f"same: flow label copied to the outer header at {p}: thesis True, measured True",
        f"same: SRH segments at {p}: thesis fc00::2, measured fc00::2",
        f"same: outer source -> destination at {p}: thesis fc00::1 -> fc00::2, measured fc00::1 -> fc00::2",
    )],
    *[f"DIFFERENT: outer hop limit of the reply at {p}: thesis 62, measured 63 — " + HLIM_WHY
      for p in ("router-cluster", "worker")],
    "same: plain IPv6 at the client and the pod: thesis True, measured True",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- notebook 01: labtools.outputs.verdicts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_plans() -> list[Plan]:
    """The sweeps of the first reference run (2026-12-04), fixed input for these tests: it had no resolution sweep."""
    return plans({k: v for k, v in profile_params("full")["sweeps"].items() if k in ("s1", "s2", "probe")}, "reference")


@pytest.fixture(scope="module")
def df(sweep_plans) -> pd.DataFrame:
    if not HAVE_SWEEPS:
        pytest.skip("no committed reference sweeps")
    return analysis.load([p.run_id for p in sweep_plans], root=ROOT / "data")


@pytest.fixture(scope="module")
def hd(df) -> pd.DataFrame:
    return df[df["run_id"] == "reference-s2"]


@pytest.fixture(scope="module")
def table(hd, sweep_plans) -> pd.DataFrame:
    head = verdicts.headline(sweep_plans)
    return verdicts.summary_table(hd, head.targets_of("crr"), head.metrics)


def _plan(**kw) -> Plan:
    spec = {"run_id": "t-s1", "datapaths": ["none", "iptables"], "counts": [1, 100], "metrics": ["throughput"],
            "targets": ["first"], "repeats": 2, **kw}  # fmt: skip
    return Plan(**spec)


def test_which_sweep_and_target(sweep_plans):
    s1, s2, probe = sweep_plans
    assert probe.metrics == ["probe-overhead"] and verdicts.transit_plan(sweep_plans) is s2
    assert verdicts.headline(sweep_plans) is s2  # crr up to 10,000 beats crr up to 1,000
    assert verdicts.throughput_plans(sweep_plans) == [s1, s2]
    assert [verdicts.scenario_target(p) for p in sweep_plans[:2]] == ["first", "last"]
    assert verdicts.crr_target(["last", "pod"]) == "last"
    assert verdicts.crr_target(["first", "pod"]) == "first"
    with pytest.raises(ValueError, match="crr"):
        verdicts.headline([_plan()])


@needs_sweeps
def test_describe_run_and_overview(df, sweep_plans):
    prov = verdicts.provenance(sweep_plans[0].run_id)
    samples = len(df[["run_id", "datapath", "services", "target", "repeat"]].drop_duplicates())
    assert verdicts.describe_run(df, prov) == (
        f"{len(df)} records from {samples} samples; kernel {prov['kernel']}, {prov['iptables']}, {prov['nft']}, "
        f"commit {prov['git_commit'][:10]}"
    )
    # every (datapath, N, target, repeat) of every sweep, nothing else
    assert samples == len({(p.run_id, d, c, t, r) for p in sweep_plans for c, r, d, _, t in p.points()})
    ov = verdicts.overview(df)
    assert ov.loc[("reference-s2", "udp_pps")].to_dict() == {"records": 495, "datapaths": 5, "counts": 11,
                                                            "repeats": 5}  # fmt: skip
    assert ov.loc[("reference-s1", "throughput"), "records"] == 275
    assert ("reference-s1", "udp_pps") not in ov.index
    assert verdicts.order(df) == ["none", "iptables", "iptables-legacy", "nftables", "ebpf"]


@needs_sweeps
def test_summary_table(table, hd):
    assert list(table.datapath) == ["ebpf", "iptables", "iptables-legacy", "nftables"]
    assert list(table.columns) == ["datapath", "ns_per_service", "ns_ci_lo", "ns_ci_hi", "trend", "repeats", "r2",
                                   "r2_medians", "services", "median_us", "ratio_to_none", "pod_ratio_to_none",
                                   "ratio_to_none_lo", "ratio_to_none_hi", "pod_ratio_to_none_lo",
                                   "pod_ratio_to_none_hi", "udp_pps_ratio_to_none"]  # fmt: skip
    t = table.set_index("datapath")
    crr = hd[(hd.metric == "crr_p50") & (hd.target == "last") & (hd.datapath == "iptables")]
    assert t.loc["iptables", "ns_per_service"] == pytest.approx(np.polyfit(crr.services, crr.value, 1)[0] * 1e3)
    at = lambda d, tgt: hd[(hd.metric == "crr_p50") & (hd.datapath == d) & (hd.target == tgt)  # noqa: E731
                           & (hd.services == 10000)].set_index("repeat")["value"]  # fmt: skip
    paired = np.exp(np.log(at("iptables", "last") / at("none", "pod")).mean())  # paired within repeats: geometric mean
    assert t.loc["iptables", "ratio_to_none"] == pytest.approx(paired)
    assert t.loc["iptables", "trend"].startswith("grows") and t.loc["iptables", "ns_ci_lo"] > 0
    assert set(t["trend"]) <= {"grows linearly", "grows faster than linearly", "grows slower than linearly", "grows",
                               "falls", "flat", "no significant trend"}
    assert (t["ns_ci_lo"] <= t["ns_per_service"]).all() and (t["ns_per_service"] <= t["ns_ci_hi"]).all()
    assert t.loc["iptables", "udp_pps_ratio_to_none"] < 0.5  # every new flow walks the rules
    assert (t["services"] == 10000).all()


@needs_sweeps
def test_summary_table_without_udp_or_none(hd):
    assert "udp_pps_ratio_to_none" not in verdicts.summary_table(hd, ["last", "pod"], ["crr"])
    cluster = hd[hd.datapath != "none"]  # a real cluster has no `none`: every ratio to it is NaN
    t = verdicts.summary_table(cluster, ["last", "pod"], ["crr", "udp-pps"])
    assert t[["ratio_to_none", "pod_ratio_to_none", "udp_pps_ratio_to_none"]].isna().all().all()
    with_none = verdicts.summary_table(hd, ["last", "pod"], ["crr"]).set_index("datapath")
    assert t.set_index("datapath").loc["iptables", "ns_per_service"] == with_none.loc["iptables", "ns_per_service"]


def _printed(notebook: str, call: str) -> list[str]:
    """What the committed, executed notebook printed in the cell that makes `call`."""
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and call in c.source)
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout").splitlines()


@needs_sweeps
def test_statements_are_the_notebooks_sentences():
    run = re.search(r'run_id = \\"([^\\"]+)\\"', (ROOT / "notebooks" / "01-scale-sweep.ipynb").read_text()).group(1)
    own = plans(profile_params("full")["sweeps"], run)  # the run the notebook loads by default
    lines = verdicts.statements(analysis.load([p.run_id for p in own], root=ROOT / "data"), own)
    assert lines == _printed("01-scale-sweep.ipynb", "verdicts.statements")  # the notebook says the same
    assert any(ln.startswith("iptables: connection setup grows") for ln in lines)  # its slope's CI lies above 0
    assert any(ln.startswith("iptables transit, request at last") for ln in lines)
    assert any(ln.startswith("probe under none") for ln in lines)


@needs_sweeps
def test_statements_without_a_none_datapath(hd, sweep_plans):
    cluster = hd[hd.datapath != "none"]
    t = verdicts.summary_table(cluster, ["last", "pod"], ["crr"])
    lines = verdicts.crr_statements(cluster, t, "last")
    assert len(lines) == 4  # one per datapath: no pod ratio, no baseline spread
    assert all(ln.endswith("; this run has no none datapath to compare with.") for ln in lines)
    assert lines[1].startswith("iptables: connection setup grows")


def test_statements_say_not_flat():
    plan = _plan()
    rows = [{"run_id": "t-s1", "datapath": d, "services": n, "target": "first", "repeat": r, "metric": "throughput",
             "value": v} for r in range(2) for d, n, v in (("iptables", 1, 10.0), ("iptables", 100, 20.0),
                                                           ("none", 1, 10.0), ("none", 100, 10.0))]  # fmt: skip
    assert verdicts.throughput_statements(pd.DataFrame(rows), [plan]) == [
        "t-s1: iptables throughput grows in N (fitted change over N = 1..100: 95% CI +66.7% to +66.7%; "
        "flat means within ±5%)."
    ]


@needs_sweeps
def test_sweep_macros(table):
    assert verdicts.macro_name("iptables-legacy") == "IptablesLegacy"
    assert verdicts.macro_name("ebpf") == "Ebpf"
    lines = verdicts.sweep_macros(table, 10000, 5).splitlines()
    assert len(lines) == 2 + 4 * 4
    assert lines[:2] == [r"\newcommand{\SweepMaxServices}{10,000}", r"\newcommand{\SweepRepeats}{5}"]
    t = table.set_index("datapath")
    assert rf"\newcommand{{\SlopeIptables}}{{{t.loc['iptables', 'ns_per_service']:.1f}}}" in lines
    assert rf"\newcommand{{\RatioNoneIptablesLegacy}}{{{t.loc['iptables-legacy', 'ratio_to_none']:.2f}}}" in lines
    trend = next(ln for ln in lines if ln.startswith(r"\newcommand{\TrendIptables}"))
    assert "grows" in trend and "~ns per Service" in trend and "95\\% CI" in trend


def _line(ax, label: str):
    """The data line of the error bar labelled `label`."""
    (container,) = [c for c in ax.containers if c.get_label() == label]
    return container.lines[0]


@needs_sweeps
def test_throughput_figures(df, sweep_plans):
    fig = sweepview.throughput_ratio_figure(df, sweep_plans)
    assert [ax.get_title() for ax in fig.axes] == ["scenario 1: target first", "scenario 2: target last"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ebpf / iptables", "ebpf / iptables-legacy"]
    ratio = analysis.paired_ratio(df[df.run_id == "reference-s1"], "throughput", "first", "ebpf", "iptables")
    assert list(_line(fig.axes[0], "ebpf / iptables").get_ydata()) == pytest.approx(list(ratio["median"]))
    box = sweepview.throughput_box_figure(df, sweep_plans)
    assert len(box.axes) == 2
    assert [t.get_text() for t in box.legends[0].get_texts()] == ["iptables", "iptables-legacy", "nftables", "ebpf"]
    assert all(ax.get_ylim()[0] == 0 for ax in box.axes)  # honest axes: throughput from 0


@needs_sweeps
def test_crr_and_udp_figures(hd):
    fig = sweepview.crr_figure(hd, ["last", "pod"])
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["p50 connection setup, target last",
                                                   "p50 connection setup, target pod",
                                                   "p99 connection setup, target last",
                                                   "p99 connection setup, target pod"]  # fmt: skip
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == verdicts.order(hd)  # one legend for all panels
    S = analysis.summary(hd)  # the grey line is none at the pod, on every panel
    none = S[(S.datapath == "none") & (S.metric == "crr_p50") & (S.target == "pod")]
    for ax in fig.axes[:2]:  # the p50 row: last, pod
        assert list(_line(ax, "none").get_ydata()) == pytest.approx(list(none["median"]))
    udp = sweepview.udp_pps_figure(hd, ["last", "pod"])
    assert [ax.get_title() for ax in udp.axes] == ["new UDP flows, target last", "new UDP flows, target pod"]
    assert udp.axes[0].get_ylim()[0] == 0
    ebpf = S[(S.datapath == "ebpf") & (S.metric == "udp_pps") & (S.target == "last")]
    assert list(_line(udp.axes[0], "ebpf").get_ydata()) == pytest.approx(list(ebpf["median"] / 1e3))


def _print_problems(fig) -> list[str]:
    """What would not print well: wider than the text block (it would be scaled down) or text under 7 pt."""
    from matplotlib.text import Text

    out = [f"{fig.get_size_inches()[0]:.2f} in wide"] if fig.get_size_inches()[0] > figstyle.TEXT_WIDTH + 1e-6 else []
    return out + [f"{t.get_text()!r} at {t.get_fontsize()} pt" for t in fig.findobj(Text)
                  if t.get_text() and t.get_fontsize() < figstyle.MIN_POINTS]  # fmt: skip


@needs_sweeps
def test_sweep_figures_print_at_size(df, hd, sweep_plans):
    figs = [sweepview.throughput_ratio_figure(df, sweep_plans), sweepview.throughput_box_figure(df, sweep_plans),
            sweepview.crr_figure(hd, ["last", "pod"]), sweepview.udp_pps_figure(hd, ["last", "pod"]),
            sweepview.transit_figure(hd, ["last", "pod"], {"request": 400.0, "reply": 400.0}),
            sweepview.latency_figure(hd, "last")]  # fmt: skip
    assert [p for f in figs for p in _print_problems(f)] == []


@needs_sweeps
def test_figures_leave_matplotlib_settings_alone(hd, tmp_path, monkeypatch):
    from matplotlib.text import Text

    before = dict(matplotlib.rcParams)
    fig = sweepview.crr_figure(hd, ["last", "pod"])
    assert dict(matplotlib.rcParams) == before  # the style holds inside the figure function only
    texts = [t for t in fig.findobj(Text) if t.get_text()]
    assert {t.get_family()[0] for t in texts} == {"serif"} and min(t.get_fontsize() for t in texts) == 7.5
    monkeypatch.setenv("LABTOOLS_PAPER", str(tmp_path))
    pdf, _ = figures.save_figure(fig, "crr", notebook="test", params={}, data=[paths.processed("reference-s2")])
    assert dict(matplotlib.rcParams) == before
    font_types = set(re.findall(rb"/Subtype /(\w+)", pdf.read_bytes()))
    assert b"CIDFontType2" in font_types and b"Type3" not in font_types  # TrueType: saved in the style too


def test_committed_figures_embed_no_type3_fonts():
    pdffonts = shutil.which("pdffonts")
    assert pdffonts, "pdffonts is missing: `make tex-deps` installs poppler-utils (make test does)"
    pdfs = sorted((ROOT / "paper" / "figures").glob("*.pdf"))
    assert pdfs
    type3 = [p.name for p in pdfs if "Type 3" in subprocess.run([pdffonts, str(p)], capture_output=True,
                                                                  text=True).stdout]  # fmt: skip
    assert type3 == []


# -- labtools.outputs.tables ------------------------------------------------------------------------------------------


def test_tabular_escapes_cells_not_headers():
    out = tables.tabular(["$x$", "b"], [["a_b", "50%"], ["x&y", "→"]], "lr", above=[r"\multicolumn{2}{c}{g} \\"])
    assert out.splitlines() == [r"\begin{tabular}{lr}", r"\toprule", r"\multicolumn{2}{c}{g} \\", r"$x$ & b \\",
                                r"\midrule", r"a\_b & 50\% \\", r"x\&y & $\rightarrow$ \\", r"\bottomrule",
                                r"\end{tabular}"]  # fmt: skip
    assert out.endswith("\n")


def test_one_escaper():
    assert tables.tex_escape is paper.tex_escape
    assert srv6view.tex_escape is paper.tex_escape
    for mod in (tables, verdicts, srv6view):
        src = ast.parse(Path(mod.__file__).read_text())
        assert not [n.name for n in ast.walk(src) if isinstance(n, ast.FunctionDef) and "escape" in n.name]


@needs_sweeps
def test_sweep_summary(table):
    lines = tables.sweep_summary(table).splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrrrrr}"
    header = lines[2].split(" & ")
    assert header[0] == "datapath" and header[2] == "trend" and len(header) == 8
    assert header[1] == r"\begin{tabular}[b]{@{}c@{}}ns per Service \\{} [95\% CI]\end{tabular}"  # two lines: fits
    assert r"p50 at 10,000 \\{} (\textmu{}s)" in header[4] and r"pod \textdiv{} none" in header[6]
    rows = [ln.split(" & ") for ln in lines[4:8]]
    assert [r[0] for r in rows] == ["ebpf", "iptables", "iptables-legacy", "nftables"]
    ipt = table.set_index("datapath").loc["iptables"]
    assert rows[1][1] == f"{ipt.ns_per_service:.1f} [{ipt.ns_ci_lo:.1f}, {ipt.ns_ci_hi:.1f}]" and rows[1][2] == ipt.trend
    assert all(len(r) == 8 and r[-1].endswith(r"\\") for r in rows)
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]


@needs_sweeps
def test_sweep_summary_without_none_or_udp(hd):
    t = verdicts.summary_table(hd[hd.datapath != "none"], ["last", "pod"], ["crr"])
    lines = tables.sweep_summary(t).splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrrrr}"
    assert lines[4].startswith("ebpf & ") and lines[4].endswith(r" & -- & -- \\")
    assert "nan" not in "".join(lines).lower()


# -- notebook 02: labtools.outputs.srv6view ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captures():
    if not HAVE_SRV6:
        pytest.skip("no committed reference SRv6 run")
    files = srv6view.pcaps(RAW)
    return files, srv6view.dissect_captures(files), srv6view.manifest(RAW)


@pytest.fixture(scope="module")
def D(captures) -> pd.DataFrame:
    return captures[1]


@pytest.fixture(scope="module")
def req(D) -> pd.DataFrame:
    return srv6view.header_rows(D, "icmp", 128)


@pytest.fixture(scope="module")
def rep(D) -> pd.DataFrame:
    return srv6view.header_rows(D, "icmp", 129)


@pytest.fixture(scope="module")
def M() -> pd.DataFrame:
    if not HAVE_SRV6:
        pytest.skip("no committed reference SRv6 run")
    return pd.read_csv(ROOT / "data" / "processed" / "reference-srv6-matrix.csv")


@pytest.fixture(scope="module")
def R() -> pd.DataFrame:
    if not HAVE_SRV6:
        pytest.skip("no committed reference SRv6 run")
    return pd.read_csv(ROOT / "data" / "processed" / "reference-srv6-crr.csv")


def test_points_are_the_capture_points():
    from labtools.lab import capture  # tests may import the lab stack; srv6view may not

    assert srv6view.POINTS == capture.POINTS


@needs_srv6
def test_captures_dissected(captures):
    files, D, man = captures
    assert len(files) == 15
    assert srv6view.describe_captures(files, D, man) == (
        "15 pcaps, 270 frames; SRv6 mode end-dt6, datapath nftables, tcpdump tcpdump version 4.99.3 libpcap "
        "version 1.10.3 (with TPACKET_V3)"
    )
    ov = srv6view.capture_overview(D)
    assert ov.loc[("icmp", "worker")].to_dict() == {"frames": 10, "srh": 6, "max_depth": 1}
    assert ov.loc[("tcp-nodeport", "router-cluster")].to_dict() == {"frames": 33, "srh": 16, "max_depth": 2}
    assert ov.loc[("tcp-nodeport", "pod"), "frames"] == 1
    assert len(ov) == 15


@needs_srv6
def test_header_rows(req, rep, D):
    assert list(req.point) == ["client", "router-client", *["router-cluster"] * 3, *["worker"] * 3, "pod"]
    assert list(req.header) == ["ipv6", "ipv6", "ipv6", "srh", "ipv6", "ipv6", "srh", "ipv6", "ipv6"]
    assert list(req.depth) == [0, 0, 0, 0, 1, 0, 0, 1, 0]
    outer = req.iloc[2]
    assert (outer.src, outer.dst, outer.nh, outer.hlim, outer.plen) == ("fc00::1", "fc00::2", 43, 63, 128)
    assert req.iloc[3].segments == "fc00::2" and req.iloc[3].segleft == 0
    assert list(req[req.header == "ipv6"].hlim) == [64, 64, 63, 64, 63, 64, 63]
    assert set(req[req.header == "ipv6"].flow) == {815161}
    assert req[req.header == "srh"].flow.isna().all()
    assert rep.iloc[0].point == "pod" and rep.iloc[-1].point == "client"  # a reply's rows in its path order
    assert rep.iloc[-1].dst == "2001:db8:1234:5679::1" and rep.iloc[-1].hlim == 63
    assert list(srv6view.header_rows(D, "icmp", 128, points=["pod", "client"]).point) == ["pod", "client"]
    assert srv6view.header_rows(D, "tcp-pod", 128).empty


@needs_srv6
def test_first_and_tunnel_leg(req):
    assert srv6view.first(req, "pod").hlim == 63
    assert srv6view.first(req, "worker", depth=1).plen == 64
    assert srv6view.first(req, "worker", "srh").nh == 41
    assert srv6view.first(req, "client", "srh") is None
    assert srv6view.tunnel_leg(req) == ["router-cluster", "worker"]
    assert srv6view.tunnel_leg(req[req.point.isin(["client", "pod"])]) == []


@needs_srv6
def test_compare_with_thesis(req, rep):
    C = srv6view.compare_with_thesis(req, rep)
    assert list(C.columns) == ["field", "thesis", "measured", "same", "why"]
    assert len(C) == 18
    assert list(C[~C.same].field) == ["hop limit at the pod (request)", "hop limit at the client (reply)",
                                      "outer hop limit of the reply at router-cluster",
                                      "outer hop limit of the reply at worker"]  # fmt: skip
    assert srv6view.comparison_lines(C) == COMPARISON
    # the thesis' hop limit at the pod, as if the router had decremented it: that field agrees then
    thesis_like = req.copy()
    thesis_like.loc[thesis_like.point == "pod", "hlim"] = 62
    C2 = srv6view.compare_with_thesis(thesis_like, rep)
    assert C2.set_index("field").loc["hop limit at the pod (request)", "same"]


NEW_RAW = ROOT / "data" / "raw" / "reference-deb61-srv6"


@pytest.mark.skipif(not NEW_RAW.is_dir(), reason="no committed SRv6 run with the Cilium-like attachment")
def test_the_retaken_reference_matches_the_thesis_field_by_field():
    """Captured on Debian 12's kernel with the pod attached as Cilium attaches it: every compared field equals
    the thesis' Figs. 38-42, hop limits 62 at the pod (request) and at the client and outside (reply)."""
    assert srv6view.manifest(NEW_RAW)["provenance"]["cni"] == "cilium"
    D = srv6view.dissect_captures(srv6view.pcaps(NEW_RAW))
    req, rep = srv6view.header_rows(D, "icmp", 128), srv6view.header_rows(D, "icmp", 129)
    C = srv6view.compare_with_thesis(req, rep)
    assert len(C) == 18 and C["same"].all(), C[~C["same"]]
    assert srv6view.first(req, "pod").hlim == 62 and srv6view.first(rep, "client").hlim == 62


@needs_srv6
def test_header_and_comparison_tables(req, rep):
    lines = tables.srv6_headers(req).splitlines()
    assert lines[0] == r"\begin{tabular}{llllrrrrrl}"
    assert lines[2] == r"point & header & src & dst & nh & hlim & plen & flow & segleft & segments \\"
    client = r"client & ipv6 & 2001:db8:1234:5679::1 & 2001:db8:1234:5678:8:2:1:841 & 58 & 64 & 64 & 0xc7039 &  &  \\"
    assert lines[4] == client
    assert lines[7] == r"router-cluster & srh &  &  & 41 &  &  &  & 0 & fc00::2 \\"
    assert len(lines) == 4 + len(req) + 2
    assert "NA" not in "".join(lines) and "nan" not in "".join(lines)
    assert "0x7aa33" in tables.srv6_headers(rep)  # 502323
    C = srv6view.compare_with_thesis(req, rep)
    cmp = tables.thesis_comparison(C).splitlines()
    assert cmp[0] == r"\begin{tabular}{p{6.2cm}llr}"
    assert r"hop limit at the pod (request) & 62 & 63 & no \\" in cmp
    assert (r"outer source $\rightarrow$ destination at worker & fc00::1 $\rightarrow$ fc00::2 & "
            r"fc00::1 $\rightarrow$ fc00::2 & yes \\") in cmp  # fmt: skip
    assert not any("->" in line for line in cmp)


@needs_srv6
def test_packet_walk(D):
    fig = srv6view.packet_walk(D)
    (ax,) = fig.axes
    assert _print_problems(fig) == []
    # IPv6 + ICMPv6 outside the tunnel; IPv6, SRH, IPv6, ICMPv6 in it
    stacks = {p: 4 if p in srv6view.TUNNEL else 2 for p in srv6view.POINTS}
    assert len(ax.patches) == sum(stacks.values())
    texts = [t.get_text() for t in ax.texts]
    assert [t for t in texts if t in srv6view.POINTS] == list(srv6view.POINTS)
    assert texts.count("ICMPv6\necho request") == 5
    assert "SRH\nsegments\n[fc00::2]\nleft 0 · nh 41" in texts
    assert "IPv6\nfc00::1\n→ fc00::2\nhlim 63 · plen 128\nnh 43" in texts
    assert "IPv6\n…:5679::1\n→ …:5678:8:2:1:841\nhlim 63 · plen 64\nnh 58" in texts  # at the pod
    two = srv6view.packet_walk(D, ["client", "worker"])
    assert len(two.axes[0].patches) == 2 + 4
    reply = [t.get_text() for t in srv6view.packet_walk(D, icmp_type=129).axes[0].texts]
    assert reply.count("ICMPv6\necho reply") == 5
    with pytest.raises(ValueError, match="nothing to draw"):
        srv6view.packet_walk(D, scenario="tcp-pod")


@needs_srv6
def test_reachability_grid_and_table(M):
    grid = srv6view.reachability_grid(M)
    assert list(grid.index) == ["none", "end-dt6", "local-sid", "pod-sidecar", "ebpf", "local-sid+tc-encap"]
    assert grid.shape == (6, 6)
    assert grid.loc["ebpf"].to_dict() == {("ebpf", "nodeport"): "yes", ("ebpf", "pod"): "yes",
                                          ("iptables", "nodeport"): "no", ("iptables", "pod"): "no",
                                          ("nftables", "nodeport"): "no", ("nftables", "pod"): "no"}  # fmt: skip
    assert list(srv6view.reachability_grid(M, ["ebpf", "none", "no-such-mode"]).index) == ["ebpf", "none"]
    lines = tables.srv6_matrix(grid).splitlines()
    assert lines[0] == r"\begin{tabular}{lcccccc}"
    assert lines[2] == r" & \multicolumn{2}{c}{ebpf} & \multicolumn{2}{c}{iptables} & \multicolumn{2}{c}{nftables} \\"
    assert lines[3] == r"\cmidrule(lr){2-3}\cmidrule(lr){4-5}\cmidrule(lr){6-7}"
    assert lines[4] == r"mode & nodeport & pod & nodeport & pod & nodeport & pod \\"
    assert r"local-sid+tc-encap & no & yes & yes & yes & yes & yes \\" in lines


@needs_srv6
def test_matrix_lines_and_ways(M):
    ways = srv6view.nodeport_ways(M)
    assert ways.to_dict() == {"ebpf": ["ebpf"], "iptables": ["local-sid+tc-encap"], "nftables": ["local-sid+tc-encap"]}
    lines = srv6view.matrix_lines(M, ["iptables", "nftables", "ebpf", "nothing"])
    assert lines[:4] == ["iptables: NodePort reachable over SRv6 via local-sid+tc-encap",
                         "nftables: NodePort reachable over SRv6 via local-sid+tc-encap",
                         "ebpf: NodePort reachable over SRv6 via ebpf",
                         "nothing: NodePort NOT reachable over SRv6 in any mode measured"]  # fmt: skip
    assert len(lines) == 4 + 18  # then one note per (mode, datapath)
    assert lines[4] == "  none / iptables: plain routed path (no tunnel)"
    assert len(srv6view.matrix_lines(M.drop(columns="notes"), ["ebpf"])) == 1


@needs_srv6
def test_working_cells_are_the_measured_crr_cells(M, R):
    cells = srv6view.working_cells(M)
    assert len(cells) == 20 and cells == sorted(cells)
    assert ("local-sid+tc-encap", "iptables", "nodeport") in cells
    assert ("end-dt6", "iptables", "pod") not in cells
    assert set(cells) == set(R[["mode", "datapath", "target"]].itertuples(index=False, name=None))


@needs_srv6
def test_crr_summary_and_figure(R):
    p50 = srv6view.crr_summary(R)
    assert list(p50.columns) == ["median", "min", "max", "size"]
    assert len(p50) == 20 and (p50["size"] == 3).all()
    assert p50.round(1).loc[("none", "iptables", "pod")].to_dict() == {"median": 93.0, "min": 92.8, "max": 93.8,
                                                                      "size": 3}  # fmt: skip
    fig = srv6view.crr_figure(p50)
    assert _print_problems(fig) == []
    pod, nodeport = fig.axes
    assert [pod.get_title(), nodeport.get_title()] == ["target pod", "target nodeport"]
    assert [t.get_text() for t in pod.get_yticklabels()] == ["iptables", "nftables", "ebpf"]
    modes = [t.get_text() for t in fig.legends[0].get_texts()]
    assert modes[0] == "none" and set(modes) == {m for m, _, _ in p50.index}  # the baseline first
    grey = [p for p in pod.patches if p.get_facecolor()[:3] == pytest.approx((0.6, 0.6, 0.6))]
    assert [g.get_width() for g in grey] == pytest.approx(list(p50.loc["none"].xs("pod", level="target")
                                                               .reindex(["iptables", "nftables", "ebpf"])["median"]))


@needs_srv6
def test_srv6_macros(req, M):
    tex = srv6view.srv6_macros(req, M, "end-dt6", ["iptables", "nftables", "ebpf"])
    assert tex.splitlines() == [
        r"\newcommand{\SrvCaptureMode}{enddt6}",
        r"\newcommand{\SrvPodHlim}{63}",
        r"\newcommand{\SrvOuterPlen}{128}",
        r"\newcommand{\SrvCells}{18}",
        r"\newcommand{\SrvNodePortWays}{3}",
        r"\newcommand{\SrvWayIptables}{local-sid+tc-encap}",
        r"\newcommand{\SrvWayNftables}{local-sid+tc-encap}",
        r"\newcommand{\SrvWayEbpf}{ebpf}",
        r"\newcommand{\SrvCrrNote}{Where a path works, Figure~\ref{fig:srv6-crr} gives its connection-setup latency.}",
    ]
    assert r"\SrvWayIptablesLegacy}{no mode measured}" in srv6view.srv6_macros(req, M, "end-dt6", ["iptables-legacy"])
    unmeasured = srv6view.srv6_macros(req, M, "end-dt6", ["ebpf"], crr_measured=False).splitlines()[-1]
    assert "not measured" in unmeasured and "fig:srv6-crr" not in unmeasured  # no figure of another run's timings


# -- the outputs layer and the notebooks ----------------------------------------------------------------------------


def test_outputs_import_no_lab_stack():
    code = ("import sys, labtools.outputs.verdicts, labtools.outputs.tables, labtools.outputs.srv6view; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paramiko', 'kubernetes') or "
            "m.startswith(('labtools.lab', 'labtools.hosts', 'labtools.datapaths', 'labtools.rigs', "
            "'labtools.experiments'))))")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert res.stdout.strip() == "[]"


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _tree(cell) -> ast.Module:
    return ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_thin(path):
    for n, cell in enumerate(_code_cells(path)):
        lines = len(cell.source.splitlines())
        assert lines <= MAX_CELL_LINES, f"{path.name}: code cell {n} has {lines} lines (at most {MAX_CELL_LINES})"
        defs = [type(x).__name__ for x in ast.walk(_tree(cell))
                if isinstance(x, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]  # fmt: skip
        assert not defs, f"{path.name}: code cell {n} defines {defs}: move it into the library"


LAB_STACK = ("labtools.lab", "labtools.experiments", "labtools.datapaths", "labtools.hosts", "labtools.rigs")


def _lab_imports(node: ast.AST, guarded: bool = False):
    """(module, guarded by `if measure`) for every import of the lab stack under `node`."""
    if isinstance(node, ast.If) and "measure" in ast.unparse(node.test):
        guarded = True
    if isinstance(node, ast.Import | ast.ImportFrom):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module == "labtools":
            names = [f"labtools.{a.name}" for a in node.names]
        yield from ((m, guarded) for m in names if m.startswith(LAB_STACK))
    for child in ast.iter_child_nodes(node):
        yield from _lab_imports(child, guarded)


@pytest.mark.parametrize("name", ["01-scale-sweep", "02-srv6-captures", "03-claims", "04-programming"])
def test_data_notebooks_import_the_lab_only_to_measure(name):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    imports = [i for cell in _code_cells(path) for i in _lab_imports(_tree(cell))]
    assert imports, "the measuring cells import the lab stack"
    assert all(guarded for _, guarded in imports), imports
    text = "\n".join(c.source for c in _code_cells(path))
    assert "sweep.DATA" not in text and "paths." in text


@pytest.mark.parametrize("name", ["01-scale-sweep", "02-srv6-captures"])
def test_run_functions_print_no_progress_into_notebooks(name):
    runs = []
    for cell in _code_cells(ROOT / "notebooks" / f"{name}.ipynb"):
        for node in ast.walk(_tree(cell)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("sweep.run", "matrix.run", "matrix.crr"):
                runs.append(node)
    assert runs
    for call in runs:
        kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert kw.get("progress") == "False", ast.unparse(call)


def test_srv6_notebook_measures_through_the_experiments():
    text = "\n".join(c.source for c in _code_cells(ROOT / "notebooks" / "02-srv6-captures.ipynb"))
    calls = ("captures.run(", "matrix.run(", "matrix.crr(", "prereqs.kernel_has_seg6_lwtunnel()",
             "prereqs.SEG6_MISSING", 'paths.processed(f"{RUN}-matrix")', 'paths.processed(f"{RUN}-crr")')  # fmt: skip
    for call in calls:
        assert call in text, call
    assert paths.processed("reference-srv6-matrix").name == "reference-srv6-matrix.csv"


def test_nan_is_nan():  # the helpers' NaN test, used for a cluster's missing `none`
    assert verdicts._nan(float("nan")) and not verdicts._nan(1.0) and not verdicts._nan(math.inf)
