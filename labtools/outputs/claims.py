"""The claims ledger: every claim of the original thesis, tested against our measurements, and our own findings.

Each claim names the thesis' evidence, what we measured, the statistical test and its result, and a verdict
that follows the test: *reproduced*, *refuted*, *reproduced with an explanation* (the observation holds, but
for a reason the thesis did not give), *partly reproduced* (it holds for some datapaths, not for others), or
*not shown* (the test cannot decide). Our own findings are *found*, *refuted* or *not shown* by the same kind of
test, computed from the data, so a run whose numbers contradict a finding says so. Everything is computed from
the tidy tables (`outputs.analysis`) and the SRv6 run's tables (`outputs.srv6view`); notebook 03 prints
the rows and writes ``paper/tables/claims.tex`` and ``findings.tex`` from them.

The tests:

- **TOST** (two one-sided t-tests) for "no difference": on paired log ratios within each repeat, equivalence
  within ±`MARGIN` is shown when both one-sided p-values are below 0.05; for "adds no cost", one of them
  (non-inferiority: the paired excess lies below +`TRANSIT_MARGIN_NS`);
- **Brown–Forsythe** (Levene's test around the median) for "wider spread": on each sample's deviation from
  its own (datapath, N) median, so that the N-to-N changes do not count as spread;
- **a slope's 95% CI** over blocks (`analysis.trend`, with its lack-of-fit test) for "grows with N", and per-N
  **paired t tests** on log ratios, **Holm**-adjusted over the values of N, for "a difference shows only at
  N = ...";
- field-by-field **equality** for header values, and the **observed outcome** of real transactions for
  reachability (deterministic: one transaction either completes or it does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from labtools.model import datapaths as registry
from labtools.model.datapaths import Family
from labtools.model.plan import Plan
from labtools.outputs import analysis
from labtools.outputs.verdicts import decimals, scenario1_plan

MARGIN = 0.05  # equivalence margin for "no difference": ±5% (of throughput), the band `analysis` calls flat
ALPHA = 0.05
TRANSIT_MARGIN_NS = 500.0  # "adds no cost": within +0.5 µs of none, about a tenth of the bare worker's transit


@dataclass(frozen=True)
class Claim:
    """One row of the ledger."""

    key: str  # short id, used for references in the text
    claim: str  # what the thesis says (or, for our findings, what we found)
    thesis: str  # the thesis' evidence
    measured: str  # what we measured, with numbers
    test: str  # the test and its statistic
    verdict: str  # reproduced / refuted / reproduced with an explanation / not shown / not measured
    ref: str  # the figure or table that shows it


def _missing(key: str, claim: str, thesis: str, what: str, ref: str) -> Claim:
    return Claim(key, claim, thesis, f"not measured in this run ({what})", "--", "not measured", ref)


def tost_paired_log(ratios: np.ndarray, margin: float = MARGIN) -> tuple[float, float, float]:
    """TOST on log ratios: (mean ratio, t of the less favourable one-sided test, its p-value)."""
    x = np.log(np.asarray(ratios, dtype=float))
    n, m, se = len(x), float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))
    lo, hi = np.log(1 - margin), np.log(1 + margin)
    t_lo, t_hi = (m - lo) / se, (m - hi) / se
    p_lo, p_hi = 1 - stats.t.cdf(t_lo, n - 1), stats.t.cdf(t_hi, n - 1)
    return float(np.exp(m)), float(min(t_lo, -t_hi)), float(max(p_lo, p_hi))


def tost_design(ratios: np.ndarray, margin: float = MARGIN, power: float = 0.9) -> tuple[float, int, float]:
    """What a TOST on these log ratios could decide: (its power at a true ratio of 1, the ratios it would need
    for `power`, the smallest margin it could show at `power` with these ratios). Normal approximation with the
    observed spread; for the equivalence claim's honest "cannot decide"."""
    x = np.log(np.asarray(ratios, dtype=float))
    n, sd = len(x), float(x.std(ddof=1))
    z_a, z_b = stats.norm.ppf(1 - ALPHA), stats.norm.ppf(1 - (1 - power) / 2)
    bound = np.log(1 + margin)
    achieved = float(max(0.0, 2 * stats.norm.cdf(bound / (sd / np.sqrt(n)) - z_a) - 1))
    needed = int(np.ceil(((z_a + z_b) * sd / bound) ** 2))
    smallest = float(np.exp((z_a + z_b) * sd / np.sqrt(n)) - 1)
    return achieved, needed, smallest


