"""The claims ledger: every claim of the original thesis, tested against our measurements, and our own findings.

Each claim names the thesis' evidence, what we measured, the statistical test and its result, and a verdict
that follows the test: *reproduced*, *refuted*, *reproduced with an explanation* (the observation holds, but
for a reason the thesis did not give), or *not shown* (the test cannot decide). Everything is computed from
the tidy tables (`outputs.analysis`) and the SRv6 run's tables (`outputs.srv6view`); notebook 03 prints
the rows and writes ``paper/tables/claims.tex`` and ``findings.tex`` from them.

The tests:

- **TOST** (two one-sided t-tests) for "no difference": on paired log ratios within each repeat, equivalence
  within ±`MARGIN` is shown when both one-sided p-values are below 0.05; for "adds no cost", one of them
  (non-inferiority: the paired excess lies below +`TRANSIT_MARGIN_NS`);
- **Brown–Forsythe** (Levene's test around the median) for "wider spread": on each sample's deviation from
  its own (datapath, N) median, so that the N-to-N changes do not count as spread;
- **a slope's 95% CI** (`analysis.trend`) for "grows with N", and per-N **paired-ratio CIs**
  (`analysis.paired_ratio_ci`) for "a difference shows only at N = ...";
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

MARGIN = 0.05  # equivalence margin for "no difference": ±5% (of throughput), the band `analysis` calls flat
ALPHA = 0.05
TRANSIT_MARGIN_NS = 500.0  # "adds no cost": within ±0.5 µs of none, a quarter of the bare worker's transit


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


def _ratios(df: pd.DataFrame, metric: str, num: str, den: str, target: str) -> pd.Series:
    sub = df[df["metric"] == metric]
    a = sub[(sub["datapath"] == num) & (sub["target"] == target)].set_index(["services", "repeat"])["value"]
    b = sub[(sub["datapath"] == den) & (sub["target"] == target)].set_index(["services", "repeat"])["value"]
    return (a / b).dropna()


def no_throughput_difference(s1: pd.DataFrame | None, target: str = "first") -> Claim:
    """Thesis claim 1: no throughput difference between iptables and eBPF for N <= 1000 (scenario 1)."""
    claim, thesis = "No throughput difference between iptables and eBPF for N ≤ 1,000 (scenario 1).", \
        "iperf3 TCP, Figs. 33-35: the eBPF/iptables ratio stays near 1"  # fmt: skip
    if s1 is None or not {"ebpf", "iptables"} <= set(s1["datapath"]):
        return _missing("thr-s1", claim, thesis, "scenario 1 with ebpf and iptables", "Fig. fig:ratio")
    r = _ratios(s1, "throughput", "ebpf", "iptables", target)
    mean, t, p = tost_paired_log(r.to_numpy())
    verdict = "reproduced" if p < ALPHA else "not shown"
    return Claim("thr-s1", claim, thesis,
                 f"eBPF/iptables throughput, geometric mean of {len(r)} ratios paired within repeats: {mean:.3f}",
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
                 f"({len(e)} and {len(i)} samples)", f"Brown-Forsythe: W = {w:.2f}, p = {p:.3g}", verdict,
                 "Fig. fig:box")  # fmt: skip


def difference_only_at_high_n(s2: pd.DataFrame | None, target: str = "last") -> Claim:
    """Thesis claim 3: in scenario 2 a throughput difference shows only at 9,000-10,000 Services."""
    claim, thesis = "In scenario 2, a throughput difference shows only at N = 9,000-10,000.", \
        "iperf3 TCP to the last NodePort, Figs. 36-39"  # fmt: skip
    if s2 is None or not {"ebpf", "iptables"} <= set(s2["datapath"]):
        return _missing("thr-s2", claim, thesis, "scenario 2 with ebpf and iptables", "Fig. fig:ratio")
    ci = analysis.paired_ratio_ci(s2, "throughput", "ebpf", "iptables", target)
    off = ci[(ci["ci_lo"] > 1) | (ci["ci_hi"] < 1)]["services"].astype(int).tolist()
    high = {n for n in ci["services"].astype(int) if n >= 9000}
    if not high:  # the claim is about N = 9,000-10,000: a sweep that stops short cannot test it
        return _missing("thr-s2", claim, thesis, f"N only up to {int(ci['services'].max()):,}", "Fig. fig:ratio")
    if off and set(off) <= high:
        verdict = "reproduced"
    elif not off:
        verdict = "refuted"  # no N shows a difference at all
    else:
        verdict = "refuted" if not set(off) & high else "not shown"
    where = ", ".join(f"{n:,}" for n in off) or "none"
    return Claim("thr-s2", claim, thesis,
                 f"eBPF/iptables throughput per N, paired within repeats: the 95% CI excludes 1 at N = {where} "
                 f"(of {len(ci)} values of N)", "per-N paired-ratio 95% bootstrap CIs", verdict,
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
    claim, thesis = "The pod is reachable over SRv6.", "ping and iperf3 through the tunnel (§11.5)"
    if M is None or _cells(M, mode, "pod").empty:
        return _missing("srv6-pod", claim, thesis, f"matrix without {mode}", "Table tab:srv6-matrix")
    c = _cells(M, mode, "pod")
    ok = sorted(c[c["reachable"]]["datapath"])
    bad = sorted(c[~c["reachable"]]["datapath"])
    verdict = "reproduced" if not bad else ("reproduced with an explanation" if ok else "refuted")
    return Claim("srv6-pod", claim, thesis,
                 f"one TCP transaction to the pod IP through {mode}: completes with {', '.join(ok) or 'no datapath'}"
                 + (f"; not with {', '.join(bad)} (its reply is dropped, see the matrix notes)" if bad else ""),
                 "observed outcome of real transactions", verdict, "Table tab:srv6-matrix")  # fmt: skip


def nodeport_unreachable(M: pd.DataFrame | None, mode: str = "end-dt6") -> Claim:
    """Thesis claim 7: the NodePort is not reachable over SRv6."""
    claim, thesis = "The NodePort is not reachable over SRv6.", "iperf3 to the NodePort through the tunnel (§11.5)"
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
    verdict = "reproduced with an explanation" if pps.ci_hi < 0 and thr.word != "grows linearly" else "not shown"
    return Claim("pps", claim, thesis,
                 f"iptables at the {target} NodePort: TCP throughput {thr.word} (change over the N range: 95% CI "
                 f"{thr.change[0]:+.1%} to {thr.change[1]:+.1%}); new UDP flows per second {pps.word}, "
                 f"{pps.slope:.1f} packets/s per Service (95% CI {pps.ci_lo:.1f} to {pps.ci_hi:.1f}): each new flow "
                 "walks the rules, a TCP stream only its first packet", "slope 95% CIs (cluster bootstrap)",
                 verdict, "Fig. fig:udp")  # fmt: skip


def scenarios(df: pd.DataFrame, plans: Sequence[Plan]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The records of the thesis' scenario 1 (throughput to the first Service) and scenario 2 (the headline
    sweep: crr to the largest N, throughput to the last NodePort) among `plans`; None where not measured."""
    thr = [p for p in plans if "throughput" in p.metrics]
    s1 = next((p for p in thr if p.targets_of("throughput")[0] == "first"), None)
    crr = [p for p in plans if "crr" in p.metrics]
    s2 = max(crr, key=lambda p: max(p.counts)) if crr else None
    a, b = (df[df["run_id"] == p.run_id] if p is not None else None for p in (s1, s2))
    return a, b


