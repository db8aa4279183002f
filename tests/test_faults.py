"""Faults, bad input and interruptions: every case a careful user tried, with what they should see.

Each test names the case of the issue it reproduces. The lab cases use their own prefix (`pyf`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labtools.base import paths
from labtools.base.errors import InventoryError, LabError
from labtools.experiments.recorder import Recorder
from labtools.hosts import namespaces
from labtools.lab import Lab
from labtools.lab.state import ServicesState
from labtools.model import topology
from tests.conftest import IS_ROOT, ROOT, fresh_lab, needs_root

PREFIX = "pyf"
INVENTORY = paths.DEFAULT_INVENTORY


def cli(*args: str, env: dict | None = None, user: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = [sys.executable, "-m", "labtools", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]  # numeric ids: no names needed
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def children(pid: int) -> list[str]:
    """The command names of `pid`'s child processes (a readiness signal: what a command is running now)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [Path(f"/proc/{k}/comm").read_text().strip() for k in kids]
    except OSError:  # it, or a child, has just exited
        return []


def no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]


def inventory_with(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(INVENTORY.read_text())
    change(data)
    out = tmp_path / "inv.yml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def flab():
    yield from fresh_lab(PREFIX)


# ----------------------------------------------------------------------------- bad input (no lab needed)


def test_1_run_ids_are_validated_like_prefixes():
    for bad in ("../../../tmp/x", "a/b", "..", ""):
        with pytest.raises(LabError, match="invalid run id"):
            paths.check_run_id(bad)
    res = cli("sweep", "--run-id", "../../../tmp/x", "--dry-run", "--datapaths", "none", "--counts", "1")
    assert res.returncode == 2 and "invalid run id" in res.stderr
    no_traceback(res)


def test_3_and_4_counts_repeats_and_durations_are_refused_before_any_work():
    for args, message in (
        (["--throughput-seconds", "0"], "must be at least 1"),
        (["--repeats", "0"], "must be at least 1"),
        (["--crr-transactions", "-5"], "must be at least 1"),
        (["--udp-packets", "x"], "is not a whole number"),
        (["--counts", "abc"], "'abc' is not a whole number"),
        (["--counts", "1,,2"], "has an empty item"),
        (["--datapaths", "none,ipvs"], "unknown ipvs"),
    ):
        res = cli("sweep", "--run-id", "x", "--dry-run", *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        no_traceback(res)
    res = cli("measure", "--repeats", "0")
    assert res.returncode == 2 and "must be at least 1" in res.stderr
    res = cli("services", "bench", "--counts", "10,0")
    assert res.returncode == 2 and "must be at least 1" in res.stderr


def test_5_an_empty_prefix_is_refused_not_replaced():
    with pytest.raises(LabError, match="invalid lab prefix ''"):
        Lab(prefix="")
    res = cli("lab", "up", "--prefix", "")
    assert res.returncode == 2 and "invalid lab prefix ''" in res.stderr
    assert not namespaces.lab_namespaces("thesis") or IS_ROOT  # nothing was built under the inventory's prefix


def test_6_the_prefix_comes_from_the_environment():
    os.environ["LABTOOLS_PREFIX"] = "envlab"
    try:
        assert Lab().prefix == "envlab"
        assert Lab(prefix="other").prefix == "other"
        assert Lab().hint == " --prefix envlab"
    finally:
        del os.environ["LABTOOLS_PREFIX"]
    assert Lab().prefix == "thesis"  # the inventory's
    make = (ROOT / "Makefile").read_text()
    assert "export LABTOOLS_PREFIX := $(PREFIX)" in make and "[ $$up = 1 ] && $(BIN)/labtools lab down" in make


def test_12_and_13_inventory_roles_and_duplicate_addresses_name_the_line(tmp_path):
    def two_workers(d):
        d["machines"]["worker2"] = {"role": "worker", "interfaces": {"ens9": {"addresses": []}}}
        d["links"].append({"name": "w2", "members": ["worker2:ens9", "master:ens9"]})
        d["machines"]["master"]["interfaces"]["ens9"] = {"addresses": []}

    lab = Lab(inventory_with(tmp_path, two_workers), prefix="pyfx")
    with pytest.raises(InventoryError, match=r"exactly one machine with role 'worker', found 2: worker \(line \d+\)"):
        lab.check_roles()

    def no_pod(d):
        del d["machines"]["pod"]
        d["links"] = [lk for lk in d["links"] if not any(m.startswith("pod:") for m in lk["members"])]
        d["machines"]["worker"]["interfaces"].pop("lxc0", None)
        worker = d["machines"]["worker"]
        worker["routes"] = [r for r in worker.get("routes", []) if r.get("dev") != "lxc0"]

    Lab(inventory_with(tmp_path, no_pod), prefix="pyfx").check_roles()  # a pod is optional

    def duplicate(d):
        d["machines"]["master"]["interfaces"]["ens3"]["addresses"] = ["2001:db8:1234:5678::2/64"]

    path = inventory_with(tmp_path, duplicate)
    with pytest.raises(InventoryError) as e:
        topology.load(path)
    assert "address 2001:db8:1234:5678::2 is used by both" in str(e.value) and e.value.line
    assert "addresses" in path.read_text().splitlines()[e.value.line - 1]


def test_17_dissect_creates_the_csv_folder_and_reads_folders(tmp_path):
    pcaps = ROOT / "data" / "raw" / "reference-srv6" / "icmp"
    out = tmp_path / "new" / "dir" / "x.csv"
    res = cli("dissect", str(pcaps), "--csv", str(out))
    assert res.returncode == 0, res.stderr
    assert out.exists() and "rows written" in res.stdout
    res = cli("dissect", str(tmp_path))
    assert res.returncode == 2 and "holds no .pcap" in res.stderr
    res = cli("dissect", str(pcaps / "client.pcap"), "--csv", "/proc/nope/x.csv")
    assert res.returncode == 2 and "cannot write" in res.stderr
    no_traceback(res)


def test_the_cli_explains_itself():
    res = cli("--help")
    assert res.returncode == 0
    for word in ("services apply", "measure", "sweep", "srv6", "capture", "dissect", "examples:", "LABTOOLS_PREFIX"):
        assert word in res.stdout, word
    assert cli("--version").stdout.startswith("labtools ")
    sweep = cli("sweep", "--help").stdout
    for text in ("--counts N,N,...", "(default: 1,1000,10000)", "--repeats", "--seed", "--targets T,T,..."):
        assert text in sweep, text
    apply_ = cli("services", "apply", "--help").stdout
    assert "--datapath" in apply_ and "--counts" not in apply_ and "--repeats" not in apply_
    bench = cli("services", "bench", "--help").stdout
    assert "--counts" in bench and "--datapath " not in bench
    res = cli("services", "manifests", "-n", "100000")
    assert res.returncode == 2 and "clusterip+1nodeport" in res.stderr
    res = cli("services", "manifests", "-n", "40000")
    assert res.returncode == 2 and "--node-port-range 25536-65535" in res.stderr


def test_2_a_broken_point_file_is_named_moved_aside_and_measured_again(tmp_path, capsys):
    rec = Recorder("r", kind="test", params={"a": 1}, root=tmp_path).open(lambda: {"time": "now"})
    rec.write("p1", [{"metric": "m", "value": 1.0}])
    rec.write("p2", [{"metric": "m", "value": 2.0}])
    (rec.points / "p2.json").write_text('{"records": [{"met')  # truncated
    (rec.points / "p3.json").write_text("")  # emptied
    warnings: list[str] = []
    rec.warn = warnings.append
    assert rec.pending(["p1", "p2", "p3"]) == ["p2", "p3"]
    assert len(warnings) == 2 and "p2.json is broken" in warnings[0] and "measured again" in warnings[0]
    assert sorted(p.name.split(".json")[0] for p in (rec.points / "broken").iterdir()) == ["p2", "p3"]
    table = rec.table()
    assert table.read_text().count("\n") == 2  # header and p1: nothing stale, nothing broken
    with pytest.raises(LabError, match="exists with other parameters"):
        Recorder("r", kind="test", params={"a": 2}, root=tmp_path).open(dict)


def test_a_block_design_run_takes_more_blocks_and_records_when(tmp_path):
    params = {"order": "block", "order_seed": 7, "repeats": 2, "counts": [1, 10]}
    rec = Recorder("r", kind="sweep", params=params, root=tmp_path).open(lambda: {"git_commit": "a"})
    rec.write("n00001-r0-x", [{"metric": "m", "value": 1.0}])
    more = Recorder("r", kind="sweep", params={**params, "repeats": 4}, root=tmp_path)
    more.open(lambda: {"git_commit": "b"})
    assert json.loads(more.manifest_path.read_text())["params"]["repeats"] == 2  # nothing measured yet: unchanged
    more.write("n00001-r2-x", [{"metric": "m", "value": 2.0}])
    man = json.loads(more.manifest_path.read_text())
    assert man["params"]["repeats"] == 4 and man["provenance"]["git_commit"] == "a"
    [ext] = man["extended"]
    assert ext["repeats"] == [2, 4] and ext["provenance"] == {"git_commit": "b"} and ext["time"] > man["started"]
    for other in ({**params, "repeats": 3, "counts": [1]}, {**params, "repeats": 1},
                  {**params, "order": "repeat", "repeats": 5}):  # fmt: skip
        with pytest.raises(LabError, match="exists with other parameters"):
            Recorder("r", kind="sweep", params=other, root=tmp_path).open(dict)


# ----------------------------------------------------------------------------- in the lab (root)


@needs_root
def test_10_without_root_every_lab_command_says_so_at_once(flab):
    for args in (["sweep", "--run-id", "x", "--datapaths", "none", "--counts", "1"],
                 ["services", "apply", "-d", "iptables"], ["srv6", "up"], ["measure", "-t", "pod"],
                 ["capture", "--run-id", "x"]):  # fmt: skip
        res = cli(*args, "--prefix", PREFIX, user="65534", env={"HOME": "/tmp"})
        assert res.returncode == 2 and "needs root" in res.stderr, (args, res.stderr)
        no_traceback(res)
    res = cli("lab", "status", "--prefix", PREFIX, user="65534", env={"HOME": "/tmp"})
    assert res.returncode == 2 and "cannot see lab" in res.stderr


@needs_root
def test_7_an_interrupted_apply_leaves_no_stale_state(flab):
    assert cli("services", "apply", "-p", PREFIX, "-d", "iptables", "-n", "10").returncode == 0
    assert flab.state.get(ServicesState).datapath == "iptables"
    argv = [sys.executable, "-m", "labtools", "services", "apply", "-p", PREFIX, "-d", "nftables", "-n", "2500"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ready: the CLI runs `nft` (the transaction). Not a fixed sleep: a cold machine may still be importing.
    while proc.poll() is None and "nft" not in children(proc.pid):
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the apply finished before the interrupt on this machine")
    assert proc.returncode == 130 and "interrupted" in err
    assert flab.state.get(ServicesState) is None  # not "iptables/10", which the worker no longer has
    res = cli("measure", "-p", PREFIX, "-t", "last")
    assert res.returncode == 2 and "no Services are programmed (or an apply was interrupted)" in res.stderr
    assert f"services apply --prefix {PREFIX}" in res.stderr
    assert cli("services", "apply", "-p", PREFIX, "-d", "none").returncode == 0


@needs_root
def test_8_server_logs_live_with_the_lab_and_go_with_it(flab, tmp_path):
    before = {p for p in os.listdir("/tmp") if p.startswith(f"labtools-{PREFIX}-")}
    res = cli("measure", "-p", PREFIX, "-m", "crr", "-t", "pod", "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "[2001:db8:1234:5678:8:2:1:841]:5201" in res.stdout  # it says what it measured
    assert {p for p in os.listdir("/tmp") if p.startswith(f"labtools-{PREFIX}-")} == before
    logs = list((flab.state.dir / "logs").glob("*.log"))
    assert logs, "the server's log is kept with the lab's state"


@needs_root
def test_9_a_killed_capture_leaves_nothing_in_tmp_and_resumes(flab, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "labtools", "capture", "-p", PREFIX, "--run-id", "cap",
                             "--scenarios", "icmp", "--count", "20", "--points", "client,pod"], cwd=ROOT,
                            env={**os.environ, "LABTOOLS_DATA": str(tmp_path)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    run = tmp_path / "raw" / "cap"
    deadline = time.monotonic() + 30
    while not list(run.glob("icmp/.*.part")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert (run / "manifest.json").exists()  # the run is there, resumable
    assert not [f for f in os.listdir("/tmp") if f.startswith("labtools-capture-")]
    for ns in namespaces.lab_namespaces(PREFIX):  # tcpdump died with its parent
        assert not [p for p in namespaces.pids(ns) if "tcpdump" in Path(f"/proc/{p}/comm").read_text()]
    res = cli("capture", "-p", PREFIX, "--run-id", "cap", "--scenarios", "icmp", "--count", "20",
              "--points", "client,pod", env={"LABTOOLS_DATA": str(tmp_path)})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (run / "icmp" / "client.pcap").exists() and not list(run.glob("icmp/.*.part"))


@needs_root
def test_16_a_failing_scenario_fails_the_command(flab, tmp_path):
    res = cli("capture", "-p", PREFIX, "--run-id", "bad", "--points", "client", "--", "false",
              env={"LABTOOLS_DATA": str(tmp_path)})  # fmt: skip
    assert res.returncode == 1 and "failed" in res.stderr + res.stdout
    assert "nftables" in cli("capture", "--help").stdout  # the default datapath passes encapsulated replies


@needs_root
def test_14_a_running_lab_is_not_silently_reconfigured(flab, tmp_path):
    def mtu_1500(d):
        d["mtu"] = 1500

    inv = inventory_with(tmp_path, mtu_1500)
    res = cli("lab", "up", "-p", PREFIX, "-i", str(inv))
    assert res.returncode == 2 and "is up with another configuration" in res.stderr
    assert "MTU 8950 -> 1500" in res.stderr and f"lab down --prefix {PREFIX}" in res.stderr
    mtus = {s.mtu for s in flab.status()}
    assert mtus == {8950}  # unchanged


@needs_root
def test_11_and_15_a_half_built_or_absent_lab_says_so(tmp_path):
    prefix = "pyfk"
    Lab(prefix=prefix).down()
    proc = subprocess.Popen([sys.executable, "-m", "labtools", "lab", "up", "-p", prefix], cwd=ROOT)
    deadline = time.monotonic() + 30
    while len(namespaces.lab_namespaces(prefix)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()  # kill -9 midway: no clean-up runs
    proc.wait()
    try:
        if Lab(prefix=prefix).is_up() and not Lab(prefix=prefix).drift():
            pytest.skip("`lab up` finished before the kill on this machine")
        res = cli("lab", "status", "-p", prefix)
        assert res.returncode == 1 and "incomplete" in res.stdout and f"lab up --prefix {prefix}" in res.stdout
    finally:
        Lab(prefix=prefix).down()
    res = cli("measure", "-p", prefix, "-t", "pod")
    assert res.returncode == 2 and f"the lab {prefix} is down" in res.stderr
    res = cli("lab", "status", "-p", prefix)
    assert res.returncode == 1 and "is not up" in res.stdout


def test_the_state_record_is_written_atomically(tmp_path, monkeypatch):
    from labtools.lab.state import LabState

    monkeypatch.setattr(paths, "STATE_ROOT", tmp_path)
    st = LabState("x")
    st.put(ServicesState(datapath="ebpf", services=3, render_s=0.1, apply_s=0.2, objects=9, workload={"count": 3}))
    assert json.loads((tmp_path / "x" / "services.json").read_text())["datapath"] == "ebpf"
    assert not list((tmp_path / "x").glob(".*tmp"))
    (tmp_path / "x" / "services.json").write_text("{not json")
    assert st.get(ServicesState) is None  # unreadable counts as unknown


# ----------------------------------------------------------------------------- issue 24: third round (no lab)


def test_24_an_early_interrupt_or_sigterm_exits_with_one_line(monkeypatch, capsys):
    from labtools import cli

    def interrupted_while_importing() -> None:
        raise KeyboardInterrupt  # Ctrl-C while the command modules are still being imported

    monkeypatch.setattr(cli, "build_parser", interrupted_while_importing)
    assert cli.main(["sweep"]) == 130
    assert capsys.readouterr().err == "labtools: interrupted\n"

    def terminated(args) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler main() installed
        raise AssertionError("SIGTERM did not end the command")

    monkeypatch.undo()
    import labtools.cli.outputs

    monkeypatch.setattr(labtools.cli.outputs, "cmd_figures", terminated)
    try:
        assert cli.main(["figures"]) == 143  # 128 + SIGTERM, not SIGINT's 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert capsys.readouterr().err == "labtools: terminated\n"


def test_24_the_cli_installs_its_signal_handling_before_the_heavy_imports():
    code = ("import sys, labtools.cli; heavy = [m for m in ('pandas', 'labtools.lab', 'labtools.datapaths', 'rich') "
            "if m in sys.modules]; print(heavy)")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"  # importing the entry point is quick: main() starts within milliseconds


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e9", "999"])
def test_24_numeric_flags_are_checked_where_they_are_parsed(value):
    res = cli("services", "bench", "--change", "add", f"--probe-hz={value}", "-p", "pyfnone")
    assert res.returncode == 2 and "--probe-hz" in res.stderr, res.stderr
    assert "finite" in res.stderr or "must be from 1000 to 10000" in res.stderr
    no_traceback(res)


def test_24_every_numeric_flag_has_a_checked_type():
    import argparse

    from labtools.cli import build_parser, common

    def checked(t: object) -> bool:
        return t is common.int_list or getattr(t, "__qualname__", "") in ("integer.<locals>.parse",
                                                                          "real.<locals>.parse")  # fmt: skip

    def actions(parser: argparse.ArgumentParser):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from actions(sub)
            else:
                yield parser.prog, a

    numeric = [(prog, a.dest, a.type) for prog, a in actions(build_parser()) if a.type in (int, float, common.int_list)
               or (isinstance(a.default, int | float) and not isinstance(a.default, bool))]  # fmt: skip
    assert len(numeric) > 15 and [(prog, dest) for prog, dest, t in numeric if not checked(t)] == []
    for text in ("0", "-1", "1e3", "x", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.repeats(text)
    for text in ("nan", "inf", "0", "601"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.timeout(text)
    assert common.timeout("0.5") == 0.5 and common.seed("0") == 0


def test_24_repeated_names_and_counts_are_refused():
    for args, twice in ((["--datapaths", "none,none"], "none"), (["--counts", "1,1000,1"], "1"),
                        (["--metrics", "crr,crr"], "crr")):  # fmt: skip
        res = cli("sweep", "--run-id", "x", "--dry-run", *args)
        assert res.returncode == 2 and f"names {twice} more than once" in res.stderr, res.stderr
        no_traceback(res)


def test_24_measure_does_not_offer_the_change_metric():
    assert "change" not in cli("measure", "--help").stdout.split("--metric")[1].split("]")[0]
    res = cli("measure", "--metric", "change")
    assert res.returncode == 2 and "invalid choice: 'change'" in res.stderr


def test_24_out_is_a_data_folder_everywhere_and_checked_first(tmp_path, monkeypatch):
    from labtools.cli.common import data_out

    monkeypatch.chdir(tmp_path)
    assert data_out("myres/x", "run") == (tmp_path / "myres" / "x", "run")
    assert data_out("relonly", "run") == (tmp_path / "relonly", "run")
    assert data_out("data/raw/RUN", None, run_folder=True) == (tmp_path / "data", "RUN")  # the documented form
    assert data_out("data/raw/RUN", None) == (tmp_path / "data" / "raw" / "RUN", None)  # only sweep and capture
    assert data_out(None, "r") == (None, "r")
    (tmp_path / "afile").write_text("x")
    for out, message in (("afile", "is a file, not a folder"), ("afile/sub", "is a file, so no folder")):
        with pytest.raises(LabError, match=message):
            data_out(out, "r")
    with pytest.raises(LabError, match="names run RUN, --run-id other"):
        data_out("data/raw/RUN", "other", run_folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing was created


def test_24_out_mistakes_are_named_errors_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["sweep", "--out", "relonly", "--datapaths", "none", "--counts", "1", "--dry-run"],
                 ["sweep", "--out", str(afile), "--run-id", "r", "--dry-run"],
                 ["services", "bench", "--out", str(afile)], ["measure", "--out", str(afile)],
                 ["udp-check", "--out", str(afile / "sub")], ["capture", "--out", str(afile)]):  # fmt: skip
        res = cli(*args, "-p", "pyfnone")
        assert res.returncode == 2 and res.stderr.startswith("labtools: error:"), (args, res.stderr)
        no_traceback(res)
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert not (ROOT / "raw").exists() and not (ROOT / "processed").exists() and not (ROOT / "relonly").exists()
    assert "OUT/raw/RUN-ID" in cli("services", "bench", "--help").stdout


def test_24_a_refused_start_leaves_no_run(tmp_path):
    rec = Recorder("r", kind="test", params={"a": 1}, root=tmp_path).open(lambda: {"time": "now"})
    rec.note(mode="end-dt6")  # run-level facts before the first point stay in memory
    assert rec.manifest()["mode"] == "end-dt6" and not (tmp_path / "raw").exists()
    # e.g. the kernel lacks seg6: nothing was written, so the same id is free for other parameters
    Recorder("r", kind="test", params={"a": 2}, root=tmp_path).open(dict)
    rec.write("p1", [{"metric": "m", "value": 1.0}])  # the first point creates the run
    assert json.loads(rec.manifest_path.read_text())["mode"] == "end-dt6"
    with pytest.raises(LabError, match="exists with other parameters"):
        Recorder("r", kind="test", params={"a": 2}, root=tmp_path).open(dict)


def test_24_a_sweep_too_large_for_its_node_ports_is_refused_with_a_flag_it_has(tmp_path):
    res = cli("sweep", "--run-id", "big", "--datapaths", "none", "--counts", "40000", "-p", "pyfnone",
              env={"LABTOOLS_DATA": str(tmp_path)})  # fmt: skip
    assert res.returncode == 2 and "do not fit the node port range a sweep uses" in res.stderr, res.stderr
    assert "--node-port-range" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_24_figures_refuses_incomplete_reference_data_and_leaves_notebooks_alone(tmp_path):
    before = {p.name: p.read_bytes() for p in (ROOT / "notebooks").iterdir() if p.is_file()}
    res = cli("figures", env={"LABTOOLS_DATA": str(tmp_path)})
    assert res.returncode == 2 and "the reference data is incomplete" in res.stderr, res.stderr
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").iterdir() if p.is_file()} == before


def test_24_a_failing_notebook_leaves_its_committed_copy(tmp_path, monkeypatch):
    import papermill as pm

    from labtools import pipeline

    out = tmp_path / "01-scale-sweep.ipynb"
    out.write_text("committed")

    def fails(src, tmp, **kw):
        Path(tmp).write_text("half executed")
        raise pm.PapermillExecutionError(2, 3, "boom", "RuntimeError", "boom", [])  # cell index, exec count

    monkeypatch.setattr(pm, "execute_notebook", fails)
    monkeypatch.delenv("LABTOOLS_PAPER", raising=False)
    with pytest.raises(LabError, match="failed in cell 3"):
        pipeline._execute("01-scale-sweep", out, {}, tmp_path / "paper", keep_failed=False)
    assert out.read_text() == "committed" and [p.name for p in tmp_path.iterdir()] == [out.name]
    assert "LABTOOLS_PAPER" not in os.environ  # the paper folder went to the kernel, not into our environment

    def interrupted(src, tmp, **kw):
        assert os.environ["LABTOOLS_PAPER"] == str(tmp_path / "paper")  # what the kernel inherits
        Path(tmp).write_text("half executed")
        raise KeyboardInterrupt

    monkeypatch.setattr(pm, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline._execute("01-scale-sweep", out, {}, tmp_path / "paper", keep_failed=True)
    assert out.read_text() == "committed" and [p.name for p in tmp_path.iterdir()] == [out.name]
    assert "LABTOOLS_PAPER" not in os.environ


def test_24_make_test_installs_what_the_paper_checks_need():
    make = (ROOT / "Makefile").read_text()
    tex = next(line for line in make.splitlines() if line.startswith("TEX_PACKAGES :="))
    assert "poppler-utils" in tex.split()  # pdffonts, for the Type 3 check
    assert "test: setup tex-deps" in make


# ----------------------------------------------------------------------------- issue 24: third round (lab)


def exit_filters(lab: Lab) -> list[str]:
    """The interfaces of the worker that carry one of the transit probe's exit filters."""
    from labtools.lab import transit

    worker = lab.host(lab.inventory.by_role("worker").name)
    found = []
    for dev in ("ens3", "lxc0"):
        shown = worker.run(["tc", "filter", "show", "dev", dev, "egress"], check=False).stdout
        found += [dev for name in transit.EXIT_PROGRAMS if name in shown]
    return found


def kill_probe_midway(tmp_path: Path) -> None:
    """kill -9 of `measure --metric probe-overhead` once its probe is attached: no clean-up runs."""
    proc = subprocess.Popen([sys.executable, "-m", "labtools", "measure", "-p", PREFIX, "-m", "probe-overhead",
                             "-t", "last", "-o", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    while proc.poll() is None and "labtools-transi" not in children(proc.pid):  # comm: 15 characters
        time.sleep(0.005)
    until_attached = time.monotonic() + 30
    while proc.poll() is None and len(exit_filters(Lab(prefix=PREFIX))) < 2 and time.monotonic() < until_attached:
        time.sleep(0.02)
    proc.kill()
    proc.wait()


@needs_root
def test_24_a_killed_probe_leaves_no_filter_in_later_measurements_or_applies(flab, tmp_path):
    from labtools.lab import transit

    assert cli("services", "apply", "-p", PREFIX, "-d", "iptables", "-n", "10").returncode == 0
    kill_probe_midway(tmp_path)
    assert sorted(exit_filters(flab)) == ["ens3", "lxc0"]  # what kill -9 leaves: the exit filters stay
    res = cli("measure", "-p", PREFIX, "-m", "crr", "-t", "last", "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert exit_filters(flab) == []  # measured without them
    kill_probe_midway(tmp_path)
    assert exit_filters(flab)
    assert cli("services", "apply", "-p", PREFIX, "-d", "nftables", "-n", "10").returncode == 0
    assert exit_filters(flab) == []
    assert transit.detach_stale(flab.host("worker")) == []  # idempotent


@needs_root
def test_24_lab_up_finishes_what_a_killed_up_left(flab):
    client = flab.host("client")
    # What `up` killed before it configured an interface leaves: down, default MTU, no addresses.
    client.run(["ip", "addr", "flush", "dev", "ens3", "scope", "global"])
    client.run(["ip", "link", "set", "dev", "ens3", "down", "mtu", "1500"])
    res = cli("lab", "status", "-p", PREFIX)
    assert res.returncode == 1 and f"run `labtools lab up --prefix {PREFIX}` to finish it" in res.stdout
    res = cli("lab", "up", "-p", PREFIX)
    assert res.returncode == 0, res.stderr
    assert cli("lab", "status", "-p", PREFIX).returncode == 0
    assert {s.mtu for s in flab.status()} == {8950}


@needs_root
def test_24_bench_out_is_a_data_folder(flab, tmp_path):
    out = tmp_path / "new" / "data"  # missing: created
    res = cli("services", "bench", "-p", PREFIX, "--counts", "10", "--datapaths", "iptables", "--repeats", "1",
              "--run-id", "b", "--out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (out / "raw" / "b" / "manifest.json").exists() and (out / "processed" / "b.csv").exists()
    assert f"{out}/raw/b/" in res.stdout


def test_24_a_capture_refused_for_its_srv6_mode_leaves_no_manifest(tmp_path, monkeypatch):
    from labtools.base.errors import PrerequisiteError
    from labtools.experiments import captures

    def no_seg6(lab, mode):
        raise PrerequisiteError("this kernel has no seg6 (End.DT6)")

    monkeypatch.setattr(captures.srv6, "up", no_seg6)
    with pytest.raises(PrerequisiteError, match="no seg6"):
        captures.run(Lab(prefix="pyfnone"), "cap", mode="end-dt6", root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # so the same run id without --mode is a new run, not "other parameters"
