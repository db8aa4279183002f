"""The arithmetic behind the paper's numbers, on small hand-made tables (not measurements)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labtools.base.errors import LabError
from labtools.model import plan as plan_
from labtools.model.plan import block_order
from labtools.outputs import analysis


def table(rows):
    return pd.DataFrame(rows, columns=["run_id", "datapath", "services", "target", "metric", "repeat", "value"])


def line(datapath, target, metric, a, b, counts=(1, 1000, 10000), repeats=3):
    return [("r", datapath, n, target, metric, k, a + b * n + k * 0.01) for n in counts for k in range(repeats)]


def test_slope_ratio_and_verdicts():
    df = table(line("none", "pod", "crr_p50", 80, 0) + line("iptables", "last", "crr_p50", 80, 0.1)
               + line("iptables", "pod", "crr_p50", 80, 0.05) + line("ebpf", "last", "crr_p50", 82, 0.0001)
               + line("ebpf", "pod", "crr_p50", 80, 0))  # fmt: skip
    t = analysis.slope_table(df).set_index("datapath")
    assert t.loc["iptables", "ns_per_service"] == pytest.approx(100, rel=1e-3)  # 0.1 us per Service
    assert t.loc["iptables", "r2"] > 0.999
    assert t.loc["iptables", "ratio_to_none"] == pytest.approx((80.01 + 1000) / 80.01, rel=1e-3)
    assert t.loc["iptables", "pod_ratio_to_none"] == pytest.approx((80.01 + 500) / 80.01, rel=1e-3)
    assert analysis.within(df, "ebpf", "last") == pytest.approx((82.01 + 1) / 80.01, rel=1e-3)
    assert analysis.within(df, "iptables", "last") > 1.15


def test_a_run_without_none_has_slopes_but_no_ratios():
    """A real cluster has no `none` datapath: slopes still, ratios NaN, and a clear error where one is required."""
    df = table(line("iptables", "last", "crr_p50", 80, 0.1) + line("ebpf", "last", "crr_p50", 82, 0.0001))
    t = analysis.slope_table(df).set_index("datapath")
    assert t.loc["iptables", "ns_per_service"] == pytest.approx(100, rel=1e-3)
    assert t["ratio_to_none"].isna().all() and t["pod_ratio_to_none"].isna().all()
    assert analysis.within(df, "ebpf", "last") != analysis.within(df, "ebpf", "last")  # NaN
    with pytest.raises(LabError, match="no `none` baseline"):
        analysis.baseline(df, "crr_p50")


def test_flat_throughput_and_paired_ratio():
    df = table(line("iptables", "last", "throughput", 14, 0) + line("ebpf", "last", "throughput", 14, -0.0002))
    assert analysis.is_flat(df, "iptables", "last")
    assert not analysis.is_flat(df, "ebpf", "last")  # loses 2 of 14 Gbit/s over the range: > 10%
    r = analysis.paired_ratio(df, "throughput", "last", "ebpf", "iptables").set_index("services")
    assert r.loc[1, "repeats"] == 3 and r.loc[10000, "median"] == pytest.approx(12.01 / 14.01, rel=1e-6)


def test_incomplete_runs_are_refused():
    plan = plan_.Plan("r", ["none", "ebpf"], [1, 1000], ["crr"], ["last"], repeats=3)
    full = table(line("none", "pod", "crr_p50", 80, 0, (1, 1000)) + line("ebpf", "last", "crr_p50", 80, 0, (1, 1000)))
    analysis.check_complete(full, plan)
    with pytest.raises(LabError, match="1 of 12 points missing"):
        analysis.check_complete(full[~((full.datapath == "ebpf") & (full.repeat == 2) & (full.services == 1))], plan)
    with pytest.raises(LabError, match="no `none` baseline"):
        analysis.baseline(full[full.datapath != "none"], "crr_p50")


def test_a_block_design_decorrelates_n_from_time_and_records_its_seed():
    from scipy import stats as st

    from labtools.model.plan import Plan

    counts = [1, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000]
    plan = Plan(run_id="blocks", datapaths=["none", "iptables", "ebpf"], counts=counts, metrics=["crr"],
                targets=["last"], repeats=5)  # fmt: skip
    assert plan.order == "block" and plan.as_dict()["order_seed"] == plan.order_seed
    again = Plan(run_id="blocks", datapaths=["none", "iptables", "ebpf"], counts=counts, metrics=["crr"],
                 targets=["last"], repeats=5)  # fmt: skip
    assert again.points() == plan.points()  # the same run id draws the same order: a resume measures the rest
    pts = plan.points()
    for d in ("none", "iptables", "ebpf"):
        mine = [(i, c) for i, (c, _r, dp, _m, _t) in enumerate(pts) if dp == d]
        rho = st.spearmanr([c for _, c in mine], [i for i, _ in mine]).statistic
        assert abs(rho) < 0.3, (d, rho)
        for r in range(5):  # every block visits every N once
            assert sorted(c for c, rr, dp, _m, _t in pts if dp == d and rr == r) == counts
    in_order = Plan(run_id="blocks", datapaths=["none"], counts=counts, metrics=["crr"], targets=["last"],
                    repeats=5, order="repeat")  # fmt: skip
    assert "order_seed" not in in_order.as_dict()  # runs before the block design are read as they were


def test_benches_measure_in_randomised_blocks_from_a_recorded_seed():
    from labtools.experiments import bench
    from labtools.model.plan import block_order, seed_of

    counts, names = [1, 1000, 10000, 50000], ["iptables", "nftables@1.37", "ebpf"]
    params = {"counts": counts, "datapaths": names, "repeats": 3, "order": "block", "order_seed": seed_of("b-add")}
    keys = bench._order(params)
    assert keys == block_order(counts, names, 3, seed_of("b-add"))  # a resume draws the same order
    for r in range(3):  # each repeat a complete block
        assert sorted((c, n) for c, rr, n in keys if rr == r) == sorted((c, n) for c in counts for n in names)
    assert [c for c, _r, _n in keys[:: len(names)]] != counts * 3  # not N in time order
    old = {k: v for k, v in params.items() if not k.startswith("order")}  # a run recorded before the blocks
    assert bench._order(old) == [(c, r, n) for c in counts for r in range(3) for n in names]


def test_order_confounding_is_the_rank_correlation_of_n_with_time():
    rows = []
    for k, n in enumerate([1, 10, 100, 1000]):
        for d in ("a", "b"):
            rows.append({"run_id": "r", "datapath": d, "services": n, "repeat": 0, "target": "last",
                         "metric": "m", "value": 1.0, "t_start_s": 100.0 + k * 10 + (d == "b")})  # fmt: skip
    rho = analysis.order_confounding(pd.DataFrame(rows)).set_index("datapath")["rho"]
    assert rho["a"] == pytest.approx(1.0) and rho["b"] == pytest.approx(1.0)
    assert analysis.order_confounding(pd.DataFrame(rows).drop(columns="t_start_s")).empty


def _blocks(rng, drift_sd: float, noise_sd: float, excess: float, blocks: int = 20) -> pd.DataFrame:
    """none at the pod and ebpf at the last NodePort, one transit sample each per block at N = 10,000."""
    rows = []
    for r in range(blocks):
        drift = rng.normal(0, drift_sd)
        for k, (d, t, add) in enumerate((("none", "pod", 0.0), ("ebpf", "last", excess))):
            rows.append({"datapath": d, "target": t, "services": 10000, "repeat": r, "metric": "transit_request_p50",
                         "value": 2000 + drift + add + rng.normal(0, noise_sd), "t_start_s": 100.0 * r + 5 * k})
    return pd.DataFrame(rows)


def test_resolution_pairs_within_blocks_and_names_the_drift_it_removed():
    rng = np.random.default_rng(11)
    drifting = analysis.resolution(_blocks(rng, drift_sd=400, noise_sd=40, excess=300), "ebpf", 10000)
    assert drifting.excess.lo < 300 < drifting.excess.hi and drifting.excess.n == 20
    assert drifting.drift_share > 0.9 and drifting.half_width < 40  # pairing took the drift out
    assert drifting.apart_s == 5
    steady = analysis.resolution(_blocks(rng, drift_sd=0, noise_sd=40, excess=300), "ebpf", 10000)
    assert abs(steady.drift_share) < 0.5  # nothing shared: pairing removes nothing


def test_resolution_statement_says_whether_the_aim_was_met():
    from labtools.model.plan import Plan
    from labtools.outputs import verdicts

    rng = np.random.default_rng(5)
    df = _blocks(rng, drift_sd=300, noise_sd=60, excess=250)
    df = pd.concat([df, df.assign(metric="transit_reply_p50")])
    plan = Plan(run_id="res", datapaths=["none", "ebpf"], counts=[1, 10000], metrics=["transit"], targets=["last"],
                repeats=20)  # fmt: skip
    table = verdicts.resolution_table(df, plan)
    [line] = verdicts.resolution_statements(table, plan)
    assert "ebpf's transit differs from none's by +" in line and "within the ±150 ns aim" in line
    assert "(res, 20 blocks)" in line and "pairing removed" in line
    wide = verdicts.resolution_table(_blocks(rng, 0, 2000, 250).pipe(
        lambda d: pd.concat([d, d.assign(metric="transit_reply_p50")])), plan)
    assert "wider than the ±150 ns aim" in verdicts.resolution_statements(wide, plan)[0]
    assert "\\ResolutionEbpf" in verdicts.resolution_macros(table, plan)


def test_order_statements_report_each_sweep_with_more_than_one_n():
    from labtools.model.plan import Plan
    from labtools.outputs import verdicts

    rows = [{"run_id": "os-grid", "datapath": d, "services": n, "repeat": r, "target": "last", "metric": "crr_p50",
             "value": 1.0, "t_start_s": float(k)}
            for k, (n, r, d) in enumerate(block_order([1, 10, 100], ["none", "ebpf"], 3, 7))]  # fmt: skip
    grid = Plan(run_id="os-grid", datapaths=["none", "ebpf"], counts=[1, 10, 100], metrics=["crr"], targets=["last"],
                repeats=3)  # fmt: skip
    one = Plan(run_id="os-probe", datapaths=["none", "ebpf"], counts=[1], metrics=["crr"], targets=["pod"])
    old = Plan(run_id="os-old", datapaths=["none"], counts=[1, 10], metrics=["crr"], targets=["pod"], order="repeat")
    lines = verdicts.order_statements(pd.DataFrame(rows), [grid, one, old])
    assert len(lines) == 2 and lines[0].startswith("os-grid: order 'block'; rank correlation of N with measurement")
    assert "ebpf" in lines[0] and "none" in lines[0]
    assert lines[1].startswith("os-old: visited N in order 'repeat'; its samples carry no start times")


def test_an_extended_run_is_split_into_sessions_and_their_difference_is_tested(tmp_path):
    import json

    from labtools.model.plan import Plan
    from labtools.outputs import verdicts

    (tmp_path / "raw" / "ext").mkdir(parents=True)
    (tmp_path / "raw" / "ext" / "manifest.json").write_text(json.dumps(
        {"params": {"repeats": 20}, "extended": [{"repeats": [8, 20]}]}))  # fmt: skip
    assert analysis.sessions("ext", root=tmp_path) == [(0, 8), (8, 20)]
    assert analysis.sessions("nothing-here", root=tmp_path) == [(0, 0)]
    rng = np.random.default_rng(9)
    first, later = _blocks(rng, 0, 40, excess=-900, blocks=8), _blocks(rng, 0, 40, excess=0, blocks=12)
    df = pd.concat([first, later.assign(repeat=later["repeat"] + 8)])
    df = pd.concat([df, df.assign(metric="transit_reply_p50")])
    plan = Plan(run_id="ext", datapaths=["none", "ebpf"], counts=[1, 10000], metrics=["transit"], targets=["last"],
                repeats=20)  # fmt: skip
    table = verdicts.resolution_table(df, plan, spans=[(0, 8), (8, 20)])
    assert set(table["session"]) == {"all", "blocks 0-7", "blocks 8-19"}
    lines = verdicts.resolution_statements(table, plan)
    assert len(lines) == 2 and "the sessions differ" in lines[1] and "within a session only" in lines[1]
    same = verdicts.resolution_table(pd.concat([first, first.assign(repeat=first["repeat"] + 8)]).pipe(
        lambda d: pd.concat([d, d.assign(metric="transit_reply_p50")])), plan, spans=[(0, 8), (8, 16)])
    assert "the sessions do not differ" in verdicts.resolution_statements(same, plan)[1]
