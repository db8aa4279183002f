"""The claims ledger (`labtools.outputs.claims`): each test's verdict follows its statistic, on data whose answer is
known by construction, and a claim without its input says so instead of guessing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labtools.outputs import claims, tables


def _throughput(ebpf_scale: float, ebpf_spread: float, ns=(1, 500, 1000), repeats=8, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        for r in range(repeats):
            base = 10.0 + rng.normal(0, 0.05)  # the same minute of the machine for both datapaths
            rows += [{"datapath": "iptables", "services": n, "target": "first", "repeat": r, "metric": "throughput",
                      "value": base + rng.normal(0, 0.1)},
                     {"datapath": "ebpf", "services": n, "target": "first", "repeat": r, "metric": "throughput",
                      "value": base * ebpf_scale + rng.normal(0, ebpf_spread)}]  # fmt: skip
    return pd.DataFrame(rows)


def test_tost_shows_equivalence_only_within_the_margin():
    rng = np.random.default_rng(1)
    same = np.exp(rng.normal(0, 0.01, 40))
    assert claims.tost_paired_log(same)[2] < 0.05
    shifted = np.exp(rng.normal(np.log(1.08), 0.01, 40))  # 8% apart: outside ±5%
    assert claims.tost_paired_log(shifted)[2] > 0.5


def test_throughput_claims_follow_their_tests():
    assert claims.no_throughput_difference(_throughput(1.0, 0.1)).verdict == "reproduced"
    assert claims.no_throughput_difference(_throughput(1.2, 0.1)).verdict == "not shown"
    assert claims.wider_spread(_throughput(1.0, 0.6)).verdict == "reproduced"
    assert claims.wider_spread(_throughput(1.0, 0.02)).verdict == "refuted"  # eBPF the narrower one


def test_a_difference_only_at_high_n():
    df = _throughput(1.0, 0.05, ns=(1, 5000, 9000, 10000)).assign(target="last")
    high = df["datapath"].eq("ebpf") & df["services"].ge(9000)
    df.loc[high, "value"] *= 1.3
    c = claims.difference_only_at_high_n(df)
    assert c.verdict == "reproduced" and "N = 9,000: eBPF higher" in c.measured
    assert "N = 10,000: eBPF higher" in c.measured
    assert "Holm" in c.test
    low = df.copy()
    low.loc[low["datapath"].eq("ebpf") & low["services"].eq(5000), "value"] *= 1.3
    assert claims.difference_only_at_high_n(low).verdict != "reproduced"
    short = df[df["services"] < 9000]  # a quick sweep stops short of the claim's N
    assert claims.difference_only_at_high_n(short).verdict == "not measured"


def test_udp_claim_needs_kube_proxy_dropping_and_old_cilium_delivering():
    cases = (("iptables", "kube-proxy", 0.0), ("nftables", "kube-proxy", 0.0), ("ebpf", "Cilium 1.13", 1.0),
             ("ebpf", "Cilium 1.17", 0.0))  # fmt: skip
    rows = [{"datapath": d, "release": rel, "repeat": r, "value": v} for d, rel, v in cases for r in range(3)]
    c = claims.udp_to_tcp_service(pd.DataFrame(rows))
    assert c.verdict == "reproduced with an explanation" and "Cilium 1.13" in c.measured
    rows[0]["value"] = rows[1]["value"] = rows[2]["value"] = 1.0  # iptables delivers: the claim fails
    assert claims.udp_to_tcp_service(pd.DataFrame(rows)).verdict == "refuted"


def test_missing_inputs_are_said_not_guessed():
    ledger = claims.thesis_claims(None, None, None, None, None)
    assert len(ledger) == 10 and {c.verdict for c in ledger} == {"not measured"}
    assert all("not measured in this run" in c.measured for c in ledger)


def test_the_ledger_table_links_its_references():
    c = claims.Claim("k", "a claim_with & specials", "thesis", "measured 5%", "t-test", "reproduced", "Fig. fig:crr")
    tex = tables.claims(claims.as_frame([c]))
    assert r"Fig.~\ref{fig:crr}" in tex and r"claim\_with \& specials" in tex and r"5\%" in tex
    assert r"\raggedright" in tex and tex.count(" & ") == 5 * 2  # header and one row, six columns each


def test_transit_cost_claim_uses_the_stated_margin():
    rows = []
    for r in range(6):
        rows += [{"datapath": "none", "services": 1, "target": "pod", "repeat": r, "metric": "transit_request_p50",
                  "value": 2000.0 + 10 * r},
                 {"datapath": "ebpf", "services": 1, "target": "last", "repeat": r, "metric": "transit_request_p50",
                  "value": 2050.0 + 12 * r}]  # fmt: skip
    assert claims.no_cost_at_small_n(pd.DataFrame(rows)).verdict == "reproduced"  # +50..110 ns: within +500
    far = pd.DataFrame(rows)
    far.loc[far["datapath"] == "ebpf", "value"] += 5000
    assert claims.no_cost_at_small_n(far).verdict == "refuted"
    cheaper = pd.DataFrame(rows)
    cheaper.loc[cheaper["datapath"] == "ebpf", "value"] -= 1500
    c = claims.no_cost_at_small_n(cheaper)
    assert c.verdict == "reproduced with an explanation" and "faster than the plain path" in c.measured


def test_one_borderline_n_neither_refutes_nor_shows_after_holm():
    """One N out of many with a small difference (p about 0.01 alone) does not survive Holm's correction over
    the values of N: the claim is not shown, where a per-N test without correction called it refuted."""
    df = _throughput(1.0, 0.05, ns=(1, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000),
                     repeats=5).assign(target="last")
    rng = np.random.default_rng(3)
    at7 = df["datapath"].eq("ebpf") & df["services"].eq(7000)
    df.loc[at7, "value"] *= 1.0 + 0.012 + rng.normal(0, 0.006, at7.sum())
    c = claims.difference_only_at_high_n(df)
    assert c.verdict == "not shown" and "no N differs" in c.measured


def _crr(ebpf: float, repeats: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for r in range(repeats):
        for n in (1, 10000):
            for d, v in (("iptables", 60.0 + 0.03 * n), ("ebpf", ebpf)):
                rows.append({"datapath": d, "services": n, "target": "last", "repeat": r, "metric": "crr_p50",
                             "value": v * rng.lognormal(0, 0.02)})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_thesis_conclusion_follows_the_paired_ratios_at_scale():
    assert claims.ebpf_better_at_scale(_crr(60.0)).verdict == "reproduced with an explanation"  # setup only
    assert claims.ebpf_better_at_scale(_crr(2000.0)).verdict == "refuted"  # eBPF slower at 10k
    assert claims.ebpf_better_at_scale(None).verdict == "not measured"


def test_a_finding_is_computed_and_can_fail():
    """'Programming costs nftables most' is a test over the applies, so data that contradict it say so."""
    rows = []
    for r in range(3):
        for n in (1, 3000):
            for d, s in (("none", 0.0), ("iptables", 1.0), ("nftables", 0.7)):
                for m, v in (("crr_p50", 60.0 + r), ("throughput", 10.0 + r)):
                    rows.append({"datapath": d, "services": n, "target": "last" if d != "none" else "pod",
                                 "repeat": r, "metric": m, "value": v,
                                 "programming_apply_s": s * n / 3000 * (1 + 0.05 * r)})  # fmt: skip
    c = next(f for f in claims.findings(pd.DataFrame(rows), None) if f.key == "cold-start")
    assert c.verdict == "refuted", c
    assert "kube-proxy 1.35's layout" in c.claim and "nf_tables_set_alloc_name" in c.measured  # unrecorded: 1.35
    later = claims.findings(pd.DataFrame(rows).assign(kube_proxy_version="1.37"), None)
    c = next(f for f in later if f.key == "cold-start")
    assert "kube-proxy 1.37's layout" in c.claim and "nf_tables_set_alloc_name" not in c.measured
    table = tables.claims(claims.as_frame(later), thesis=False)
    assert "verdict" in table.splitlines()[2] and "refuted" in table  # the findings show their verdicts


def test_an_equivalence_claim_states_what_its_design_could_decide():
    rng = np.random.default_rng(11)
    noisy, tight = np.exp(rng.normal(0, 0.3, 55)), np.exp(rng.normal(0, 0.01, 55))
    p_noisy, need_noisy, small_noisy = claims.tost_design(noisy)
    p_tight, need_tight, small_tight = claims.tost_design(tight)
    assert p_noisy < 0.5 < 0.9 < p_tight and need_noisy > 55 > need_tight and small_noisy > 0.05 > small_tight
    c = claims.no_throughput_difference(_throughput(1.0, 3.0))
    assert c.verdict == "not shown" and "power" in c.measured and "90% needs about" in c.measured


def test_scenario_1_is_the_sweep_with_the_most_ebpf_iptables_pairs():
    from labtools.model.plan import Plan

    grid = Plan(run_id="c-s1", datapaths=["none", "iptables", "ebpf"], counts=[1, 500, 1000], metrics=["throughput"],
                targets=["first"], repeats=5)  # fmt: skip
    eq = Plan(run_id="c-equivalence", datapaths=["iptables", "ebpf"], counts=[1, 500, 1000], metrics=["throughput"],
              targets=["first"], repeats=12)  # fmt: skip
    df = pd.concat([_throughput(1.0, 0.1, repeats=5).assign(run_id="c-s1"),
                    _throughput(1.0, 0.1, repeats=12).assign(run_id="c-equivalence")])  # fmt: skip
    s1, s2 = claims.scenarios(df, [grid, eq])
    assert set(s1["run_id"]) == {"c-equivalence"} and s2 is None
    assert "(c-equivalence)" in claims.no_throughput_difference(s1).measured
    only_grid, _ = claims.scenarios(df, [grid])
    assert set(only_grid["run_id"]) == {"c-s1"}