def _ratios(df: pd.DataFrame, metric: str, num: str, den: str, target: str) -> pd.Series:
    sub = df[df["metric"] == metric]
    a = sub[(sub["datapath"] == num) & (sub["target"] == target)].set_index(["services", "repeat"])["value"]
    b = sub[(sub["datapath"] == den) & (sub["target"] == target)].set_index(["services", "repeat"])["value"]
    return (a / b).dropna()


def _run_of(df: pd.DataFrame) -> str:
    """The run(s) a claim's records come from, as its measurement names them."""
    return ", ".join(sorted(df["run_id"].unique())) if "run_id" in df else "this run"


def no_throughput_difference(s1: pd.DataFrame | None, target: str = "first") -> Claim:
    """Thesis claim 1: no throughput difference between iptables and eBPF for N <= 1000 (scenario 1)."""
    claim, thesis = "No throughput difference between iptables and eBPF for N ≤ 1,000 (scenario 1).", \
        "iperf3 TCP, Figs. 33-35: the eBPF/iptables ratio stays near 1"  # fmt: skip
    if s1 is None or not {"ebpf", "iptables"} <= set(s1["datapath"]):
        return _missing("thr-s1", claim, thesis, "scenario 1 with ebpf and iptables", "Fig. fig:ratio")
    r = _ratios(s1, "throughput", "ebpf", "iptables", target)
    mean, t, p = tost_paired_log(r.to_numpy())
    power, needed, smallest = tost_design(r.to_numpy())
    verdict = "reproduced" if p < ALPHA else "not shown"
    return Claim("thr-s1", claim, thesis,
                 f"eBPF/iptables throughput ({_run_of(s1)}), geometric mean of {len(r)} ratios paired "
                 f"within blocks: {mean:.3f}; "
                 f"the design's power at a true ratio of 1: {power:.0%} (90% needs about {needed:,} ratios; the "
                 f"smallest margin it shows at 90%: ±{smallest:.0%})",
                 f"TOST, margin ±{MARGIN:.0%}: t = {t:.2f}, p = {p:.3g}", verdict, "Fig. fig:ratio")  # fmt: skip


def wider_spread(s1: pd.DataFrame | None) -> Claim:
    """Thesis claim 2: eBPF's throughput shows a wider spread (than iptables)."""
    claim, thesis = "eBPF's throughput shows a wider spread than iptables'.", "box plots, Figs. 34/35 and 38/39"
    if s1 is None or not {"ebpf", "iptables"} <= set(s1["datapath"]):
        return _missing("spread", claim, thesis, "scenario 1 with ebpf and iptables", "Fig. fig:box")
    thr = s1[(s1["metric"] == "throughput") & s1["datapath"].isin(["ebpf", "iptables"])]
    dev = thr["value"] - thr.groupby(["datapath", "services"])["value"].transform("median")
    e, i = dev[thr["datapath"] == "ebpf"].to_numpy(), dev[thr["datapath"] == "iptables"].to_numpy()
    w, p = stats.levene(e, i, center="median")
    mad_e, mad_i = float(np.median(np.abs(e))), float(np.median(np.abs(i)))
    verdict = "not shown" if p >= ALPHA else ("reproduced" if mad_e > mad_i else "refuted")
    return Claim("spread", claim, thesis,
                 f"median absolute deviation from each N's median: eBPF {mad_e:.2f}, iptables {mad_i:.2f} Gbit/s "
                 f"({len(e)} and {len(i)} samples, {_run_of(s1)})",
                 f"Brown-Forsythe: W = {w:.2f}, p = {p:.3g}", verdict, "Fig. fig:box")  # fmt: skip


