"""Notebook 01's figures: the thesis' throughput figures, connection setup and new-flow rate against N.

They draw the tidy tables of `labtools.analysis`; colours and datapath order are `verdicts`'.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

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
