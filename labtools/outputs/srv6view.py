"""What notebook 02's SRv6 runs show: the captures dissected, the headers at each capture point, the
field-by-field comparison with the thesis, the packet walk, the reachability matrix and the cost of each
working way, and the numbers the text quotes.

Everything here reads committed files (``data/raw/<run>-srv6/``, ``data/processed/<run>-srv6-matrix.csv``
and ``-srv6-crr.csv``) through `labtools.outputs.dissect` and pandas; the measuring side is
`labtools.experiments.captures` and `labtools.experiments.matrix`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch

from labtools.model import datapaths as registry
from labtools.outputs import dissect, figstyle, figures
from labtools.outputs.paper import tex_escape
from labtools.outputs.verdicts import macro_name

# The capture points along the path, client to pod (as `labtools.lab.capture.POINTS`, which this layer may not
# import; tests/test_outputs.py checks they agree).
POINTS = ("client", "router-client", "router-cluster", "worker", "pod")
TUNNEL = ("router-cluster", "worker")  # the points between the SRv6 ends, where the packet is encapsulated
ECHO_REQUEST, ECHO_REPLY = 128, 129  # ICMPv6 types

# -- the captures ------------------------------------------------------------------------------------------------


def manifest(raw: Path) -> dict:
    """A capture run's ``manifest.json``."""
    return json.loads((Path(raw) / "manifest.json").read_text())


def pcaps(raw: Path) -> list[Path]:
    """A capture run's pcaps, ``<scenario>/<point>.pcap``, sorted."""
    return sorted(Path(raw).glob("*/*.pcap"))


def dissect_captures(files: Iterable[Path]) -> pd.DataFrame:
    """`dissect.dissect` of every pcap, with its scenario (the pcap's folder) as a column."""
    return pd.concat([dissect.dissect(p).assign(scenario=Path(p).parent.name) for p in files], ignore_index=True)


def describe_captures(files: Sequence[Path], D: pd.DataFrame, man: dict) -> str:
    """One line: pcaps, frames, and the SRv6 mode, datapath and tcpdump of the run."""
    frames = D["frame"].groupby([D["scenario"], D["pcap"]]).nunique().sum()
    return (f"{len(files)} pcaps, {frames} frames; SRv6 mode {man['srv6_mode']}, datapath {man.get('datapath')}, "
            f"tcpdump {man['tcpdump'].splitlines()[0]}")  # fmt: skip


def capture_overview(D: pd.DataFrame) -> pd.DataFrame:
    """Per scenario and point: frames, SRH headers and the deepest IPv6 nesting."""
    return D.groupby(["scenario", "point"]).agg(frames=("frame", "nunique"),
                                                srh=("kind", lambda k: int((k == "srh").sum())),
                                                max_depth=("depth", "max"))  # fmt: skip


def header_rows(D: pd.DataFrame, scenario: str, icmp_type: int, points: Sequence[str] | None = None) -> pd.DataFrame:
    """The first frame at each point whose innermost ICMPv6 type is `icmp_type` (not one quoted in an error),
    one row per IPv6 / SRH header layer, points in path order: client to pod for a request, pod to client
    for a reply (`points` overrides)."""
    points = points or (POINTS[::-1] if icmp_type == ECHO_REPLY else POINTS)
    sub = D[D["scenario"] == scenario]
    out = []
    for point in points:
        p = sub[sub["point"] == point]
        frames = p[(p["kind"] == "l4") & (p["icmp_type"] == icmp_type) & ~p["quoted"].astype(bool)]["frame"]
        if frames.empty:
            continue
        f = p[p["frame"] == frames.iloc[0]]
        for r in f[f["kind"].isin(["ipv6", "srh"])].itertuples():
            out.append({"point": point, "depth": r.depth, "header": r.kind, "src": r.src, "dst": r.dst,
                        "nh": r.nh, "hlim": r.hlim, "plen": r.plen, "flow": r.fl, "segleft": r.segleft,
                        "segments": r.segments})  # fmt: skip
    return pd.DataFrame(out)


# -- against the thesis --------------------------------------------------------------------------------------------


