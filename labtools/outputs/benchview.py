"""Programming latency, read from `services bench` runs: the cold start (one full sync of N Services) and one
change on top of N (add one Service, remove one, move one's endpoint), end to end at the client.

Figures and the sentences notebook 03 prints and the paper quotes. The verdicts follow 95% CIs over the
repeats: a goal is *met* when the whole CI lies below it, *missed* when the whole CI lies above it, and
*undecided* otherwise; one change is *flat* in N when the slope's CI keeps the change over the whole range
of N within one probe period (the probe cannot resolve less).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from labtools.model import datapaths as registry
from labtools.outputs import analysis, figstyle

CHANGES = ("add", "remove", "endpoints")
GOAL_N = 10_000
# The goals for one change at N = 10,000, end to end, in seconds (iptables: a ratio, below).
CHANGE_GOALS = {"ebpf": 0.005, "nftables@1.37": 0.100}
BARE_RATIO_GOAL = 1.3  # iptables: the partial sync within 1.3x a bare restore of the same input
COLD_GOALS = {10_000: 3.0, 50_000: 15.0}  # nftables, current upstream layout: one full sync, seconds
# Where a datapath stops being practical: one change slower than kube-proxy's minimum sync period (its
# --iptables-min-sync-period / --min-sync-period default, 1 s), so that syncs run back to back and every
# further change waits for the one before.
PRACTICAL_S = 1.0
# The figures' order: the registry's, each datapath's named releases (oldest first) before its plain name.
ORDER = tuple(x for name, spec in registry.REGISTRY.items() if spec.family is not registry.Family.NONE
              for x in (*(f"{name}@{v}" for v in spec.versions), name))  # fmt: skip


# The bench runs of a reference, as <run-id>-<suffix> (the keys of a profile's notebook-04 `benches`): one per
# change, the cold start of both kube-proxy layouts, and one change under the 1.35 layout (a run of its own:
# its cold start at 10,000 takes minutes).
RUNS = ("change-add", "change-remove", "change-endpoints", "coldstart", "change-add-v135")


def present(df: pd.DataFrame) -> list[str]:
    """The datapaths of `df` in the order of the figures; an unknown datapath or release is an error."""
    have = set(df["datapath"])
    for name in have:
        registry.split_release(name)
    return [d for d in ORDER if d in have]


def _style(datapath: str) -> dict:
    """The registry's colour and marker; an older release than the newest modelled is dashed."""
    spec, version = registry.split_release(datapath)
    older = version is not None and version != spec.default_release
    return {"color": spec.style.color, "marker": spec.style.marker,
            "ls": registry.OLDER_RELEASE_LS if older else spec.style.ls}  # fmt: skip


def _ms(seconds: float) -> str:
    """A duration at the resolution it needs: µs below 1 ms (a map call), ms below 1 s, else s."""
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:,.0f} µs"
    return f"{seconds * 1e3:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def _ci(s: pd.Series | dict, fmt=_ms) -> str:
    name = analysis.interval_name(s["level"])
    return f"{fmt(s['median'])} ({name} {fmt(s['ci_lo'])} to {fmt(s['ci_hi'])}, {int(s['repeats'])} repeats)"


def point(df: pd.DataFrame, datapath: str, metric: str, services: int, change: str | None = None) -> dict | None:
    """Median, its order-statistic interval (`level`: its coverage) and repeats of `metric` for `datapath` at
    N = `services` (of one `change`), or None."""
    sub = df if change is None else df[df["change"] == change]
    pp = analysis.per_point(sub, metric, datapath, "nodeport")
    at = pp[pp["services"] == services]
    return None if at.empty else at.iloc[0].to_dict()


def cold(df: pd.DataFrame) -> pd.DataFrame:
    """Every cold start in the runs as metric ``cold_apply_s``: the change runs' full syncs and the cold-start
    run's applies (the same operation: one full sync from an empty node)."""
    c = df[df["metric"].isin(["cold_apply_s", "apply_s"])]
    return c.assign(metric="cold_apply_s")


def _short(n: int) -> str:
    return f"{n // 1000:,}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def _log_axes(ax, counts: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(counts), [_short(int(n)) for n in sorted(counts)])  # 10k and 50k sit close on a log axis
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))


def _legend(fig, datapaths: Sequence[str], extra: Sequence[Line2D] = (), *, right: bool = False) -> None:
    handles = [Line2D([], [], ms=3, label=d, **_style(d)) for d in datapaths]
    if right:  # beside the axes, one entry per line
        fig.legend(handles=[*handles, *extra], loc="center right", frameon=False, handlelength=2.2)
        return
    fig.legend(handles=[*handles, *extra], loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0),
               handlelength=2.2, columnspacing=1.2)  # fmt: skip


def _band(ax, pp: pd.DataFrame, scale: float, **kw) -> None:
    ax.plot(pp["services"], pp["median"] * scale, ms=2.5, **{"marker": "o", **kw})
    ax.fill_between(pp["services"], pp["ci_lo"] * scale, pp["ci_hi"] * scale, alpha=0.18, color=kw["color"], lw=0)