def thesis_claims(s1: pd.DataFrame | None, s2: pd.DataFrame | None, comparison: pd.DataFrame | None,
                  M: pd.DataFrame | None, U: pd.DataFrame | None) -> list[Claim]:  # fmt: skip
    """The original thesis' claims, in its order, each tested against our data (None: not measured)."""
    return [no_throughput_difference(s1), wider_spread(s1), difference_only_at_high_n(s2), no_cost_at_small_n(s2),
            header_fields(comparison), pod_reachable(M), nodeport_unreachable(M), udp_to_tcp_service(U),
            tcp_limits_pps(s2)]  # fmt: skip


# -- our own findings ----------------------------------------------------------------------------------------------


def findings(s2: pd.DataFrame | None, M: pd.DataFrame | None, target: str = "last",
             bench: pd.DataFrame | None = None) -> list[Claim]:  # fmt: skip
    """What we found beyond the thesis, each with its test (`bench`: a `services bench` run comparing releases)."""
    out = []
    if s2 is not None and {"iptables", "none"} <= set(s2["datapath"]):
        nmax = int(s2["services"].max())
        crr = analysis.trend(s2, "iptables", "crr_p50", target)
        thr = analysis.trend(s2, "iptables", "throughput", target)
        out.append(Claim("conntrack", "Conntrack hides the rule walk from bulk throughput.", "--",
                         f"iptables: connection setup {crr.word}, {crr.slope * 1e3:.1f} ns per Service (95% CI "
                         f"{crr.ci_lo * 1e3:.1f} to {crr.ci_hi * 1e3:.1f}); throughput {thr.word}",
                         "slope 95% CIs", "found", "Fig. fig:crr"))  # fmt: skip
        pod = analysis.paired_ratio_ci(s2, "crr_p50", "iptables", "none", "pod", "pod")
        at = pod[pod["services"] == nmax]
        if len(at):
            a = at.iloc[0]
            out.append(Claim("pod-ip", "Under iptables, traffic to pod IPs (not Services) pays for the walk too.",
                             "--", f"crr to the pod IP at N = {nmax:,}: {a['median']:.2f} × none (95% CI "
                             f"{a['ci_lo']:.2f} to {a['ci_hi']:.2f})", "paired-ratio 95% bootstrap CI",
                             "found" if a["ci_lo"] > 1 else "not shown", "Fig. fig:crr"))  # fmt: skip
        if "programming_apply_s" in s2:
            apply = s2[s2["services"] == nmax].groupby("datapath")["programming_apply_s"].median()
            parts = ", ".join(f"{d} {apply[d]:.1f} s" for d in apply.index if d != "none")
            out.append(Claim("cold-start", f"Programming {nmax:,} Services from scratch costs nftables most.",
                             "--", f"one atomic apply at N = {nmax:,}: {parts}. The kernel names every anonymous "
                             "set (one verdict map per Service) by scanning all sets of the table "
                             "(nf_tables_set_alloc_name), quadratic in N", "measured apply time (one per N)",
                             "found", "Chap. ch:sweeps"))  # fmt: skip
        if "transit_request_p50" in set(s2["metric"]):
            parts = []
            kinds = [d for d in registry.ordered(s2["datapath"]) if d not in registry.of_family(Family.NONE)]
            for d in kinds:
                x = analysis.trend(analysis.excess(s2, "transit_request_p50", d, target), d,
                                   "transit_request_p50_excess", target, flat_slope=analysis.FLAT_TRANSIT)  # fmt: skip
                parts.append(f"{d} {x.word} ({x.slope:.3f} ns per Service, 95% CI {x.ci_lo:.3f} to {x.ci_hi:.3f})")
            out.append(Claim("transit", "The worker's own transit time separates the datapaths that crr cannot.",
                             "--", "SYN transit at the last NodePort, excess over none: " + "; ".join(parts),
                             "slope 95% CIs of paired excess", "found", "Fig. fig:transit"))  # fmt: skip
    if bench is not None and {"nftables@1.35", "nftables@1.37"} <= set(bench["datapath"]):
        apply = bench[bench["metric"] == "apply_s"] if "metric" in bench else bench.rename(columns={"apply_s": "value"})
        nmax = int(apply["services"].max())
        at = apply[apply["services"] == nmax].groupby("datapath")["value"]
        old, new = at.median()["nftables@1.35"], at.median()["nftables@1.37"]
        lo, hi = analysis.median_ci(at.get_group("nftables@1.35").to_numpy() / float(new))[1:]
        out.append(Claim("nft-fix", "kube-proxy 1.37's single-endpoint DNAT removes nftables' quadratic cold start.",
                         "--", f"one atomic apply of {nmax:,} single-endpoint Services: 1.35 layout {old:.2f} s, 1.37 "
                         f"layout {new:.2f} s, {old / new:.0f}× (each release's {at.size().min()} applies interleaved; "
                         f"95% CI of the ratio to 1.37's median {lo:.0f}× to {hi:.0f}×)", "medians of interleaved "
                         "applies, bootstrap CI", "found", "--"))  # fmt: skip
    if M is not None:
        ways = M[(M["target"] == "nodeport") & M["reachable"] & (M["mode"] != "none")]
        per = ways.groupby("datapath")["mode"].apply(lambda m: ", ".join(sorted(m)))
        out.append(Claim("srv6-services", "Services over SRv6 work per datapath only through some terminations.",
                         "--", "; ".join(f"{d}: {w}" for d, w in per.items()) or "no termination reaches a NodePort",
                         "observed outcome of real transactions", "found", "Table tab:srv6-matrix"))  # fmt: skip
    return out


def as_frame(claims: list[Claim]) -> pd.DataFrame:
    """The ledger as a table, one row per claim."""
    return pd.DataFrame([asdict(c) for c in claims])


def lines(claims: list[Claim]) -> list[str]:
    """One sentence per claim: the verdict first, then the measurement and the test."""
    return [f"[{c.verdict}] {c.claim} Measured: {c.measured}. Test: {c.test}." for c in claims]