def difference_only_at_high_n(s2: pd.DataFrame | None, target: str = "last") -> Claim:
    """Thesis claim 3: in scenario 2 a throughput difference shows only at 9,000-10,000 Services."""
    claim, thesis = "In scenario 2, a throughput difference shows only at N = 9,000-10,000.", \
        "iperf3 TCP to the last NodePort, Figs. 36-39"  # fmt: skip
    if s2 is None or not {"ebpf", "iptables"} <= set(s2["datapath"]):
        return _missing("thr-s2", claim, thesis, "scenario 2 with ebpf and iptables", "Fig. fig:ratio")
    ci = analysis.paired_ratio_ci(s2, "throughput", "ebpf", "iptables", target)
    high = {n for n in ci["services"].astype(int) if n >= 9000}
    if not high:  # the claim is about N = 9,000-10,000: a sweep that stops short cannot test it
        return _missing("thr-s2", claim, thesis, f"N only up to {int(ci['services'].max()):,}", "Fig. fig:ratio")
    ci = ci.assign(p_holm=analysis.holm(ci["p"].fillna(1.0)))
    sig = ci[ci["p_holm"] < ALPHA]
    off = set(sig["services"].astype(int))
    if off and off <= high:
        verdict = "reproduced"
    elif off - high:
        verdict = "refuted"  # a difference also shows below 9,000
    else:
        verdict = "not shown"  # no N shows a difference after the correction: absence is not shown either
    where = "; ".join(f"N = {int(r.services):,}: eBPF {'higher' if r.median > 1 else 'lower'}, {r.median:.2f}× "
                      f"(95% CI {r.ci_lo:.2f} to {r.ci_hi:.2f}, Holm p = {r.p_holm:.3g})" for r in sig.itertuples())
    smallest = ci.loc[ci["p_holm"].idxmin()]
    return Claim("thr-s2", claim, thesis,
                 f"eBPF/iptables throughput per N, paired within repeats ({len(ci)} values of N): "
                 + (where or f"no N differs (smallest Holm-adjusted p = {smallest['p_holm']:.3g} at "
                    f"N = {int(smallest['services']):,})"),
                 "per-N paired t tests on log ratios, Holm-adjusted (family-wise 5%)", verdict,
                 "Fig. fig:ratio")  # fmt: skip


def no_cost_at_small_n(s2: pd.DataFrame | None, target: str = "last") -> Claim:
    """Thesis claim 4: eBPF adds no packet-processing cost at small N (compared with no Service rules)."""
    claim, thesis = "eBPF adds no packet-processing cost at small N.", "throughput at N = 1 (Figs. 33, 36)"
    if s2 is None or "transit_request_p50" not in set(s2["metric"]) or "none" not in set(s2["datapath"]):
        return _missing("ebpf-cost", claim, thesis, "transit with ebpf and none", "Table tab:tables/transit-summary")
    n = int(s2["services"].min())
    small = s2[s2["services"] == n]
    x = analysis.excess(small, "transit_request_p50", "ebpf", target)["value"].to_numpy()
    m, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))
    # "Adds no cost" is a one-sided claim: non-inferiority, H0: the excess is at least the margin.
    t = (m - TRANSIT_MARGIN_NS) / se
    p = float(stats.t.cdf(t, len(x) - 1))
    upper = m + float(stats.t.ppf(1 - ALPHA, len(x) - 1)) * se
    if p < ALPHA:
        verdict = "reproduced with an explanation" if upper < 0 else "reproduced"
    else:
        verdict = "refuted" if m - float(stats.t.ppf(1 - ALPHA, len(x) - 1)) * se > TRANSIT_MARGIN_NS else "not shown"
    why = ("; eBPF is faster than the plain path: it DNATs at tc ingress and hands the packet to the pod's veth "
           "(bpf_redirect_neigh), skipping the stack's forwarding") if upper < 0 else ""  # fmt: skip
    return Claim("ebpf-cost", claim, thesis,
                 f"worker transit of the SYN at the {target} NodePort, eBPF minus none at N = {n:,}, paired within "
                 f"{len(x)} repeats: mean {m:+.0f} ns (one-sided 95% upper bound {upper:+.0f} ns){why}",
                 f"one-sided t-test (non-inferiority), margin +{TRANSIT_MARGIN_NS:.0f} ns: t = {t:.2f}, p = {p:.3g}",
                 verdict, "Table tab:tables/transit-summary")  # fmt: skip


