"""One owner of the worker, one command per lab, and the model releases as run parameters.

- What `measure` records is what the worker holds: every command that reprograms the worker keeps the lab's
  record through `datapaths.worker.Worker`, and without a record `measure` refuses (`WorkerStateUnknown`).
- A second command on a lab in use is refused at once, naming the holder; a dead holder's lock is taken over.
- The kube-proxy layout, the Cilium release and the pod attachment are parameters of sweeps and benches, and a
  run recorded before they were is read as it was measured.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from labtools import datapaths
from labtools.base import paths
from labtools.base.errors import LabError
from labtools.experiments import releases, sweep
from labtools.lab.lock import LabBusy, LabLock
from labtools.lab.state import ServicesState
from labtools.model import plan as plan_
from tests.conftest import ROOT, fresh_lab, lab_fixture

PREFIX = "pyw"


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labtools", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip


# ----------------------------------------------------------------------------- the lock, without a lab

HOLD = """
import sys, time
from pathlib import Path
from labtools.lab.lock import LabLock
LabLock(Path(sys.argv[1]), "t").acquire("labtools sweep --run-id first")
print("held", flush=True)
time.sleep(60)
"""


def _holder(state: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    proc = _holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(LabBusy, match=rf"in use by `labtools sweep --run-id first` \(pid {proc.pid}\)"):
            LabLock(tmp_path, "t").acquire("labtools sweep --run-id second")
        assert time.monotonic() - t0 < 1  # at once, no waiting
    finally:
        proc.kill()
        proc.wait()
    notes = []
    lock = LabLock(tmp_path, "t", note=notes.append)
    with lock.hold("labtools measure"):  # kill -9 released the flock; its line says who died holding it
        assert notes and f"pid {proc.pid}" in notes[0] and "which is gone" in notes[0]
        assert lock.holder() == (os.getpid(), "labtools measure")
        with lock.hold():  # re-entrant in one process
            pass
        assert lock.held
    assert not lock.held and lock.holder() is None  # released cleanly: nothing to take over
    notes.clear()
    with LabLock(tmp_path, "t", note=notes.append).hold("again"):
        assert not notes


def test_a_stale_line_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "lock").write_text(f"{dead.pid} labtools services apply -d iptables\n")
    notes = []
    with LabLock(tmp_path, "t", note=notes.append).hold("labtools sweep"):
        assert len(notes) == 1 and "labtools services apply -d iptables" in notes[0]


# ----------------------------------------------------------------------------- releases of older runs

REFERENCE = ROOT / "data" / "raw"


def _copy_manifest(run: str, root: Path) -> dict:
    (root / "raw" / run).mkdir(parents=True)
    shutil.copy(REFERENCE / run / "manifest.json", root / "raw" / run / "manifest.json")
    return json.loads((REFERENCE / run / "manifest.json").read_text())


@pytest.mark.skipif(not (REFERENCE / "reference-s1").exists(), reason="no committed reference run")
def test_older_runs_are_read_as_they_were_measured():
    def under(run: str) -> dict:
        return releases.measured_under(json.loads((REFERENCE / run / "manifest.json").read_text()))

    # reference-s1/s2/probe: commit b9632bd, before the layout was a parameter: the 1.35 layout, pod plain
    for run in ("reference-s1", "reference-s2", "reference-probe"):
        assert under(run) == {"kube_proxy_version": "1.35", "cilium_version": "1.17", "cni": "plain"}, run
    assert under("reference-change-endpoints") == {"kube_proxy_version": "1.37", "cilium_version": "1.17",
                                                   "cni": "plain"}  # fmt: skip
    # without git (or an unknown commit) the run's time decides
    man = json.loads((REFERENCE / "reference-s1" / "manifest.json").read_text())
    man["provenance"]["git_commit"] = "0" * 40
    assert releases.measured_under(man)["kube_proxy_version"] == "1.35"


@pytest.mark.skipif(not (REFERENCE / "reference-s1").exists(), reason="no committed reference run")
def test_a_resume_with_other_releases_is_refused(tmp_path):
    man = _copy_manifest("reference-s1", tmp_path)
    params = man["params"]
    as_measured = plan_.Plan(run_id="reference-s1", **params, kube_proxy_version="1.35", cni="plain")
    sweep.recorder(as_measured, tmp_path).open(dict)  # the same releases: it resumes
    for other, differ in (({"kube_proxy_version": "1.37", "cni": "plain"}, "kube_proxy_version"),
                          ({"kube_proxy_version": "1.35", "cni": "cilium"}, "cni"),
                          ({"kube_proxy_version": "1.35", "cni": "plain", "cilium_version": "1.13"}, "cilium_version")):
        plan = plan_.Plan(run_id="reference-s1", **params, **other)
        with pytest.raises(LabError, match=rf"exists with other parameters.*\n  differ: {differ}\n"):
            sweep.recorder(plan, tmp_path).open(dict)
    assert json.loads((tmp_path / "raw" / "reference-s1" / "manifest.json").read_text()) == man  # untouched


# ----------------------------------------------------------------------------- in the lab (root)


@lab_fixture(scope="module")
def wlab():
    yield from fresh_lab(PREFIX)


def _record(lab) -> ServicesState | None:
    return lab.state.get(ServicesState)


def _measured(tmp_path: Path, run_id: str) -> tuple[str, int]:
    res = cli("measure", "-p", PREFIX, "-m", "crr", "-t", "pod", "-o", str(tmp_path), "--run-id", run_id)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(tmp_path / "processed" / f"{run_id}.csv")
    return df["datapath"].iloc[0], int(df["services"].iloc[0])


def test_a_fresh_lab_holds_none_and_says_so(wlab, tmp_path):
    rec = _record(wlab)
    assert rec is not None and rec.datapath == "none" and rec.cni == wlab.pod_attachment()
    assert _measured(tmp_path, "fresh") == ("none", 0)


@pytest.mark.parametrize("other", ["sweep", "bench", "udp-check"])
def test_measure_records_what_the_worker_holds_after_another_command(wlab, tmp_path, other):
    """The mislabel case: apply iptables/10, then another command reprograms the worker, then measure."""
    assert cli("services", "apply", "-p", PREFIX, "-d", "iptables", "-n", "10").returncode == 0
    assert (_record(wlab).datapath, _record(wlab).services) == ("iptables", 10)
    data = {"LABTOOLS_DATA": str(tmp_path)}
    argv = {"sweep": ["sweep", "--run-id", "sw", "--datapaths", "ebpf", "--counts", "3", "--metrics", "crr",
                      "--targets", "pod", "--repeats", "1", "--crr-transactions", "100"],
            "bench": ["services", "bench", "--counts", "3", "--datapaths", "ebpf", "--repeats", "1", "--run-id", "b"],
            "udp-check": ["udp-check", "--repeats", "1", "--packets", "100", "--run-id", "u"]}[other]  # fmt: skip
    res = cli(*argv, "-p", PREFIX, env=data)
    assert res.returncode == 0, res.stderr
    rec = _record(wlab)
    assert (rec.datapath, rec.services) == ("none", 0)  # each leaves no service datapath, and records it
    node = datapaths.node_of(wlab.inventory)
    filters = wlab.host(node.name).run(["tc", "filter", "show", "dev", node.uplink, "ingress"]).stdout
    assert "bpf" not in filters  # the worker really holds nothing
    assert _measured(tmp_path, f"after-{other}") == ("none", 0)  # not iptables/10


def test_a_refused_release_changes_nothing(wlab):
    assert cli("services", "apply", "-p", PREFIX, "-d", "ebpf", "-n", "4", "--cilium-version", "1.13").returncode == 0
    before = _record(wlab)
    assert (before.datapath, before.cilium_version, before.cni) == ("ebpf", "1.13", wlab.pod_attachment())
    res = cli("services", "apply", "-p", PREFIX, "-d", "ebpf", "-n", "4", "--cilium-version", "0.9")
    assert res.returncode == 2 and "not modelled" in res.stderr
    assert _record(wlab) == before  # the record of what the worker still holds is kept
    assert cli("services", "apply", "-p", PREFIX, "-d", "none").returncode == 0


def test_without_a_record_measure_refuses_by_name(wlab):
    wlab.state.forget(ServicesState)
    res = cli("measure", "-p", PREFIX, "-t", "pod")
    assert res.returncode == 2 and "holds is unknown" in res.stderr
    assert f"services apply --prefix {PREFIX}" in res.stderr
    assert cli("services", "apply", "-p", PREFIX, "-d", "none").returncode == 0


def test_two_sweeps_on_one_lab_the_second_is_refused_at_once(wlab, tmp_path):
    data = {"LABTOOLS_DATA": str(tmp_path)}
    # long enough (minutes) that the first sweep still holds the lock when it is killed below
    args = ["--datapaths", "none,ebpf", "--counts", "1", "--metrics", "crr", "--targets", "pod", "--repeats", "1000",
            "--crr-transactions", "200", "-p", PREFIX]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "labtools", "sweep", "--run-id", "one", *args], cwd=ROOT,
                             env={**os.environ, **data}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = LabLock(paths.state_dir(PREFIX), PREFIX)
    deadline = time.monotonic() + 30
    while (lock.holder() or (0,))[0] != first.pid and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert lock.holder() == (first.pid, "labtools sweep --run-id one " + " ".join(args))
        t0 = time.monotonic()
        res = cli("sweep", "--run-id", "two", *args, env=data)
        # at once: the lock is tried without waiting (the unit test above: under a second); what this takes is
        # the interpreter's start on a machine the first sweep keeps busy
        assert res.returncode == 2 and time.monotonic() - t0 < 60
        assert f"lab {PREFIX} is in use by `labtools sweep --run-id one" in res.stderr
        assert f"(pid {first.pid})" in res.stderr
        assert not (tmp_path / "raw" / "two").exists()  # refused before anything
        for busy in (["measure", "-t", "pod"], ["services", "apply", "-d", "iptables"], ["lab", "down"]):
            res = cli(*busy, "-p", PREFIX)
            assert res.returncode == 2 and "is in use by" in res.stderr, busy
        res = cli("lab", "status", "-p", PREFIX)  # reading is free
        assert res.returncode == 0, res.stderr
        res = cli("services", "drops", "-p", PREFIX)
        assert "in use" not in res.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # no clean-up: the next command takes the lock over
        first.wait()
    assert first.returncode == -signal.SIGKILL  # it was still sweeping, holding the lock
    res = cli("services", "apply", "-p", PREFIX, "-d", "none")
    assert res.returncode == 0, res.stderr
    assert "took over the lock of `labtools sweep --run-id one" in res.stderr and f"pid {first.pid}" in res.stderr


def test_a_sweep_records_its_releases_and_refuses_others_on_resume(wlab, tmp_path):
    data = {"LABTOOLS_DATA": str(tmp_path)}
    args = ["sweep", "--run-id", "rel", "--datapaths", "nftables", "--counts", "2", "--metrics", "crr", "--targets",
            "pod", "--repeats", "1", "--crr-transactions", "100", "-p", PREFIX]  # fmt: skip
    res = cli(*args, "--kube-proxy-version", "1.35", env=data)
    assert res.returncode == 0, res.stderr
    man = json.loads((tmp_path / "raw" / "rel" / "manifest.json").read_text())
    assert man["params"]["kube_proxy_version"] == "1.35" and man["params"]["cilium_version"] == "1.17"
    assert man["params"]["cni"] == wlab.pod_attachment() == man["provenance"]["cni"]
    point = json.loads(next((tmp_path / "raw" / "rel" / "points").glob("*.json")).read_text())
    assert point["releases"] == {"kube_proxy_version": "1.35", "cilium_version": "1.17", "cni": man["params"]["cni"]}
    table = pd.read_csv(tmp_path / "processed" / "rel.csv")
    assert set(table["kube_proxy_version"].astype(str)) == {"1.35"}
    assert cli("services", "apply", "-p", PREFIX, "-d", "iptables", "-n", "3").returncode == 0
    before = _record(wlab)
    res = cli(*args, "--kube-proxy-version", "1.37", env=data)
    assert res.returncode == 2 and "exists with other parameters" in res.stderr
    assert "differ: kube_proxy_version" in res.stderr
    assert _record(wlab) == before  # refused before the worker was touched
    other = "plain" if wlab.pod_attachment() == "cilium" else "cilium"
    res = cli(*args, "--kube-proxy-version", "1.35", "--cni", other, env=data)
    assert res.returncode == 2 and f"needs the pod attached as '{other}'" in res.stderr
    res = cli(*args, "--kube-proxy-version", "1.35", env=data)  # the same releases: nothing left to do
    assert res.returncode == 0 and "0 new points measured" in res.stdout
