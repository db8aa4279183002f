"""Sweeps are resumable: a killed sweep loses nothing it measured and re-running it re-measures nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from labtools.base.errors import LabError
from labtools.experiments import sweep
from labtools.model import plan as plan_
from tests.conftest import ROOT

ARGS = ["--datapaths", "none,ebpf,iptables-legacy", "--counts", "1,10", "--metrics", "crr", "--targets", "last,pod",
        "--repeats", "2", "--crr-transactions", "300"]  # fmt: skip


def test_plan_interleaves_datapaths_within_a_repeat():
    plan = plan_.Plan("x", ["none", "ebpf"], [1, 10], ["crr"], ["last", "pod"], repeats=2, order="repeat")
    pts = plan.points()
    assert pts[:3] == [(1, 0, "none", "crr", "pod"), (1, 0, "ebpf", "crr", "last"), (1, 0, "ebpf", "crr", "pod")]
    assert len(pts) == 2 * 2 * (1 + 2)  # `none` has no NodePort target
    with pytest.raises(LabError, match="unknown datapath"):
        plan_.Plan("x", ["ipvs"], [1], ["crr"], ["pod"]).validate()


def test_targets_per_metric_and_the_profiles():
    plan = plan_.Plan("x", ["none", "ebpf"], [1], ["throughput", "crr"], {"throughput": ["last"], "crr": ["pod"]}, 1,
                      order="repeat")
    assert plan.points() == [(1, 0, "none", "throughput", "pod"), (1, 0, "none", "crr", "pod"),
                             (1, 0, "ebpf", "throughput", "last"), (1, 0, "ebpf", "crr", "pod")]  # fmt: skip
    with pytest.raises(LabError, match=r"udp-pps \(in targets, not in metrics\)"):
        plan_.Plan("x", ["ebpf"], [1], ["crr"], {"udp-pps": ["last"]}).validate()
    quick = plan_.plans(plan_.profile_params("quick")["sweeps"], "r")
    assert [p.run_id for p in quick] == ["r-quick", "r-probe"] and max(quick[0].counts) == 3000
    assert {"handshake", "transit"} <= set(quick[0].metrics) and quick[1].metrics == ["probe-overhead"]
    full = plan_.plans(plan_.profile_params("full")["sweeps"], "r")
    assert [p.run_id for p in full] == ["r-s1", "r-s2", "r-probe", "r-equivalence", "r-resolution"]
    assert [max(p.counts) for p in full] == [1000, 10000, 1, 1000, 10000]
    assert [p.repeats for p in full] == [5, 5, 5, 10, 80]  # the equivalence and resolution sweeps need more blocks
    assert all({"handshake", "transit"} <= set(p.metrics) for p in full[:2])
    assert set(full[0].datapaths) == {"none", "iptables", "iptables-legacy", "nftables", "ebpf"}
    with pytest.raises(LabError, match="no profile 'huge'"):
        plan_.profile_params("huge")


class FailingRig:
    """A rig that breaks while programming, and optionally while cleaning up."""

    def __init__(self, close_fails: bool):
        self.close_fails, self.closed = close_fails, False

    def check(self):
        pass

    def provenance(self):
        return {"rig": "failing"}

    def workload(self, count, seed):
        from labtools.model import services

        return services.build(count, seed=seed)

    def endpoints(self):
        return None

    def use(self, datapath, workload, key=None):
        raise LabError("the datapath broke")

    def close(self):
        self.closed = True
        if self.close_fails:
            raise RuntimeError("the API went away")


@pytest.mark.parametrize("close_fails", [False, True])
def test_a_failed_sweep_cleans_up_and_reports_its_own_error(tmp_path, capsys, close_fails):
    from labtools.lab import Lab

    rig = FailingRig(close_fails)
    plan = plan_.Plan("fail", ["ebpf"], [1], ["crr"], ["last"], repeats=1)
    with pytest.raises(LabError, match="the datapath broke"):  # not the cleanup's error
        sweep.run(Lab(), plan, tmp_path, progress=False, rig=rig)
    assert rig.closed
    assert ("cleaning up after the failure failed as well: the API went away" in capsys.readouterr().err) == close_fails


def test_killed_sweep_resumes_without_remeasuring(lab, tmp_path):
    out = tmp_path / "raw" / "resume"
    cmd = [sys.executable, "-m", "labtools", "sweep", "-p", "pyt", "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    points = out / "points"
    deadline = time.monotonic() + 120
    while len(list(points.glob("*.json"))) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in points.glob("*.json")}
    total = 2 * 2 * (1 + 2 + 2)  # counts x repeats x (none:pod, ebpf:last+pod, legacy:last+pod)
    assert 4 <= len(before) < total, "the sweep should have been killed midway"
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{total - len(before)} new points measured, {len(before)} already there" in res.stdout
    after = {p.name: p.stat().st_mtime_ns for p in points.glob("*.json")}
    assert len(after) == total
    assert all(after[name] == mtime for name, mtime in before.items())  # finished points untouched
    table = pd.read_csv(tmp_path / "processed" / "resume.csv")
    assert len(table) == total * 8  # crr: p50, p90, p99, rate, and the samples' modes, main mode share, drift, drifting
    assert set(table.datapath) == {"none", "ebpf", "iptables-legacy"} and set(table.repeat) == {0, 1}
    # again: nothing left to do
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert f"0 new points measured, {total} already there" in res.stdout
    assert not [p for p in os.listdir(points) if p.endswith(".tmp")]