def header_fields(comparison: pd.DataFrame | None) -> Claim:
    """Thesis claim 5: the SRv6 header fields at each capture point (Figs. 38-42)."""
    claim, thesis = "The IPv6 and SRH header fields at each capture point.", "Wireshark captures, Figs. 38-42"
    if comparison is None or comparison.empty:
        return _missing("headers", claim, thesis, "no SRv6 captures", "Chap. ch:srv6")
    same, n = int(comparison["same"].sum()), len(comparison)
    diff = comparison[~comparison["same"]]
    explained = bool(len(diff)) and bool(diff["why"].astype(bool).all())
    verdict = "reproduced" if same == n else ("reproduced with an explanation" if explained else "refuted")
    fields = "; ".join(f"{r.field}: {r.thesis} vs {r.measured}" for r in diff.itertuples())
    return Claim("headers", claim, thesis, f"{same} of {n} fields equal" + (f"; differ: {fields}" if fields else ""),
                 "field-by-field equality", verdict, "Chap. ch:srv6")  # fmt: skip


def _cells(M: pd.DataFrame, mode: str, target: str) -> pd.DataFrame:
    return M[(M["mode"] == mode) & (M["target"] == target)]


def pod_reachable(M: pd.DataFrame | None, mode: str = "end-dt6") -> Claim:
    """Thesis claim 6: the pod is reachable over SRv6 (End.DT6 at the worker)."""
    claim, thesis = "The pod is reachable over SRv6.", "ping and iperf3 through the tunnel (§11, introduction)"
    if M is None or _cells(M, mode, "pod").empty:
        return _missing("srv6-pod", claim, thesis, f"matrix without {mode}", "Table tab:srv6-matrix")
    c = _cells(M, mode, "pod")
    ok = sorted(c[c["reachable"]]["datapath"])
    bad = sorted(c[~c["reachable"]]["datapath"])
    verdict = "reproduced" if not bad else ("partly reproduced" if ok else "refuted")
    return Claim("srv6-pod", claim, thesis,
                 f"one TCP transaction to the pod IP through {mode}: completes with {', '.join(ok) or 'no datapath'}"
                 + (f"; not with {', '.join(bad)} (its reply is dropped, see the matrix notes)" if bad else ""),
                 "observed outcome of real transactions", verdict, "Table tab:srv6-matrix")  # fmt: skip


def nodeport_unreachable(M: pd.DataFrame | None, mode: str = "end-dt6") -> Claim:
    """Thesis claim 7: the NodePort is not reachable over SRv6."""
    claim, thesis = "The NodePort is not reachable over SRv6.", \
        "iperf3 to the NodePort through the tunnel (§11, introduction)"  # fmt: skip
    if M is None or _cells(M, mode, "nodeport").empty:
        return _missing("srv6-np", claim, thesis, f"matrix without {mode}", "Table tab:srv6-matrix")
    c = _cells(M, mode, "nodeport")
    ok = sorted(c[c["reachable"]]["datapath"])
    other = M[(M["target"] == "nodeport") & M["reachable"] & ~M["mode"].isin([mode, "none"])]
    ways = sorted({f"{r.datapath} via {r.mode}" for r in other.itertuples()})
    verdict = "refuted" if ok else "reproduced with an explanation"
    return Claim("srv6-np", claim, thesis,
                 f"through {mode}: reachable with {', '.join(ok) or 'no datapath'} (End.DT6 looks the inner "
                 f"destination up in the main table, where the node's own address is not); other terminations that "
                 f"do reach it: {', '.join(ways) or 'none'}", "observed outcome of real transactions", verdict,
                 "Table tab:srv6-matrix")  # fmt: skip


