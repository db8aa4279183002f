"""Measurements through a programmed datapath produce tidy, complete records (values are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from labtools import datapaths
from labtools.lab import traffic
from labtools.model import services
from tests.conftest import ROOT

KEYS = {"datapath", "services", "target", "repeat", "metric", "value", "unit"}


@pytest.fixture
def programmed(lab):
    node = datapaths.node_of(lab.inventory)
    workload = services.build(10)
    datapaths.switch(lab.host(node.name), node, "ebpf", services.service_ports(workload, node.name))
    yield workload
    datapaths.switch(lab.host(node.name), node, "none", [])


def test_crr_through_a_nodeport_and_to_the_pod(lab, programmed):
    client, pod = lab.host("client"), lab.host("pod")
    srv = traffic.start_crr_server(pod, services.IPERF_PORT)
    try:
        for name in ("last", "pod"):
            t = traffic.target(lab, programmed, name)
            raw = traffic.crr(client, t, transactions=500)
            assert raw["transactions"] == 500 and raw["failed"] == 0
            assert 0 < raw["min_us"] <= raw["p50_us"] <= raw["p90_us"] <= raw["p99_us"] <= raw["max_us"]
            recs = traffic.records("crr", raw, {"datapath": "ebpf", "services": 10, "target": name, "repeat": 0})
            assert [r["metric"] for r in recs] == ["crr_p50", "crr_p90", "crr_p99", "crr_rate", "crr_modes",
                                                   "crr_main_mode_share", "crr_drift", "crr_drifting"]
            assert len(raw["samples_ns"]) == 500  # every sample, in measuring order
            assert all(set(r) == KEYS for r in recs)
    finally:
        srv.stop()
    t = traffic.target(lab, programmed, "last")
    assert t.address == "2001:db8:1234:5678::2" and t.port == programmed.target("last").spec.ports[0].node_port


def test_throughput_keeps_the_raw_iperf3_json(lab, programmed):
    pod = lab.host("pod")
    srv = pod.start(["iperf3", "-s", "-p", str(services.IPERF_PORT)])
    try:
        raw = traffic.throughput(lab.host("client"), traffic.target(lab, programmed, "first"), seconds=1)
    finally:
        srv.stop()
    (rec,) = traffic.records("throughput", raw, {"datapath": "ebpf", "services": 10, "target": "first", "repeat": 0})
    assert rec["unit"] == "Gbit/s" and rec["value"] == raw["end"]["sum_received"]["bits_per_second"] / 1e9 > 0


def test_udp_pps_sends_only_new_flows(lab):
    """Every datagram is a new conntrack entry on the worker, and they all reach the pod."""
    node = datapaths.node_of(lab.inventory)
    workload = services.build(10, udp_targets=True)
    assert [p.protocol for p in workload.target("middle").spec.ports] == ["TCP", "UDP"]
    assert [p.protocol for p in workload.services[1].spec.ports] == ["TCP"]
    datapaths.switch(lab.host(node.name), node, "iptables", services.service_ports(workload, node.name))
    try:
        for name in ("last", "pod"):
            raw = traffic.sample(lab, "udp-pps", traffic.target(lab, workload, name), packets=3000)
            assert raw["sent"] == 3000 and raw["errors"] == 0
            assert raw["delivered"] >= 2970, raw  # a veth backlog may drop a few, never most
            assert raw["conntrack_entries"] >= raw["delivered"], raw  # one new entry per packet
            recs = traffic.records("udp-pps", raw, {"datapath": "iptables", "services": 10, "target": name,
                                                    "repeat": 0})  # fmt: skip
            assert recs[0]["metric"] == "udp_pps" and recs[0]["value"] == raw["delivered"] / raw["elapsed_s"]
    finally:
        datapaths.switch(lab.host(node.name), node, "none", [])


def test_cli_measure_writes_records_with_provenance(lab, tmp_path):
    env_cmd = [sys.executable, "-m", "labtools"]
    res = subprocess.run([*env_cmd, "services", "apply", "-p", "pyt", "-d", "iptables-legacy", "-n", "5"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*env_cmd, "measure", "-p", "pyt", "-m", "crr", "-t", "middle", "-r", "2", "-o",
                          str(tmp_path), "--run-id", "m1"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "[2001:db8:1234:5678::2]:" in res.stdout and "run m1" in res.stdout  # says what it measured
    recs = pd.read_csv(tmp_path / "processed" / "m1.csv").to_dict("records")
    assert len(recs) == 16 and {r["repeat"] for r in recs} == {0, 1}
    assert recs[0]["datapath"] == "iptables-legacy" and recs[0]["services"] == 5
    prov = json.loads((tmp_path / "raw" / "m1" / "manifest.json").read_text())["provenance"]
    assert {"kernel", "git_commit", "iperf3", "time", "cpu_model", "clocksource", "git_dirty"} <= set(prov)
    # --json: the tidy records themselves
    res = subprocess.run([*env_cmd, "measure", "-p", "pyt", "-m", "crr", "-t", "pod", "--json", "-o",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    metrics = {r["metric"] for r in json.loads(res.stdout)}
    assert metrics >= {"crr_p50", "crr_p90", "crr_p99", "crr_rate", "crr_drifting"}
    res = subprocess.run([*env_cmd, "services", "apply", "-p", "pyt", "-d", "none"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    res = subprocess.run([*env_cmd, "measure", "-p", "pyt", "-t", "last"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "there is no NodePort: use --target pod" in res.stderr


def test_a_runs_own_outputs_do_not_make_the_tree_dirty(tmp_path, monkeypatch):
    from labtools.experiments import provenance

    repo = tmp_path / "checkout"
    (repo / "labtools").mkdir(parents=True)
    (repo / "labtools" / "x.py").write_text("A = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(provenance.paths, "PACKAGE", repo / "labtools")
    assert provenance.git_dirty() is False
    for out in ("data/raw/run-s1/manifest.json", "data/processed/run-s1.csv"):  # an earlier sweep of the session
        (repo / out).parent.mkdir(parents=True, exist_ok=True)
        (repo / out).write_text("{}")
    assert provenance.git_dirty() is False
    (repo / "labtools" / "y.py").write_text("B = 2\n")  # untracked code is code
    assert provenance.git_dirty() is True
    (repo / "labtools" / "y.py").unlink()
    (repo / "labtools" / "x.py").write_text("A = 2\n")
    assert provenance.git_dirty() is True
