"""Notebook 01's figures: the thesis' throughput figures, connection setup and new-flow rate against N, the
worker's transit time, and where a connection's setup time goes.

They draw the tidy tables of `labtools.analysis`; colours and datapath order are `verdicts`'.
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
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from labtools import analysis
from labtools.model.plan import Plan
from labtools.verdicts import PALETTE, order, scenario_target, throughput_plans


def _errorbar(ax, s: pd.DataFrame, scale: float = 1.0, **kw) -> None:
    """Medians with the interquartile range as the bar."""
    below, above = (s["median"] - s["q1"]) / scale, (s["q3"] - s["median"]) / scale
    ax.errorbar(s["services"], s["median"] / scale, yerr=[below, above], **kw)


def throughput_ratio_figure(df: pd.DataFrame, plans: Sequence[Plan]) -> Figure:
    """Thesis Figs. 33 and 36: eBPF / iptables (and / iptables-legacy) throughput per N, one panel per
    throughput sweep; each point the median over repeats of the ratio within one repeat, the bar the IQR."""
    thr = throughput_plans(plans)
    fig, axes = plt.subplots(1, len(thr), figsize=(5.2 * len(thr), 3.4), squeeze=False)
    for ax, plan in zip(axes[0], thr, strict=True):
        sub = df[df["run_id"] == plan.run_id]
        for den in [d for d in ("iptables", "iptables-legacy") if d in plan.datapaths]:
            r = analysis.paired_ratio(sub, "throughput", scenario_target(plan), "ebpf", den)
            _errorbar(ax, r, marker="o", capsize=3, label=f"ebpf / {den}", color=PALETTE[den])
        ax.axhline(1, color="0.6", lw=0.8)
        ax.set(title=f"{plan.run_id}: target {scenario_target(plan)}", xlabel="Services (N)",
               ylabel="throughput ratio (median, IQR)")  # fmt: skip
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def throughput_box_figure(df: pd.DataFrame, plans: Sequence[Plan]) -> Figure:
    """Thesis Figs. 34/35 and 38/39: box plots of throughput over repeats per N and datapath, per sweep."""
    thr = throughput_plans(plans)
    hue_order = [d for d in order(df) if d != "none"]
    fig, axes = plt.subplots(len(thr), 1, figsize=(10, 3.2 * len(thr)), squeeze=False)
    for ax, plan in zip(axes[:, 0], thr, strict=True):
        sub = df[(df["run_id"] == plan.run_id) & (df["metric"] == "throughput") & (df["datapath"] != "none")]
        sns.boxplot(data=sub, x="services", y="value", hue="datapath", hue_order=hue_order, palette=PALETTE, ax=ax,
                    fliersize=2, linewidth=0.8)  # fmt: skip
        ax.set(title=f"{plan.run_id}: iperf3 TCP to target {scenario_target(plan)}", xlabel="Services (N)",
               ylabel="Gbit/s")  # fmt: skip
        ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    return fig


def _series(S: pd.DataFrame, d: str, metric: str, target: str) -> pd.DataFrame:
    """`none` is measured at the pod only: its series is the baseline for every target."""
    return S[(S["datapath"] == d) & (S["metric"] == metric) & (S["target"] == ("pod" if d == "none" else target))]


def crr_figure(hd: pd.DataFrame, crr_targets: Sequence[str]) -> Figure:
    """Connection-setup latency (p50 top, p99 bottom, log scale) versus N per datapath, one column per target,
    with `none` as the baseline; median and IQR over repeats."""
    S = analysis.summary(hd)
    fig, axes = plt.subplots(2, len(crr_targets), figsize=(5.2 * len(crr_targets), 6.4), squeeze=False, sharex=True)
    for col, target in enumerate(crr_targets):
        for row, metric in enumerate(("crr_p50", "crr_p99")):
            ax = axes[row, col]
            for d in order(hd):
                _errorbar(ax, _series(S, d, metric, target), marker="o", ms=3, capsize=2, label=d, color=PALETTE[d])
            ax.set_yscale("log")
            ax.set(title=f"{metric.replace('crr_', '')} connection setup, target {target}", ylabel="µs")
            if row == 1:
                ax.set_xlabel("Services (N)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def udp_pps_figure(hd: pd.DataFrame, udp_targets: Sequence[str]) -> Figure:
    """Packets per second of new UDP flows (thousands) versus N per datapath, one panel per target."""
    S = analysis.summary(hd)
    fig, axes = plt.subplots(1, len(udp_targets), figsize=(5.2 * len(udp_targets), 3.4), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], udp_targets, strict=True):
        for d in order(hd):
            _errorbar(ax, _series(S, d, "udp_pps", target), scale=1e3, marker="o", ms=3, capsize=2, label=d,
                      color=PALETTE[d])  # fmt: skip
        ax.set(title=f"new UDP flows, target {target}", xlabel="Services (N)", ylabel="thousand packets/s")
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _band(ax, s: pd.DataFrame, scale: float, **kw) -> None:
    """Medians as a line with markers, their 95% CIs as a band."""
    ax.plot(s["services"], s["median"] / scale, marker="o", ms=3, **kw)
    ax.fill_between(s["services"], s["ci_lo"] / scale, s["ci_hi"] / scale, alpha=0.18, color=kw.get("color"), lw=0)


def _log_y(ax) -> None:
    """A log y axis labelled in plain numbers (1, 2, 5, 10, ...), without minor labels."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _datapath_legend(fig, datapaths: Sequence[str], extra: Sequence[Line2D] = ()) -> None:
    handles = [Line2D([], [], color=PALETTE[d], marker="o", ms=3, label=d) for d in datapaths]
    fig.legend(handles=[*handles, *extra], loc="lower center", ncol=len(handles) + len(extra), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0))  # fmt: skip