def udp_to_tcp_service(U: pd.DataFrame | None) -> Claim:
    """Thesis claim 8: UDP fails with kube-proxy but works with eBPF (to the TCP-only iperf3 Service)."""
    claim, thesis = "UDP fails with kube-proxy but works with eBPF.", "iperf3 -u to the NodePort (§11.5)"
    if U is None or U.empty:
        return _missing("udp", claim, thesis, "no udp-check run", "--")
    g = U.groupby(["datapath", "release"], sort=False)["value"].median()
    parts = "; ".join(f"{d} ({rel}) {v:.0%}" for (d, rel), v in g.items())
    kube = [v for (d, rel), v in g.items() if rel == "kube-proxy"]
    old = [v for (d, rel), v in g.items() if d == "ebpf" and rel.endswith("1.13")]
    new = [v for (d, rel), v in g.items() if d == "ebpf" and rel.endswith("1.17")]
    shown = bool(kube) and max(kube) < 0.01 and bool(old) and min(old) > 0.99
    verdict = ("reproduced with an explanation" if shown and new and max(new) < 0.01
               else "reproduced" if shown else "refuted")  # fmt: skip
    return Claim("udp", claim, thesis,
                 f"UDP datagrams to the NodePort of the TCP-only Service that reach the pod (median over "
                 f"{int(U.groupby(['datapath', 'release']).size().min())} repeats): {parts}. Cilium before 1.17 "
                 "looks Services up without the L4 protocol; 1.17 keys them by protocol", "observed delivery ratio",
                 verdict, "labtools udp-check")  # fmt: skip


def tcp_limits_pps(s2: pd.DataFrame | None, target: str = "last") -> Claim:
    """Thesis claim 9: TCP limits what a packets-per-second measurement can show."""
    claim, thesis = "TCP limits what a packets-per-second measurement can show.", \
        "the discussion of the throughput results (§11)"  # fmt: skip
    if s2 is None or "udp_pps" not in set(s2["metric"]) or "iptables" not in set(s2["datapath"]):
        return _missing("pps", claim, thesis, "udp-pps with iptables", "Fig. fig:udp")
    thr = analysis.trend(s2, "iptables", "throughput", target)
    pps = analysis.trend(s2, "iptables", "udp_pps", target)
    # Shown when new flows per second fall with N while bulk throughput stays flat (equivalence): the walk is
    # paid per new flow, which a TCP stream meets once.
    verdict = "reproduced with an explanation" if pps.ci_hi < 0 and thr.word == "flat" else "not shown"
    return Claim("pps", claim, thesis,
                 f"iptables at the {target} NodePort: TCP throughput {thr.word} (change over the N range: 95% CI "
                 f"{thr.change[0]:+.1%} to {thr.change[1]:+.1%}); new UDP flows per second {pps.word}, "
                 f"{pps.slope:.1f} packets/s per Service (95% CI {pps.ci_lo:.1f} to {pps.ci_hi:.1f}): each new flow "
                 "walks the rules, a TCP stream only its first packet",
                 "slope 95% CIs over blocks; flat: change within ±5%",
                 verdict, "Fig. fig:udp")  # fmt: skip