@figstyle.styled
def change_figure(df: pd.DataFrame) -> Figure:
    """One change against N, a panel per change: the time until the client's probe sees it (solid, with the
    95% CI band) and until the datapath's update call returns (thin dotted), in ms on log axes; the probe's
    period as a grey line (nothing below it is resolved)."""
    kinds = [k for k in CHANGES if k in set(df["change"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(figstyle.TEXT_WIDTH, 2.9), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds, strict=True):
        sub = df[df["change"] == kind]
        for d in present(sub):
            st = _style(d)
            _band(ax, analysis.per_point(sub, "change_e2e_s", d, "nodeport"), 1e3, **st)
            apply = analysis.per_point(sub, "change_apply_s", d, "nodeport")
            ax.plot(apply["services"], apply["median"] * 1e3, color=st["color"], ls=":", lw=0.9)
        ax.axhline(probe_period(sub) * 1e3, color="0.55", lw=0.8)
        _log_axes(ax, sub["services"].unique())
        ax.set(title=f"{kind} one Service" if kind != "endpoints" else "move one Service's endpoint",
               xlabel="Services already programmed (N)")  # fmt: skip
        if ax is axes[0][0]:
            ax.set_ylabel("one change (ms)")
    extra = [Line2D([], [], color="0.3", ls=":", lw=0.9, label="update call returns"),
             Line2D([], [], color="0.55", lw=0.8, label="probe period")]  # fmt: skip
    _legend(fig, present(df), extra)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig


@figstyle.styled
def cold_figure(df: pd.DataFrame) -> Figure:
    """One full sync from an empty node against N, per datapath and kube-proxy layout, in s on log axes, with
    95% CI bands; nftables' goals for the current layout as open markers."""
    c = cold(df)
    fig, ax = plt.subplots(figsize=(figstyle.TEXT_WIDTH * 0.8, 2.6))
    for d in present(c):
        _band(ax, analysis.per_point(c, "cold_apply_s", d, "nodeport"), 1.0, **_style(d))
    ax.plot(list(COLD_GOALS), list(COLD_GOALS.values()), ls="none", marker="v", mfc="none", mec="tab:blue", ms=5)
    _log_axes(ax, c["services"].unique())
    ax.set(xlabel="Services (N)", ylabel="cold start (s)")
    _legend(fig, present(c), [Line2D([], [], ls="none", marker="v", mfc="none", mec="tab:blue",
                                     label="goal, nftables 1.37")], right=True)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 0.7, 1))
    return fig


def _goal_word(s: dict | None, goal: float) -> str:
    if s is None:
        return "not measured"
    return "met" if s["ci_hi"] < goal else "missed" if s["ci_lo"] > goal else "undecided"


def probe_period(df: pd.DataFrame) -> float:
    """The client probe's period in seconds, as the runs recorded it (`probe_hz`)."""
    return 1.0 / float(df[df["metric"] == "probe_hz"]["value"].median())


def _flat_slope(df: pd.DataFrame) -> float:
    """Seconds per Service below which a change is "flat": one probe period over the whole range of N."""
    span = df["services"].max() - df["services"].min()
    return probe_period(df) / span if span else float("inf")


def change_statements(df: pd.DataFrame) -> list[str]:
    """What one change costs: per change at N = 10,000 (else the largest N), each datapath end to end, and where
    a datapath timed its own writes (eBPF), its map calls and its update call apart; how it grows with N; and
    the issue's goals with their verdicts."""
    out = []
    for kind in [k for k in CHANGES if k in set(df["change"])]:
        sub = df[df["change"] == kind]
        ns = sorted(sub["services"].unique())
        n = GOAL_N if GOAL_N in ns else ns[-1]
        parts = [f"{d} {_ci(s)}" for d in present(sub) if (s := point(sub, d, "change_e2e_s", n))]
        out.append(f"One change ({kind}) at N = {n:,}, until the client's probe sees it: " + "; ".join(parts) + ".")
        for d in present(sub):  # where the datapath timed its own writes (eBPF's map calls): the parts apart
            calls, call = point(sub, d, "map_calls_s", n), point(sub, d, "change_apply_s", n)
            if calls and call:
                out.append(f"Of {d}'s change ({kind}) at N = {n:,}: the bpf() map calls {_ci(calls)}; the whole "
                           f"update call {_ci(call)}.")  # fmt: skip
        growth = []
        for d in present(sub):
            if sub[(sub["datapath"] == d) & (sub["metric"] == "change_e2e_s")]["services"].nunique() < 2:
                continue  # a slope needs two Ns
            t = analysis.trend(sub, d, "change_e2e_s", "nodeport", flat_slope=_flat_slope(sub))
            growth.append(f"{d} {t.word} ({t.slope * 1e9:,.0f} ns per Service, 95% CI {t.ci_lo * 1e9:,.0f} to "
                          f"{t.ci_hi * 1e9:,.0f})")  # fmt: skip
        if growth:
            out.append(f"Against N ({ns[0]:,} to {ns[-1]:,}), one change ({kind}) " + "; ".join(growth) + ".")
    for d, goal in CHANGE_GOALS.items():
        verdicts = [f"{kind} {_goal_word(s, goal)}" + (f" ({_ms(s['median'])})" if s else "")
                    for kind in CHANGES if kind in set(df["change"])
                    for s in [point(df, d, "change_e2e_s", GOAL_N, kind)]]  # fmt: skip
        out.append(f"Goal: {d}, one change at N = {GOAL_N:,} end to end under {_ms(goal)}: " + ", ".join(verdicts)
                   + ".")  # fmt: skip
    for d in ("iptables", "iptables-legacy"):
        verdicts = []
        for kind in [k for k in CHANGES if k in set(df["change"])]:
            s = point(df, d, "ratio_to_bare", GOAL_N, kind)
            if s is not None:
                verdicts.append(f"{kind} {_goal_word(s, BARE_RATIO_GOAL)} ({_ci(s, lambda v: f'{v:.2f}×')})")
        if verdicts:
            out.append(f"Goal: {d}, the partial sync within {BARE_RATIO_GOAL}× a bare restore of the same input at "
                       f"N = {GOAL_N:,}: " + "; ".join(verdicts) + ".")  # fmt: skip
    return out