def transit_figure(hd: pd.DataFrame, targets: Sequence[str], probe_ns: Mapping[str, float] | None = None) -> Figure:
    """The worker's own transit time (p50, µs, log scale) versus N per datapath: the request (uplink in ->
    pod veth out) on top, the reply below, one column per target; medians with 95% CI bands over repeats,
    `none` (at the pod) as the baseline in every column. `probe_ns`: the probe programs' own run time per
    direction (`analysis.probe_cost`), drawn as a dotted line."""
    fig, axes = plt.subplots(2, len(targets), figsize=(3.4 * len(targets) + 0.6, 5.8), squeeze=False, sharex=True)
    for col, target in enumerate(targets):
        for row, direction in enumerate(("request", "reply")):
            ax = axes[row, col]
            for d in order(hd):
                _band(ax, analysis.per_point(hd, f"transit_{direction}_p50", d, target), 1e3, color=PALETTE[d])
            if probe_ns and direction in probe_ns:
                ax.axhline(probe_ns[direction] / 1e3, color="0.3", ls=":", lw=1)
            _log_y(ax)
            ax.set_title(f"{direction}, target {target}", fontsize=9)
            if col == 0:
                ax.set_ylabel("transit p50 (µs)")
            if row == 1:
                ax.set_xlabel("Services (N)")
    probe = [Line2D([], [], color="0.3", ls=":", label="probe programs' own run time")] if probe_ns else []
    _datapath_legend(fig, order(hd), probe)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def latency_figure(hd: pd.DataFrame, target: str) -> Figure:
    """Left: crr (solid) and handshake (dashed) p50 versus N per datapath at `target`, with 95% CI bands;
    `none`'s crr, the harness floor, as a grey band. Right: where a crr transaction's p50 goes at the
    largest N (`analysis.decomposition`), as shares: the worker's transit, the stacks and wires, the
    harness; the crr p50 itself at the end of each bar."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.2, 3.9), gridspec_kw={"width_ratios": [1.3, 1]})
    for d in order(hd):
        for metric, ls in (("crr_p50", "-"), ("handshake_p50", "--")):
            s = analysis.per_point(hd, metric, d, target)
            if d == "none" and metric == "crr_p50":
                ax.fill_between(s["services"], s["ci_lo"], s["ci_hi"], color="0.85", lw=0)
            _band(ax, s, 1.0, ls=ls, color=PALETTE[d])
    _log_y(ax)
    ax.set(xlabel="Services (N)", ylabel="p50 (µs)")
    ax.set_title(f"crr (solid) and handshake (dashed), target {target}", fontsize=9)
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
        bx.text(1.02, y, f"{total:,.0f} µs", va="center", fontsize=8)
    bx.set_xlim(0, 1.3)
    bx.set_xticks([0, 0.25, 0.5, 0.75, 1])
    bx.invert_yaxis()
    bx.set_xlabel("share of crr p50 (medians over repeats)")
    bx.set_title(f"crr p50 at N = {nmax:,}, by part", fontsize=9)
    bx.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.4, -0.2), ncol=3)
    floor = Patch(color="0.85", label="harness floor (none, crr, 95% CI)")
    _datapath_legend(fig, order(hd), [floor])
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