def ebpf_better_at_scale(s2: pd.DataFrame | None, target: str = "last") -> Claim:
    """Thesis claim 10, its main conclusion (end of §11.3): eBPF is clearly better in industrial conditions
    (many Services). Tested where scale shows: eBPF/iptables at the largest N, paired within repeats, for
    connection setup (crr p50, lower is better) and bulk throughput (higher is better)."""
    claim, thesis = "eBPF is clearly better than iptables in industrial conditions (many Services).", \
        "the conclusion of the measurements (end of §11.3)"  # fmt: skip
    if s2 is None or not {"ebpf", "iptables"} <= set(s2["datapath"]) or "crr_p50" not in set(s2["metric"]):
        return _missing("ebpf-better", claim, thesis, "crr with ebpf and iptables", "Fig. fig:crr")
    nmax = int(s2["services"].max())
    at = s2[s2["services"] == nmax]
    crr = analysis.paired_ratio_ci(at, "crr_p50", "ebpf", "iptables", target).iloc[0]
    thr = analysis.paired_ratio_ci(at, "throughput", "ebpf", "iptables", target)
    setup_better, setup_worse = crr["ci_hi"] < 1, crr["ci_lo"] > 1
    thr_better = bool(len(thr)) and thr.iloc[0]["ci_lo"] > 1
    if setup_worse:
        verdict = "refuted"
    elif setup_better and thr_better:
        verdict = "reproduced"
    elif setup_better:  # better where the rule walk is paid (new connections), not for bulk streams
        verdict = "reproduced with an explanation"
    else:
        verdict = "not shown"
    measured = (f"at N = {nmax:,}: eBPF/iptables crr p50 {crr['median']:.3f}× (95% CI {crr['ci_lo']:.3f} to "
                f"{crr['ci_hi']:.3f})")
    if len(thr):
        t = thr.iloc[0]
        measured += f"; throughput {t['median']:.3f}× (95% CI {t['ci_lo']:.3f} to {t['ci_hi']:.3f})"
    return Claim("ebpf-better", claim, thesis, measured + f"; {int(crr['repeats'])} repeats",
                 "paired-ratio 95% CIs (t on log ratios)", verdict, "Fig. fig:crr")  # fmt: skip


def scenarios(df: pd.DataFrame, plans: Sequence[Plan]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The records of the thesis' scenario 1 (throughput to the first Service) and scenario 2 (the headline
    sweep: crr to the largest N, throughput to the last NodePort) among `plans`; None where not measured.
    Scenario 1 is the sweep of throughput to the first Service with the most eBPF/iptables pairs (a sweep made
    for the equivalence test, where a run has one, rather than the grid)."""
    s1 = scenario1_plan(plans)
    crr = [p for p in plans if "crr" in p.metrics]
    s2 = max(crr, key=lambda p: max(p.counts)) if crr else None
    a, b = (df[df["run_id"] == p.run_id] if p is not None else None for p in (s1, s2))
    return a, b


def thesis_claims(s1: pd.DataFrame | None, s2: pd.DataFrame | None, comparison: pd.DataFrame | None,
                  M: pd.DataFrame | None, U: pd.DataFrame | None) -> list[Claim]:  # fmt: skip
    """The original thesis' claims, in its order, each tested against our data (None: not measured)."""
    return [no_throughput_difference(s1), wider_spread(s1), difference_only_at_high_n(s2), no_cost_at_small_n(s2),
            header_fields(comparison), pod_reachable(M), nodeport_unreachable(M), udp_to_tcp_service(U),
            tcp_limits_pps(s2), ebpf_better_at_scale(s2)]  # fmt: skip


# -- our own findings ----------------------------------------------------------------------------------------------


def _found(shown: bool, refuted: bool = False) -> str:
    return "refuted" if refuted else "found" if shown else "not shown"


def _conntrack(s2: pd.DataFrame, target: str) -> Claim:
    crr = analysis.trend(s2, "iptables", "crr_p50", target)
    thr = analysis.trend(s2, "iptables", "throughput", target)
    return Claim("conntrack", "Conntrack hides the rule walk from bulk throughput.", "--",
                 f"iptables: connection setup {crr.word}, {crr.slope * 1e3:.1f} ns per Service (95% CI "
                 f"{crr.ci_lo * 1e3:.1f} to {crr.ci_hi * 1e3:.1f}); throughput {thr.word} (change over the N range: "
                 f"95% CI {thr.change[0]:+.1%} to {thr.change[1]:+.1%})",
                 "slope 95% CIs over blocks: setup grows, throughput flat within ±5%",
                 _found(analysis.growth(crr) and thr.word == "flat"), "Fig. fig:crr")  # fmt: skip