def practical_statements(df: pd.DataFrame) -> list[str]:
    """Per datapath, the largest N at which every change measured stays under `PRACTICAL_S` (its whole CI) and
    the smallest at which one exceeds it (its whole CI)."""
    out = []
    for d in present(df):
        ok, over = [], []
        for n in sorted(df[df["datapath"] == d]["services"].unique()):
            pts = [point(df, d, "change_e2e_s", n, k) for k in CHANGES]
            pts = [p for p in pts if p]
            if pts and all(p["ci_hi"] < PRACTICAL_S for p in pts):
                ok.append(n)
            elif any(p["ci_lo"] > PRACTICAL_S for p in pts):
                over.append((n, max(p["median"] for p in pts)))
        if over:
            n, worst = over[0]
            out.append(f"{d} stops being practical by N = {n:,}: one change takes {_ms(worst)}, beyond kube-proxy's "
                       f"{PRACTICAL_S:g} s minimum sync period" + (f" (under it up to N = {max(ok):,})." if ok
                                                                  else "."))  # fmt: skip
        elif ok:
            out.append(f"{d} stays practical up to the largest N measured, {max(ok):,}: every change under "
                       f"{PRACTICAL_S:g} s.")  # fmt: skip
    return out


def cold_statements(df: pd.DataFrame) -> list[str]:
    """One full sync per datapath and layout at each N, the goals for nftables' current layout, and, where a
    layout was not run at the largest N, its growth exponent and what it would take there (marked as such)."""
    c = cold(df)
    out = []
    nmax = int(c["services"].max())
    for d in present(c):
        pp = analysis.per_point(c, "cold_apply_s", d, "nodeport")
        at = "; ".join(f"N = {int(r.services):,}: {_ci(r._asdict())}" for r in pp.itertuples())
        out.append(f"Cold start, {d}: {at}.")
        if pp["services"].max() < nmax and len(pp) >= 2:
            a, b = pp.iloc[-2], pp.iloc[-1]
            k = np.log(b["median"] / a["median"]) / np.log(b["services"] / a["services"])
            guess = b["median"] * (nmax / b["services"]) ** k
            out.append(f"{d} was not run at N = {nmax:,}: from N = {int(a['services']):,} to {int(b['services']):,} "
                       f"its time grew as N^{k:.1f}, which would put N = {nmax:,} near {guess / 60:,.0f} min "
                       "(an extrapolation, not a measurement).")  # fmt: skip
    for n, goal in COLD_GOALS.items():
        s = point(c, "nftables@1.37", "cold_apply_s", n)
        word = _goal_word(s, goal)
        out.append(f"Goal: nftables@1.37, cold start at N = {n:,} under {goal:g} s: {word}"
                   + (f" ({_ci(s)})." if s else "."))  # fmt: skip
    return out


def change_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per datapath and N: the cold start and each change end to end, medians with their order-statistic
    intervals in seconds (`*_level`: each interval's coverage)."""
    c = cold(df)
    rows = []
    for d in present(df):
        for n in sorted(df[df["datapath"] == d]["services"].unique()):
            row = {"datapath": d, "services": int(n)}
            for name, sub, metric in (("cold", c, "cold_apply_s"),
                                      *((k, df[df["change"] == k], "change_e2e_s") for k in CHANGES)):  # fmt: skip
                s = point(sub, d, metric, n)
                row |= {f"{name}_{x}": (s or {}).get(x, float("nan")) for x in ("median", "ci_lo", "ci_hi", "level")}
            rows.append(row)
    return pd.DataFrame(rows)


def from_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """A sweep's `change` metric (target ``new``: one Service added on top of N, then removed) as the bench's
    tidy table, so that `change_figure` and `change_statements` take it too."""
    sub = df[df["metric"].isin(["change_apply_s", "change_e2e_s", "change_e2e_lo_s", "probe_hz"])]
    return sub.assign(change="add", target="nodeport")
