"""Notebook 01's figures: the thesis' throughput figures, connection setup and new-flow rate against N, the
worker's transit time, and where a connection's setup time goes.

They draw the tidy tables of `labtools.outputs.analysis`; colours and datapath order are `verdicts`'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, LogLocator, NullFormatter

from labtools.model.plan import Plan
from labtools.outputs import analysis, figstyle
from labtools.outputs.verdicts import PALETTE, STYLE, order, scenario_name, scenario_target, throughput_plans

WIDE = figstyle.TEXT_WIDTH


def _xaxis(ax, counts: Sequence[int]):
    """Where each N goes on the x axis: at its value, or, when the Ns are few and uneven (the quick profile's
    1, 1,000, 3,000), at evenly spaced positions labelled with N, so that small N are not squeezed together."""
    counts = sorted(set(int(c) for c in counts))
    steps = np.diff(counts)
    if len(counts) <= 4 and len(steps) and steps.max() > 2 * steps.min():
        pos = {n: i for i, n in enumerate(counts)}
        ax.set_xticks(range(len(counts)), [f"{n:,}" for n in counts])
        ax.set_xlim(-0.3, len(counts) - 0.7)
        return lambda ns: [pos[int(n)] for n in ns]
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return lambda ns: list(ns)


def _errorbar(ax, s: pd.DataFrame, x, scale: float = 1.0, **kw) -> None:
    """Medians with the interquartile range as the bar."""
    below, above = (s["median"] - s["q1"]) / scale, (s["q3"] - s["median"]) / scale
    ax.errorbar(x(s["services"]), s["median"] / scale, yerr=[below, above], **kw)


@figstyle.styled
def throughput_ratio_figure(df: pd.DataFrame, plans: Sequence[Plan]) -> Figure:
    """Thesis Figs. 33 and 36: eBPF / iptables (and / iptables-legacy) throughput per N, one panel per
    throughput sweep; each point the median over repeats of the ratio within one repeat, the bar the IQR."""
    thr = throughput_plans(plans)
    fig, axes = plt.subplots(1, len(thr), figsize=(WIDE, 2.6), squeeze=False)
    for ax, plan in zip(axes[0], thr, strict=True):
        sub = df[df["run_id"] == plan.run_id]
        x = _xaxis(ax, plan.counts)
        for den in [d for d in ("iptables", "iptables-legacy") if d in plan.datapaths]:
            r = analysis.paired_ratio(sub, "throughput", scenario_target(plan), "ebpf", den)
            _errorbar(ax, r, x, ms=3, capsize=2, label=f"ebpf / {den}", **STYLE[den])
        ax.axhline(1, color="0.6", lw=0.8)
        ax.set(title=f"{scenario_name(plan)}: target {scenario_target(plan)}", xlabel="Services (N)")
    axes[0, 0].set_ylabel("throughput ratio (median, IQR)")
    axes[0, 0].legend(frameon=False)
    fig.tight_layout()
    return fig


@figstyle.styled
def throughput_box_figure(df: pd.DataFrame, plans: Sequence[Plan]) -> Figure:
    """Thesis Figs. 34/35 and 38/39: box plots of throughput over repeats per N and datapath, per sweep; the
    axis starts at 0, so that a few per cent look like a few per cent."""
    thr = throughput_plans(plans)
    hue_order = [d for d in order(df) if d != "none"]
    fig, axes = plt.subplots(len(thr), 1, figsize=(WIDE, 2.3 * len(thr) + 0.4), squeeze=False)
    for ax, plan in zip(axes[:, 0], thr, strict=True):
        sub = df[(df["run_id"] == plan.run_id) & (df["metric"] == "throughput") & (df["datapath"] != "none")]
        sns.boxplot(data=sub, x="services", y="value", hue="datapath", hue_order=hue_order, palette=PALETTE, ax=ax,
                    fliersize=1.5, linewidth=0.6, legend=False)  # fmt: skip
        ax.set_xticks(ax.get_xticks(), [f"{int(t.get_text()):,}" for t in ax.get_xticklabels()])
        ax.set_ylim(bottom=0)
        ax.set(title=f"{scenario_name(plan)}: iperf3 TCP to target {scenario_target(plan)}", xlabel="Services (N)",
               ylabel="Gbit/s")  # fmt: skip
    _datapath_legend(fig, hue_order, markers=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _series(S: pd.DataFrame, d: str, metric: str, target: str) -> pd.DataFrame:
    """`none` is measured at the pod only: its series is the baseline for every target."""
    return S[(S["datapath"] == d) & (S["metric"] == metric) & (S["target"] == ("pod" if d == "none" else target))]


@figstyle.styled
def crr_figure(hd: pd.DataFrame, crr_targets: Sequence[str]) -> Figure:
    """Connection-setup latency (p50 top, p99 bottom, log scale) versus N per datapath, one column per target,
    with `none` as the baseline; median and IQR over repeats."""
    S = analysis.summary(hd)
    fig, axes = plt.subplots(2, len(crr_targets), figsize=(WIDE, 4.6), squeeze=False, sharex=True)
    for col, target in enumerate(crr_targets):
        for row, metric in enumerate(("crr_p50", "crr_p99")):
            ax = axes[row, col]
            x = _xaxis(ax, hd["services"].unique())
            for d in order(hd):
                _errorbar(ax, _series(S, d, metric, target), x, ms=2.5, capsize=1.5, label=d, **STYLE[d])
            _log_y(ax)
            ax.set_title(f"{metric.replace('crr_', '')} connection setup, target {target}")
            if col == 0:
                ax.set_ylabel("µs")
            if row == 1:
                ax.set_xlabel("Services (N)")
    _datapath_legend(fig, order(hd))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


@figstyle.styled
def udp_pps_figure(hd: pd.DataFrame, udp_targets: Sequence[str]) -> Figure:
    """Packets per second of new UDP flows (thousands) versus N per datapath, one panel per target; from 0."""
    S = analysis.summary(hd)
    fig, axes = plt.subplots(1, len(udp_targets), figsize=(WIDE, 2.6), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], udp_targets, strict=True):
        x = _xaxis(ax, hd["services"].unique())
        for d in order(hd):
            _errorbar(ax, _series(S, d, "udp_pps", target), x, scale=1e3, ms=2.5, capsize=1.5, label=d,
                      **STYLE[d])  # fmt: skip
        ax.set(title=f"new UDP flows, target {target}", xlabel="Services (N)")
        ax.set_ylim(bottom=0)
    axes[0, 0].set_ylabel("thousand packets/s")
    _datapath_legend(fig, order(hd))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _band(ax, s: pd.DataFrame, x, scale: float, **kw) -> None:
    """Medians as a line with markers, their order-statistic intervals (`analysis.median_interval`) as a band."""
    ax.plot(x(s["services"]), s["median"] / scale, ms=2.5, **{"marker": "o", **kw})
    ax.fill_between(x(s["services"]), s["ci_lo"] / scale, s["ci_hi"] / scale, alpha=0.18, color=kw.get("color"), lw=0)


def _log_y(ax) -> None:
    """A log y axis labelled in plain numbers (1, 2, 5, 10, ...), without minor labels."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _datapath_legend(fig, datapaths: Sequence[str], extra: Sequence[Line2D | Patch] = (),
                     markers: bool = True) -> None:  # fmt: skip
    """One legend for all panels, below them: a colour per datapath (and `extra` entries)."""
    handles = [Line2D([], [], color=STYLE[d]["color"], marker=STYLE[d]["marker"] if markers else None,
                      ls=STYLE[d]["ls"] if markers else "-", ms=3, lw=1.5 if markers else 6, label=d)
               for d in datapaths]  # fmt: skip
    fig.legend(handles=[*handles, *extra], loc="lower center", ncol=len(handles) + len(extra), frameon=False,
               bbox_to_anchor=(0.5, 0), handlelength=1.6, columnspacing=1.2)  # fmt: skip