def _pod_ip(s2: pd.DataFrame, nmax: int) -> Claim | None:
    pod = analysis.paired_ratio_ci(s2, "crr_p50", "iptables", "none", "pod", "pod")
    at = pod[pod["services"] == nmax]
    if at.empty:
        return None
    a = at.iloc[0]
    return Claim("pod-ip", "Under iptables, traffic to pod IPs (not Services) pays for the walk too.", "--",
                 f"crr to the pod IP at N = {nmax:,}: {a['median']:.2f} × none (95% CI {a['ci_lo']:.2f} to "
                 f"{a['ci_hi']:.2f})", "paired-ratio 95% CI (t on log ratios)", _found(a["ci_lo"] > 1, a["ci_hi"] < 1),
                 "Fig. fig:crr")  # fmt: skip


def _cold_start(s2: pd.DataFrame, nmax: int) -> Claim:
    """nftables' apply against every other datapath's at the largest N: Welch t tests on log apply times over
    the distinct applies (a parked datapath resumed counts once), Holm-adjusted."""
    at = s2[(s2["services"] == nmax) & (s2["datapath"] != "none")].dropna(subset=["programming_apply_s"])
    applies = {d: g.drop_duplicates("repeat")["programming_apply_s"].drop_duplicates().to_numpy(float)
               for d, g in at.groupby("datapath")}  # fmt: skip
    parts = ", ".join(f"{d} {np.median(v):.1f} s ({len(v)} applies)" for d, v in applies.items())
    layout = s2["kube_proxy_version"].dropna() if "kube_proxy_version" in s2 else pd.Series(dtype=object)
    release = str(layout.iloc[0]) if len(layout) else "1.35"  # runs before the layout was recorded: 1.35 (data/)
    claim = f"Programming {nmax:,} Services from scratch costs nftables (kube-proxy {release}'s layout) most."
    why = (". The kernel names every anonymous set (one verdict map per Service) by scanning all sets of the table "
           "(nf_tables_set_alloc_name), quadratic in N") if release == "1.35" else ""
    others = [d for d in applies if d != "nftables"]
    if "nftables" not in applies or min(len(v) for v in applies.values()) < 2 or not others:
        return Claim("cold-start", claim, "--", f"one atomic apply at N = {nmax:,}: {parts}",
                     "none: fewer than two applies per datapath", "not shown", "Chap. ch:sweeps")  # fmt: skip
    nft = np.log(applies["nftables"])
    tests = [stats.ttest_ind(nft, np.log(applies[d]), equal_var=False) for d in others]
    p = analysis.holm([t.pvalue for t in tests])
    higher = all(t.statistic > 0 and q < ALPHA for t, q in zip(tests, p, strict=True))
    lower = any(t.statistic < 0 and q < ALPHA for t, q in zip(tests, p, strict=True))
    return Claim("cold-start", claim, "--", f"atomic applies at N = {nmax:,}: {parts}{why}",
                 f"Welch t tests on log apply times, nftables against each, Holm-adjusted: largest p = {max(p):.3g}",
                 _found(higher, lower), "Chap. ch:sweeps")  # fmt: skip


def _transit(s2: pd.DataFrame, target: str) -> Claim:
    words, parts = {}, []
    for d in [d for d in registry.ordered(s2["datapath"]) if d not in registry.of_family(Family.NONE)]:
        x = analysis.trend(analysis.excess(s2, "transit_request_p50", d, target), d, "transit_request_p50_excess",
                           target, flat_slope=analysis.FLAT_TRANSIT)  # fmt: skip
        words[d] = x.word
        f = f".{decimals((x.ci_hi - x.ci_lo) / 2)}f"
        parts.append(f"{d} {x.word} ({x.slope:{f}} ns per Service, 95% CI {x.ci_lo:{f}} to {x.ci_hi:{f}})")
    grows = any(w.startswith("grows") for w in words.values())
    return Claim("transit", "The worker's own transit time separates the datapaths that crr cannot.", "--",
                 "SYN transit at the last NodePort, excess over none: " + "; ".join(parts),
                 "slope 95% CIs of the paired excess over blocks: some grow, some flat",
                 _found(grows and "flat" in words.values()), "Fig. fig:transit")  # fmt: skip