def first(rows: pd.DataFrame, point: str, header: str = "ipv6", depth: int = 0) -> pd.Series | None:
    """The first `header` at `depth` of `point` in `header_rows`' table, or None."""
    r = rows[(rows["point"] == point) & (rows["header"] == header) & (rows["depth"] == depth)]
    return r.iloc[0] if len(r) else None


# The committed SRv6 reference: captures and matrix on Debian 12's kernel in a VM, the pod attached as Cilium
# attaches it (data/README.md); `reference-srv6` beside it is the older run, the pod attached plainly.
REFERENCE_RUN = "reference-deb61-srv6"


def tunnel_leg(rows: pd.DataFrame) -> list[str]:
    """The capture points inside the tunnel that `header_rows`' table has."""
    return [p for p in TUNNEL if first(rows, p) is not None]


HLIM_WHY = (
    "captured with the pod attached plainly: the kernel alone ages the packet (the encapsulating router does "
    "not age the inner header, End.DT6 forwards once: 64 -> 63); Cilium's bpf_host/bpf_lxc age it once more on "
    "the worker, which `lab up --cni cilium` (the default since) models: 62; re-capture where the kernel has "
    "seg6 routes, or on Debian's in a VM (`labtools vm run`)"
)


def compare_with_thesis(req: pd.DataFrame, rep: pd.DataFrame) -> pd.DataFrame:
    """The thesis' values (Figs. 38-42) next to the measured ones, from the echo request's and reply's
    `header_rows`: one row per field (``field``, ``thesis``, ``measured``, ``same``, ``why`` it differs)."""
    checks = []

    def check(what: str, thesis: object, got: object, why: str = "") -> None:
        checks.append({"field": what, "thesis": thesis, "measured": got, "same": str(thesis) == str(got), "why": why})

    check("hop limit at the client (request)", 64, first(req, "client").hlim)
    check("hop limit at the pod (request)", 62, first(req, "pod").hlim, HLIM_WHY)
    check("hop limit at the client (reply)", 62, first(rep, "client").hlim,
          "the same, mirrored: Cilium ages the reply on the worker before it is encapsulated")
    for p in tunnel_leg(req):
        outer, inner = first(req, p), first(req, p, depth=1)
        check(f"outer next header at {p}", 43, outer.nh)
        check(f"outer payload length at {p}", 128, outer.plen)
        check(f"inner payload length at {p}", 64, inner.plen)
        check(f"flow label copied to the outer header at {p}", True, bool(outer.flow == inner.flow))
        check(f"SRH segments at {p}", "fc00::2", first(req, p, "srh").segments)
        check(f"outer source -> destination at {p}", "fc00::1 -> fc00::2", f"{outer.src} -> {outer.dst}")
    for p in tunnel_leg(rep):  # the reply's outer header copies the inner hop limit the pod's CNI lowered
        check(f"outer hop limit of the reply at {p}", 62, first(rep, p).hlim, HLIM_WHY)
    plain = req[req["point"].isin(["client", "pod"])]
    check("plain IPv6 at the client and the pod", True, bool(plain["depth"].max() == 0))
    return pd.DataFrame(checks)


def comparison_lines(checks: pd.DataFrame) -> list[str]:
    """One sentence per compared field; a difference says why, where known."""
    return [f"{'same' if r.same else 'DIFFERENT'}: {r.field}: thesis {r.thesis}, measured {r.measured}"
            + (f" — {r.why}" if not r.same and r.why else "") for r in checks.itertuples()]  # fmt: skip


# -- the packet walk ---------------------------------------------------------------------------------------------

COLORS = {"ipv6": "#9ecae1", "srh": "#fdae6b", "l4": "#a1d99b"}


def _short(addr: object) -> str:  # the common documentation prefix makes the boxes too wide to read in print
    return str(addr).replace("2001:db8:1234:", "…:")


def _label(r) -> str:
    if r.kind == "ipv6":
        return f"IPv6\n{_short(r.src)}\n→ {_short(r.dst)}\nhlim {r.hlim} · plen {r.plen}\nnh {r.nh}"
    if r.kind == "srh":
        return f"SRH\nsegments\n[{r.segments}]\nleft {r.segleft} · nh {r.nh}"
    if r.kind == "l4":  # two lines: five boxes share the text width
        return {ECHO_REQUEST: "ICMPv6\necho request", ECHO_REPLY: "ICMPv6\necho reply"}.get(r.icmp_type, str(r.proto))
    return r.kind