@figstyle.styled
def transit_figure(hd: pd.DataFrame, targets: Sequence[str], probe_ns: Mapping[str, float] | None = None) -> Figure:
    """The worker's own transit time (p50, µs, log scale) versus N per datapath: the request (uplink in ->
    pod veth out) on top, the reply below, one column per target; medians with their order-statistic intervals
    (bands) over repeats, `none` (at the pod) as the baseline in every column. `probe_ns`: the probe
    programs' own run time per direction (`analysis.probe_cost`), drawn as a dotted line."""
    fig, axes = plt.subplots(2, len(targets), figsize=(WIDE, 4.8), squeeze=False, sharex=True)
    for col, target in enumerate(targets):
        for row, direction in enumerate(("request", "reply")):
            ax = axes[row, col]
            x = _xaxis(ax, hd["services"].unique())
            for d in order(hd):
                _band(ax, analysis.per_point(hd, f"transit_{direction}_p50", d, target), x, 1e3, label=d,
                      **STYLE[d])  # fmt: skip
            if probe_ns and direction in probe_ns:
                ax.axhline(probe_ns[direction] / 1e3, color="0.3", ls=":", lw=1)
            _log_y(ax)
            ax.set_title(f"{direction}, target {target}")
            if col == 0:
                ax.set_ylabel("transit p50 (µs)")
            if row == 1:
                ax.set_xlabel("Services (N)")
    probe = [Line2D([], [], color="0.3", ls=":", label="probe programs' own run time")] if probe_ns else []
    _datapath_legend(fig, order(hd), probe)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