def _nft_fix(bench: pd.DataFrame) -> Claim:
    """The 1.35 layout's cold start over 1.37's at the largest N, paired by repeat (the applies interleave)."""
    apply = bench[bench["metric"] == "apply_s"] if "metric" in bench else bench.rename(columns={"apply_s": "value"})
    nmax = int(apply["services"].max())
    at = apply[apply["services"] == nmax].pivot_table(index="repeat", columns="datapath", values="value")
    r = analysis.ratio_interval(at["nftables@1.35"] / at["nftables@1.37"])
    old, new = at["nftables@1.35"].median(), at["nftables@1.37"].median()
    return Claim("nft-fix", "kube-proxy 1.37's single-endpoint DNAT removes nftables' quadratic cold start.", "--",
                 f"one atomic apply of {nmax:,} single-endpoint Services: 1.35 layout {old:.2f} s, 1.37 layout "
                 f"{new:.2f} s (medians); 1.35/1.37 paired within {r.n} repeats: {r.estimate:.0f}× (95% CI "
                 f"{r.lo:.0f}× to {r.hi:.0f}×)", "paired-ratio 95% CI (t on log ratios)", _found(r.lo > 1, r.hi < 1),
                 "--")  # fmt: skip


def _srv6_services(M: pd.DataFrame) -> Claim:
    np_ = M[(M["target"] == "nodeport") & (M["mode"] != "none")]
    per = np_.groupby("datapath")["reachable"].agg(["any", "all"])
    ways = np_[np_["reachable"]].groupby("datapath")["mode"].apply(lambda m: ", ".join(sorted(m)))
    partial = bool((per["any"] & ~per["all"]).any())
    return Claim("srv6-services", "Services over SRv6 work per datapath only through some terminations.", "--",
                 "; ".join(f"{d}: {w}" for d, w in ways.items()) or "no termination reaches a NodePort",
                 "observed outcome of real transactions (each termination × datapath once)", _found(partial),
                 "Table tab:srv6-matrix")  # fmt: skip


def findings(s2: pd.DataFrame | None, M: pd.DataFrame | None, target: str = "last",
             bench: pd.DataFrame | None = None) -> list[Claim]:  # fmt: skip
    """What we found beyond the thesis, each with its test and a verdict computed from the data, so that a run
    whose numbers contradict a finding says so (`bench`: a `services bench` run comparing releases)."""
    out: list[Claim | None] = []
    if s2 is not None and {"iptables", "none"} <= set(s2["datapath"]):
        nmax = int(s2["services"].max())
        out += [_conntrack(s2, target), _pod_ip(s2, nmax)]
        if "programming_apply_s" in s2:
            out.append(_cold_start(s2, nmax))
        if "transit_request_p50" in set(s2["metric"]):
            out.append(_transit(s2, target))
    if bench is not None and {"nftables@1.35", "nftables@1.37"} <= set(bench["datapath"]):
        out.append(_nft_fix(bench))
    if M is not None:
        out.append(_srv6_services(M))
    return [c for c in out if c is not None]


def as_frame(claims: list[Claim]) -> pd.DataFrame:
    """The ledger as a table, one row per claim."""
    return pd.DataFrame([asdict(c) for c in claims])


def lines(claims: list[Claim]) -> list[str]:
    """One sentence per claim: the verdict first, then the measurement and the test."""
    return [f"[{c.verdict}] {c.claim} Measured: {c.measured}. Test: {c.test}." for c in claims]