@figstyle.styled
def packet_walk(D: pd.DataFrame, points: Sequence[str] | None = None, scenario: str = "icmp",
                icmp_type: int = ECHO_REQUEST) -> Figure:  # fmt: skip
    """The header stack (outermost on top) of the first echo request at each capture point, side by side.

    `points`: those to draw, in order (default: every point of `POINTS` that captured such a packet)."""
    runs = D[D["scenario"] == scenario]
    sub = runs[(runs["kind"] == "l4") & (runs["icmp_type"] == icmp_type) & ~runs["quoted"].astype(bool)]
    points = [p for p in (points or POINTS) if p in set(sub["point"])]
    if not points:
        raise ValueError(f"no ICMPv6 type {icmp_type} in scenario {scenario!r}: nothing to draw")
    stacks = {}
    for point in points:
        at = runs[runs["point"] == point]
        stacks[point] = at[at["frame"] == sub[sub["point"] == point]["frame"].iloc[0]]
    H, W = 1.5, 2.3  # box pitch
    tallest = max(len(v) for v in stacks.values())
    fig, ax = plt.subplots(figsize=(figstyle.TEXT_WIDTH, 0.6 + 0.8 * tallest))
    for x, point in enumerate(points):
        layers = stacks[point]
        for y, r in enumerate(layers.itertuples()):
            bottom = (len(layers) - y) * H
            ax.add_patch(FancyBboxPatch((x * W, bottom), W - 0.15, H - 0.12, boxstyle="round,pad=0.02",
                                        fc=COLORS.get(r.kind, "0.9"), ec="0.3"))  # fmt: skip
            ax.text(x * W + (W - 0.15) / 2, bottom + (H - 0.12) / 2, _label(r), ha="center", va="center",
                    fontsize=figstyle.MIN_POINTS, fontstretch="condensed")  # fmt: skip
        ax.text(x * W + (W - 0.15) / 2, 0.6 * H, point, ha="center", va="center", fontsize=8, weight="bold")
    ax.set_xlim(-0.1, len(points) * W)
    ax.set_ylim(0.3 * H, (tallest + 1.1) * H)
    ax.axis("off")
    return fig


# -- services over SRv6: the matrix and what each way costs ---------------------------------------------------


def reachability_grid(M: pd.DataFrame, modes: Sequence[str] | None = None) -> pd.DataFrame:
    """The matrix as yes/no: one row per ingress mode (in `modes` order, default the table's), a column per
    (datapath, target)."""
    modes = list(modes) if modes else list(dict.fromkeys(M["mode"]))
    present = set(M["mode"])
    return (M.assign(ok=M["reachable"].map({True: "yes", False: "no"}))
            .pivot_table(index="mode", columns=["datapath", "target"], values="ok", aggfunc="first")
            .reindex([m for m in modes if m in present]))  # fmt: skip


def nodeport_ways(M: pd.DataFrame) -> pd.Series:
    """Per datapath, the ingress modes (not `none`) through which its NodePort was reachable."""
    ok = M[M["reachable"] & (M["mode"] != "none") & (M["target"] == "nodeport")]
    return ok.groupby("datapath")["mode"].apply(list)


def matrix_lines(M: pd.DataFrame, datapaths: Sequence[str]) -> list[str]:
    """Per datapath: through which modes its NodePort is reachable over SRv6; then each cell's kernel path."""
    works = nodeport_ways(M)
    lines = [f"{dp}: NodePort reachable over SRv6 via {', '.join(works[dp])}" if works.get(dp)
             else f"{dp}: NodePort NOT reachable over SRv6 in any mode measured" for dp in datapaths]  # fmt: skip
    if "notes" in M:
        lines += [f"  {r.mode} / {r.datapath}: {r.notes}"
                  for r in M.dropna(subset=["notes"]).drop_duplicates(["mode", "datapath"]).itertuples()]  # fmt: skip
    return lines