@figstyle.styled
def latency_figure(hd: pd.DataFrame, target: str) -> Figure:
    """Left: crr (solid) and handshake (dashed) p50 versus N per datapath at `target`, with interval bands;
    `none`'s crr, the harness floor, as a grey band. Right: where a crr transaction's p50 goes at the
    largest N (`analysis.decomposition`), as shares: the worker's transit, the stacks and wires, the
    harness; the crr p50 itself at the end of each bar."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(WIDE, 3.0), gridspec_kw={"width_ratios": [1.15, 1]})
    x = _xaxis(ax, hd["services"].unique())
    for d in order(hd):
        for metric, ls in (("crr_p50", "-"), ("handshake_p50", "--")):
            s = analysis.per_point(hd, metric, d, target)
            if d == "none" and metric == "crr_p50":
                ax.fill_between(x(s["services"]), s["ci_lo"], s["ci_hi"], color="0.85", lw=0)
            _band(ax, s, x, 1.0, ls=ls, color=PALETTE[d], marker=STYLE[d]["marker"],
                  label=f"{d} {metric.split('_')[0]}")  # (line style: crr or handshake)
    _log_y(ax)
    ax.set(xlabel="Services (N)", ylabel="p50 (µs)")
    ax.set_title(f"crr (solid), handshake (dashed); target {target}")
    nmax = int(hd["services"].max())
    dec = analysis.decomposition(hd, target, nmax)
    dec = dec.set_index("datapath").loc[[d for d in order(hd) if d in set(dec["datapath"])]]
    parts = dec[list(analysis.PARTS)].clip(lower=0)
    shares = parts.div(parts.sum(axis=1), axis=0)
    left = np.zeros(len(dec))
    for part, colour in zip(analysis.PARTS, ("0.15", "0.5", "0.8"), strict=True):
        bx.barh(dec.index, shares[part], left=left, color=colour, label=part)
        left += shares[part].to_numpy()
    for y, total in enumerate(dec["crr"]):
        bx.text(1.02, y, f"{total:,.0f} µs", va="center")
    bx.set_xlim(0, 1.32)
    bx.set_xticks([0, 0.25, 0.5, 0.75, 1])
    bx.invert_yaxis()
    bx.set_xlabel("share of crr p50 (medians over repeats)")
    bx.set_title(f"crr p50 at N = {nmax:,}, by part")
    bx.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=3, handlelength=1.2)
    floor_level = analysis.median_level(int(hd[hd["datapath"] == "none"].groupby("services")["repeat"].nunique().min()))
    floor = Patch(color="0.85", label=f"harness floor (none crr, {analysis.interval_name(floor_level)})")
    _datapath_legend(fig, order(hd), [floor])
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


@figstyle.styled
def resolution_figure(rd: pd.DataFrame, services: int, target: str) -> Figure:
    """Each datapath's transit p50 minus none's at `services`, one point per block (paired within
    it) against the time the block's sample was taken, the request left and the reply right; a line at the
    mean and a band for its t 95% interval (`analysis.resolution`). A drift would show as a trend in time."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDE, 3.0), sharex=True)
    at = rd[rd["services"] == services]
    t0 = rd["t_start_s"].min()
    for ax, direction in zip(axes, ("request", "reply"), strict=True):
        metric = f"transit_{direction}_p50"
        for d in order(at):
            if d == "none":
                continue
            ex = analysis.excess(at, metric, d, target)
            when = at[(at["metric"] == metric) & (at["datapath"] == d) & (at["target"] == target)]
            ex = ex.merge(when[["repeat", "t_start_s"]], on="repeat")
            st = STYLE[d]
            ax.plot((ex["t_start_s"] - t0) / 60, ex["value"], ls="none", marker=st["marker"], color=st["color"], ms=3)
            r = analysis.resolution(rd, d, services, metric, target)
            ax.axhline(r.excess.estimate, color=st["color"], ls=st["ls"], lw=1)
            ax.axhspan(r.excess.lo, r.excess.hi, color=st["color"], alpha=0.18, lw=0)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_title(f"{direction}, N = {services:,}, target {target}")
        ax.set_xlabel("minutes into the run")
    axes[0].set_ylabel("transit p50 minus none's (ns)")
    _datapath_legend(fig, [d for d in order(at) if d != "none"])
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
