"""Programming-latency outputs: the bench runs as a tidy table, and verdicts that follow the CIs."""

from __future__ import annotations

import pandas as pd
import pytest

from labtools.base.errors import LabError
from labtools.outputs import analysis, benchview, tables


def bench_csv(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def change_rows(datapath: str, change: str, values: dict[int, list[float]]) -> list[dict]:
    return [{"datapath": datapath, "services": n, "repeat": r, "change": change, "cold_apply_s": 0.1 * n / 1000,
             "change_apply_s": v, "change_e2e_s": v, "change_e2e_lo_s": v - 0.0005, "probe_hz": 2000.0}
            for n, vs in values.items() for r, v in enumerate(vs)]  # fmt: skip


def test_bench_runs_load_as_one_tidy_table(tmp_path):
    bench_csv(tmp_path / "processed" / "x-change-add.csv", change_rows("ebpf", "add", {1: [0.004, 0.005]}))
    bench_csv(tmp_path / "processed" / "x-coldstart.csv",
              [{"datapath": "nftables@1.35", "services": 1000, "repeat": 0, "render_s": 0.1, "apply_s": 0.8,
                "objects": 5}])  # fmt: skip
    df = analysis.load_bench(["x-change-add", "x-coldstart"], root=tmp_path)
    assert set(df["change"]) == {"add", "cold"} and set(df["target"]) == {"nodeport"}
    assert "objects" not in set(df["metric"]) and "render_s" not in set(df["metric"])
    cold = benchview.cold(df)
    assert sorted(cold["datapath"].unique()) == ["ebpf", "nftables@1.35"]
    with pytest.raises(LabError, match="labtools services bench"):
        analysis.load_bench(["missing"], root=tmp_path)


@pytest.mark.parametrize(("values", "word"), [([0.003, 0.004, 0.0045], "met"), ([0.006, 0.007, 0.008], "missed"),
                                              ([0.003, 0.004, 0.009], "undecided")])  # fmt: skip
def test_a_goal_is_met_only_when_the_whole_ci_is_below_it(tmp_path, values, word):
    bench_csv(tmp_path / "processed" / "g-change-add.csv", change_rows("ebpf", "add", {1: values, 10000: values}))
    lines = benchview.change_statements(analysis.load_bench(["g-change-add"], root=tmp_path))
    goal = next(x for x in lines if x.startswith("Goal: ebpf"))
    assert f"add {word}" in goal, goal


def test_one_change_is_flat_only_within_a_probe_period_over_n(tmp_path):
    flat = {1: [0.004, 0.0041, 0.0042], 50000: [0.0041, 0.0042, 0.0043]}
    grows = {1: [0.004, 0.0041, 0.0042], 50000: [0.9, 0.95, 1.0]}
    rows = change_rows("ebpf", "add", flat) + change_rows("iptables", "add", grows)
    bench_csv(tmp_path / "processed" / "f-change-add.csv", rows)
    growth = next(x for x in benchview.change_statements(analysis.load_bench(["f-change-add"], root=tmp_path))
                  if x.startswith("Against N"))  # fmt: skip
    assert "iptables grows" in growth and "ebpf flat" in growth, growth


def test_the_table_and_the_sentences_typeset(tmp_path):
    rows = change_rows("ebpf", "add", {1: [0.004, 0.005], 1000: [0.004, 0.006]})
    bench_csv(tmp_path / "processed" / "t-change-add.csv", rows)
    df = analysis.load_bench(["t-change-add"], root=tmp_path)
    tex = tables.programming(benchview.change_table(df))
    assert tex.count(" \\\\\n") == 3 and "4.5 [4.0, 5.0]" in tex  # header and two rows; ms with the CI
    expected = "\\begin{itemize}\n\\item 50\\% of N\\textasciicircum{}2\n\\end{itemize}\n"
    assert tables.sentences(["50% of N^2"]) == expected


def test_durations_are_printed_at_the_resolution_they_need():
    assert benchview._ms(2.6e-5) == "26 µs"  # an eBPF map call: not "0.0 ms"
    assert benchview._ms(0.0415) == "41.5 ms" and benchview._ms(64.6) == "64.60 s"