def working_cells(M: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (mode, datapath, target) cells that were reachable: where connection setup can be measured."""
    ok = M[M["reachable"]]
    return sorted({(r.mode, r.datapath, r.target) for r in ok.itertuples()})


def crr_summary(R: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and count of crr_p50 over the repeats, per (mode, datapath, target)."""
    p50 = R[R["metric"] == "crr_p50"]
    return p50.groupby(["mode", "datapath", "target"])["value"].agg(["median", "min", "max", "size"])


MODE_COLOURS = ["0.6", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


@figstyle.styled
def crr_figure(p50: pd.DataFrame) -> Figure:
    """`crr_summary` as grouped horizontal bars (median, min-max over repeats): a panel per target, a group per
    datapath, a bar per ingress mode with the plain path (`none`, grey) first, and a legend of the modes."""
    g = p50.reset_index()
    modes = ["none", *sorted(m for m in g["mode"].unique() if m != "none")]
    targets = [t for t in ("pod", "nodeport") if t in set(g["target"])] + sorted(set(g["target"]) - {"pod", "nodeport"})
    dps = registry.ordered(g["datapath"])
    colours = dict(zip(modes, MODE_COLOURS, strict=False))
    fig, axes = plt.subplots(1, len(targets), figsize=(figstyle.TEXT_WIDTH, 0.9 + 0.16 * len(modes) * len(dps)),
                             sharex=True, squeeze=False)  # fmt: skip
    h = 0.8 / len(modes)
    for ax, target in zip(axes[0], targets, strict=True):
        for i, mode in enumerate(modes):
            sub = g[(g["target"] == target) & (g["mode"] == mode)].set_index("datapath").reindex(dps)
            y = [k + i * h for k in range(len(dps))]
            ax.barh(y, sub["median"], height=h * 0.9, color=colours[mode], label=mode,
                    xerr=[sub["median"] - sub["min"], sub["max"] - sub["median"]], capsize=1.5,
                    error_kw={"lw": 0.6})  # fmt: skip
        ax.set_yticks([k + (len(modes) - 1) * h / 2 for k in range(len(dps))], dps)
        ax.invert_yaxis()
        ax.set(title=f"target {target}", xlabel="connection setup p50 (µs)")
    handles = [Patch(color=colours[m], label=m) for m in modes]
    fig.legend(handles=handles, loc="lower center", ncol=len(modes), frameon=False, title="ingress mode",
               handlelength=1.2)  # fmt: skip
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig


CRR_NOT_MEASURED = ("not measured: this run's tunnel ran in a VM on an emulated CPU (QEMU's TCG), whose timings "
                    "are not performance; connection setup through the tunnel is measured only where the host's own "
                    "kernel has seg6 routes")  # fmt: skip


def srv6_macros(req: pd.DataFrame, M: pd.DataFrame, capture_mode: str, datapaths: Sequence[str],
                crr_measured: bool = True) -> str:  # fmt: skip
    """The numbers the text quotes (``srv6-macros.tex``): capture mode, the pod's hop limit, the outer payload
    length, the cells of the matrix, how many ways reach a NodePort, and which, per datapath; whether connection
    setup through the tunnel was measured (``\\SrvCrrNote``)."""
    works = nodeport_ways(M)
    leg = tunnel_leg(req)
    tex = [figures.macro("SrvCaptureMode", capture_mode.replace("-", "")),
           figures.macro("SrvPodHlim", first(req, "pod").hlim),
           figures.macro("SrvOuterPlen", first(req, leg[0]).plen if leg else "--"),
           figures.macro("SrvCells", len(M.groupby(["mode", "datapath"]))),
           figures.macro("SrvNodePortWays", sum(len(v) for v in works.values))]  # fmt: skip
    tex += [figures.macro(f"SrvWay{macro_name(dp)}", tex_escape(", ".join(works.get(dp, [])) or "no mode measured"))
            for dp in datapaths]  # fmt: skip
    note = ("Where a path works, Figure~\\ref{fig:srv6-crr} gives its connection-setup latency." if crr_measured else
            f"Its connection-setup latency was {tex_escape(CRR_NOT_MEASURED)}.")  # fmt: skip
    tex.append(figures.macro("SrvCrrNote", note))
    return "".join(tex)
