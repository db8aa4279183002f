"""The real testbed's set-up rendered from code, checked against the thesis appendix, and applied over SSH.

Line numbers refer to /work/shared/seed/thesis-hu.txt (the thesis, in Hungarian); the appendix
snippets below are copied from there so the tests run without it.
"""

from __future__ import annotations

import dataclasses
import shlex
import time

import pytest
import yaml
from kubernetes import client as k8s

from labtools import cli, datapaths
from labtools.base.errors import LabError
from labtools.datapaths import readback
from labtools.hosts import RecordingHost
from labtools.lab import Lab, reachability
from labtools.model import services, topology
from labtools.rigs import kube, testbed
from labtools.rigs.testbed import cilium, kubeadm, netplan
from tests.conftest import POD_IP, ROOT, emulated_vms_up, lab_fixture

OPENSTACK = ROOT / "labtools" / "inventories" / "openstack-example.yml"

# thesis lines 1174-1230: the VMs' netplan files (match/set-name pinned the NIC by MAC on OpenStack).
THESIS_NETPLAN = {
    "client": """
network:
  version: 2
  ethernets:
    ens3:
      dhcp4: true
      dhcp6: false
      addresses:
        - 2001:db8:1234:5679::1/64
      routes:
        - to: 2001:db8:1234:5678::/64
          via: 2001:db8:1234:5679::2
      match:
        macaddress: fa:16:3e:0f:21:be
      mtu: 8950
      set-name: ens3
""",
    "master": """
network:
  version: 2
  ethernets:
    ens3:
      dhcp4: true
      dhcp6: false
      addresses:
        - 2001:db8:1234:5678::1/64
      routes:
        - to: 2001:db8:1234:5679::/64
          via: 2001:db8:1234:5678::3
      match:
        macaddress: fa:16:3e:15:76:9c
      mtu: 8950
      set-name: ens3
""",
    "worker": """
network:
  version: 2
  ethernets:
    ens3:
      dhcp4: true
      dhcp6: false
      addresses:
        - 2001:db8:1234:5678::2/64
      routes:
        - to: 2001:db8:1234:5679::/64
          via: 2001:db8:1234:5678::3
      match:
        macaddress: fa:16:3e:85:3a:6f
      mtu: 8950
      set-name: ens3
""",
}

# thesis lines 1237-1281: kubeadm init config (v1beta3).
THESIS_INIT = """
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 2001:db8:1234:5678::1
nodeRegistration:
  kubeletExtraArgs:
    cluster-dns: 2001:db8:1234:5678:8:3:0:a
    node-ip: 2001:db8:1234:5678::1,172.16.69.5
---
apiServer:
  extraArgs:
    advertise-address: 2001:db8:1234:5678::1
    bind-address: '::'
    etcd-servers: https://[2001:db8:1234:5678::1]:2379
    service-cluster-ip-range: 2001:db8:1234:5678:8:3::/112
apiVersion: kubeadm.k8s.io/v1beta3
controllerManager:
  extraArgs:
    allocate-node-cidrs: 'true'
    bind-address: '::'
    cluster-cidr: 2001:db8:1234:5678:8:2::/104
    node-cidr-mask-size: '120'
    service-cluster-ip-range: 2001:db8:1234:5678:8:3::/112
etcd:
  local:
    dataDir: /var/lib/etcd
    extraArgs:
      advertise-client-urls: https://[2001:db8:1234:5678::1]:2379
      initial-advertise-peer-urls: https://[2001:db8:1234:5678::1]:2380
      initial-cluster: dome-ipv6-master-node=https://[2001:db8:1234:5678::1]:2380
      listen-client-urls: https://[2001:db8:1234:5678::1]:2379
      listen-peer-urls: https://[2001:db8:1234:5678::1]:2380
kind: ClusterConfiguration
networking:
  serviceSubnet: 2001:db8:1234:5678:8:3::/112
scheduler:
  extraArgs:
    bind-address: '::'
---
apiVersion: kubelet.config.k8s.io/v1beta1
cgroupDriver: systemd
clusterDNS:
- 2001:db8:1234:5678:8:3:0:a
healthzBindAddress: ::1
kind: KubeletConfiguration
"""
# thesis lines 1244 and 1314: the dual-stack node IPs (the worker's IPv4 first, line 1323).
THESIS_NODE_IPS = {
    "master": ["2001:db8:1234:5678::1", "172.16.69.5"],
    "worker": ["172.16.69.17", "2001:db8:1234:5678::2"],
}


@pytest.fixture(scope="module")
def inv():
    return topology.load(OPENSTACK)


# ----------------------------------------------------------------------------- network


def test_inventory_covers_real_machines(inv):
    assert inv.backend == "ssh"
    for m in inv.machines.values():
        assert m.ssh["host"] and m.ssh["user"] == "ubuntu" and m.ssh["key"].endswith("id_ed25519")
    assert set(inv.machine("router").interfaces) == {"ens3", "ens7"}  # thesis Fig. 30 / DESIGN table
    assert all(i.mtu == 8950 for m in inv.machines.values() for i in m.interfaces.values())


@pytest.mark.parametrize("machine", ["client", "master", "worker"])
def test_netplan_matches_thesis_appendix(inv, machine):
    thesis = yaml.safe_load(THESIS_NETPLAN[machine])
    for eth in thesis["network"]["ethernets"].values():
        del eth["match"], eth["set-name"]  # interfaces are named by the inventory instead
    rendered = yaml.safe_load(netplan.netplan_yaml(inv.machine(machine)))
    assert rendered == thesis


def test_router_netplan_and_sysctls(inv):
    doc = netplan.netplan(inv.machine("router"))["network"]["ethernets"]
    assert doc["ens3"]["addresses"] == ["2001:db8:1234:5679::2/64"] and doc["ens3"]["dhcp4"] is True
    assert doc["ens7"]["addresses"] == ["2001:db8:1234:5678::3/64"] and doc["ens7"]["dhcp4"] is False
    assert doc["ens7"]["routes"] == [{"to": "2001:db8:1234:5678:8:2::/104", "via": "2001:db8:1234:5678::2"}]
    assert {d["mtu"] for d in doc.values()} == {8950}
    # thesis line 457: IPv6 forwarding on every machine that forwards; the client does not.
    for name in ("router", "master", "worker"):
        assert "net.ipv6.conf.all.forwarding = 1" in netplan.sysctl_conf(inv.machine(name))
    assert "net.ipv6.conf.all.forwarding = 0" in netplan.sysctl_conf(inv.machine("client"))


@pytest.mark.parametrize("machine", ["client", "router", "master", "worker"])
def test_netplan_equals_the_runtime_commands(inv, machine):
    """The emulated VMs get `ip` commands instead of netplan: both come from one inventory entry and agree."""
    m = inv.machine(machine)

    def norm(argv):
        argv = list(argv)
        if "route" in argv and "dev" not in argv:
            argv += ["dev", netplan._route_interface(m, next(r for r in m.routes if r.to == argv[4]))]
        return tuple(argv)

    from_netplan = {norm(c) for c in netplan.netplan_to_commands(netplan.netplan(m))}
    runtime = {norm(c) for c in topology.configure_commands(m)}
    assert from_netplan and from_netplan <= runtime
    # Everything else the run-time commands do is lo and sysctls, which the sysctl.d file carries.
    rest = runtime - from_netplan
    assert all(c[0] == "sysctl" or c[-2:] == ("lo", "up") for c in rest), rest
    assert {c[-1] for c in rest if c[0] == "sysctl"} <= {f"{k}={v}" for k, v in netplan.sysctls(m).items()}


# ----------------------------------------------------------------------------- kubeadm


def test_kubeadm_v1beta3_is_the_thesis_config(inv):
    docs = kubeadm.init_documents(inv, api_version="v1beta3", node_ips=THESIS_NODE_IPS)
    docs = list(yaml.safe_load_all(kubeadm.dump(docs, "init")))  # parsed back
    thesis = list(yaml.safe_load_all(THESIS_INIT))
    # Documented differences (kubeadm.py): bindPort explicit, podSubnet added, initial-cluster left out.
    assert docs[0].pop("localAPIEndpoint") == {**thesis[0].pop("localAPIEndpoint"), "bindPort": 6443}
    assert docs[0] == thesis[0]
    assert docs[1]["networking"].pop("podSubnet") == "2001:db8:1234:5678:8:2::/104"
    del thesis[1]["etcd"]["local"]["extraArgs"]["initial-cluster"]
    assert docs[1] == thesis[1]
    assert docs[2] == thesis[2]


def test_kubeadm_v1beta4_structured_args_and_node_port_range(inv):
    docs = list(yaml.safe_load_all(kubeadm.dump(kubeadm.init_documents(inv), "init")))
    init, cluster, kubelet = docs
    assert init["apiVersion"] == cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["localAPIEndpoint"]["advertiseAddress"] == "2001:db8:1234:5678::1"  # line 1240
    args = {a["name"]: a["value"] for a in init["nodeRegistration"]["kubeletExtraArgs"]}
    assert args == {"cluster-dns": "2001:db8:1234:5678:8:3:0:a", "node-ip": "2001:db8:1234:5678::1"}
    cm = {a["name"]: a["value"] for a in cluster["controllerManager"]["extraArgs"]}
    assert cm["cluster-cidr"] == str(services.CLUSTER_CIDR) == "2001:db8:1234:5678:8:2::/104"  # line 1257
    assert cm["node-cidr-mask-size"] == "120"  # line 1258
    assert cluster["networking"]["serviceSubnet"] == str(services.SERVICE_CIDR)  # line 1271
    api = {a["name"]: a["value"] for a in cluster["apiServer"]["extraArgs"]}
    assert "service-node-port-range" not in api  # 1 Service: the default range
    assert kubelet["clusterDNS"] == ["2001:db8:1234:5678:8:3:0:a"]  # line 1279
    # The default NodePort range holds 2768 ports; one more needs the wide range (as services.build()).
    assert kubeadm.node_port_range_for(2768) == services.DEFAULT_NODE_PORT_RANGE
    assert kubeadm.node_port_range_for(2769) == services.WIDE_NODE_PORT_RANGE
    assert kubeadm.node_port_range_for(10000, mix="clusterip+1nodeport") == services.DEFAULT_NODE_PORT_RANGE
    wide = kubeadm.init_documents(inv, node_port_range=kubeadm.node_port_range_for(10000))
    api = {a["name"]: a["value"] for a in wide[1]["apiServer"]["extraArgs"]}
    assert api["service-node-port-range"] == "30000-40999"
    assert services.build(10000).node_port_range == services.PortRange.parse(api["service-node-port-range"])
    with pytest.raises(LabError, match="v1beta4, v1beta3"):
        kubeadm.init_documents(inv, api_version="v1beta2")


def test_kubeadm_join(inv):
    (join,) = yaml.safe_load_all(kubeadm.dump(kubeadm.join_documents(inv, node_ips=THESIS_NODE_IPS), "join"))
    assert join["kind"] == "JoinConfiguration"
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "[2001:db8:1234:5678::1]:6443"  # line 1306
    assert join["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "172.16.69.17,2001:db8:1234:5678::2"}  # line 1314
    ]
    out = (
        "kubeadm join [2001:db8:1234:5678::1]:6443 --token j9oah9.woam4y0i4nq73s89 \\\n"
        " --discovery-token-ca-cert-hash sha256:af64\n"
    )
    assert kubeadm.parse_join_command(out) == ("j9oah9.woam4y0i4nq73s89", "sha256:af64")
    with pytest.raises(LabError, match="--token"):
        kubeadm.parse_join_command("nothing here")


# ----------------------------------------------------------------------------- cilium


def test_cilium_values_both_modes(inv):
    kp = yaml.safe_load(cilium.values_yaml(inv, "kube-proxy"))
    eb = yaml.safe_load(cilium.values_yaml(inv, "ebpf"))
    for v in (kp, eb):
        assert v["k8sServiceHost"] == "2001:db8:1234:5678::1" and v["k8sServicePort"] == 6443  # lines 1356-1357
        assert v["ipv4"] == {"enabled": False} and v["ipv6"] == {"enabled": True}  # lines 1358-1359
        assert v["ipam"]["mode"] == "cluster-pool"  # line 1360
        assert v["ipam"]["operator"]["clusterPoolIPv6PodCIDRList"] == ["2001:db8:1234:5678:8:2::/104"]  # line 1361
        assert v["ipam"]["operator"]["clusterPoolIPv6MaskSize"] == 112  # line 1363
        assert v["enableIPv4Masquerade"] is True and v["enableIPv6Masquerade"] is True  # lines 1366-1367
        assert v["routingMode"] == "native" and v["autoDirectNodeRoutes"] is True
        assert v["ipv6NativeRoutingCIDR"] == str(services.CLUSTER_CIDR)
        assert v["devices"] == "ens3" and v["nodePort"]["range"] == "30000,32767"
        assert not any(k.startswith("global") for k in v) and "tunnel" not in v.get("bpf", {})
    assert kp["kubeProxyReplacement"] is False and kp["bpf"]["masquerade"] is False  # line 1364
    assert eb["kubeProxyReplacement"] is True and eb["bpf"]["masquerade"] is True  # lines 1377, 1383
    assert cilium.values(inv, "ebpf", node_port_range="30000-40999")["nodePort"]["range"] == "30000,40999"
    with pytest.raises(LabError, match="kube-proxy, ebpf"):
        cilium.values(inv, "ipvs")


def test_cilium_mode_switch_commands(inv):
    to_ebpf = [(m, shlex.join(a)) for m, a in cilium.switch_commands(inv, "ebpf", version="1.18.0")]
    master_cmds = [c for m, c in to_ebpf if m == "master"]
    assert any("helm upgrade --install cilium cilium/cilium" in c and "--version 1.18.0" in c for c in master_cmds)
    assert any("delete ds kube-proxy --ignore-not-found --cascade=foreground" in c for c in master_cmds)  # line 1293
    assert any(c.endswith("delete cm kube-proxy --ignore-not-found") for c in master_cmds)  # line 1296
    assert any("ip6tables-save | grep -v KUBE | ip6tables-restore" in c for m, c in to_ebpf if m == "worker")
    to_kp = [shlex.join(a) for _, a in cilium.switch_commands(inv, "kube-proxy")]
    assert any("kubeadm init phase addon kube-proxy --config /etc/labtools/kubeadm-init.yaml" in c for c in to_kp)
    assert not any("delete ds kube-proxy" in c for c in to_kp)
    assert "cilium-values-kube-proxy.yaml" in " ".join(to_kp)


# ----------------------------------------------------------------------------- render / plan / dry run


def test_render_writes_parseable_files(inv, tmp_path):
    written = testbed.render(inv, tmp_path, testbed.Options(services=3000))
    assert all(p.exists() for p in written)
    for m in ("client", "router", "master", "worker"):
        assert yaml.safe_load((tmp_path / m / "etc/netplan/60-labtools.yaml").read_text())["network"]["version"] == 2
        assert (tmp_path / m / "commands.sh").read_text().startswith("#!/bin/sh")
    init = list(yaml.safe_load_all((tmp_path / "master/etc/labtools/kubeadm-init.yaml").read_text()))
    assert [d["kind"] for d in init] == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"]
    (join,) = yaml.safe_load_all((tmp_path / "worker/etc/labtools/kubeadm-join.yaml").read_text())
    assert join["discovery"]["bootstrapToken"]["token"] == kubeadm.TOKEN_PLACEHOLDER
    for mode in cilium.MODES:
        v = yaml.safe_load((tmp_path / f"master/etc/labtools/cilium-values-{mode}.yaml").read_text())
        assert v["nodePort"]["range"] == "30000,40999"  # 3000 NodePorts need the wide range
    svcs = services.from_yaml((tmp_path / "services.yaml").read_text())  # V1Service.model_validate inside
    assert len(svcs) == 3000 and all(s.spec.ip_families == ["IPv6"] for s in svcs)
    assert max(p.node_port for s in svcs for p in s.spec.ports) <= 40999
    dep = k8s.V1Deployment.model_validate(yaml.safe_load((tmp_path / "iperf3-deployment.yaml").read_text()))
    assert dep == kube.deployment()


def test_cli_dry_run_prints_every_command_per_host_and_runs_nothing(capsys):
    # The inventory's hosts are documentation addresses: any connection attempt would fail.
    assert cli.main(["testbed", "apply", "-i", str(OPENSTACK), "--dry-run", "--services", "10000"]) == 0
    out = capsys.readouterr().out
    for m in ("client", "router", "master", "worker"):
        assert f"# ---- [{m}] stage network" in out
    assert "sudo -n ip -6 addr replace 2001:db8:1234:5679::1/64 dev ens3 nodad" in out  # user ubuntu -> sudo
    assert "sudo -n ip link set dev ens7 mtu 8950 up" in out
    assert "- name: service-node-port-range\n    value: 30000-40999" in out
    assert "kubeadm init --config /etc/labtools/kubeadm-init.yaml" in out
    assert "kubeadm join --config /etc/labtools/kubeadm-join.yaml" in out
    assert "helm upgrade --install cilium cilium/cilium" in out
    assert out.index("stage network") < out.index("stage kubeadm") < out.index("stage cilium")
    assert cli.main(["testbed", "cilium-mode", "ebpf", "-i", str(OPENSTACK), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "delete ds kube-proxy" in out and "kubeProxyReplacement: true" in out and "stage network" not in out


def test_cli_render(tmp_path, capsys):
    assert cli.main(["testbed", "render", "-i", str(OPENSTACK), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "master/etc/labtools/kubeadm-init.yaml").exists()
    assert cli.main(["testbed", "render", "-i", str(OPENSTACK)]) == 2
    assert "--out" in capsys.readouterr().err


def test_srv6_hook(inv, monkeypatch):
    monkeypatch.setattr(testbed, "srv6_plan", lambda i, mode: {"router": [["ip", "-6", "sr", "tunsrc", "set", mode]]})
    steps = testbed.plan(inv, testbed.Options(stages=["srv6"], srv6_mode="fc00::1"))
    assert [(s.machine, s.argv) for s in steps] == [("router", ("ip", "-6", "sr", "tunsrc", "set", "fc00::1"))]
    monkeypatch.setattr(testbed, "srv6_plan", lambda i, mode: None)
    with pytest.raises(LabError, match=r"labtools.datapaths.srv6.plan"):
        testbed.plan(inv, testbed.Options(stages=["srv6"]))
    notes = [s for s in testbed.plan(inv) if s.stage == "srv6"]  # not asked for by name: a note, no failure
    assert len(notes) == 1 and notes[0].argv == () and "left out" in notes[0].why
    with pytest.raises(LabError, match="unknown stage"):
        testbed.plan(inv, testbed.Options(stages=["network", "bgp"]))


class _FakeLab:
    """The machines of `inventory` as recording hosts, one log; `kubeadm token create` prints a join command."""

    def __init__(self, inventory):
        self.inventory, self.log = inventory, []
        join = "kubeadm join [x]:6443 --token abc.def --discovery-token-ca-cert-hash sha256:123\n"
        self.hosts = {m: RecordingHost(m, {"token create": join}, log=self.log) for m in inventory.machines}

    def host(self, name):
        return self.hosts[name]


def test_apply_runs_in_order_with_sudo_and_fills_in_the_join_token(inv):
    lab = _FakeLab(inv)
    steps = testbed.plan(inv, testbed.Options(stages=["kubeadm"]))
    testbed.apply(lab, steps, dry_run=False)
    assert [c.host for c in lab.log] == [s.machine for s in steps]
    assert all(c.argv[:2] == ("sudo", "-n") for c in lab.log)
    join = next(c.input for c in lab.log if c.host == "worker" and c.input)
    (doc,) = yaml.safe_load_all(join)
    assert doc["discovery"]["bootstrapToken"]["token"] == "abc.def"
    assert doc["discovery"]["bootstrapToken"]["caCertHashes"] == ["sha256:123"]
    lab.log.clear()
    testbed.apply(lab, steps, dry_run=True, echo=lambda s: None)
    assert lab.log == []


# ----------------------------------------------------------------------------- for real, over SSH


@lab_fixture(scope="module")
def vms(tmp_path_factory):
    yield from emulated_vms_up("pyk", tmp_path_factory)


def test_appendix_applied_over_ssh_on_emulated_vms(vms, tmp_path):
    """The same plan as on OpenStack, through SSHHost; netplan is installed as a file, applied as `ip` commands."""
    ssh_lab = Lab(vms.ssh_inventory())
    try:
        inv = ssh_lab.inventory
        assert not reachability.ping(vms.lab.host("client"), POD_IP, timeout=0.5).ok  # bare VMs: no data path yet
        with pytest.raises(LabError, match=r"shares its /etc: refusing"):  # would write the host's /etc
            testbed.apply(ssh_lab, testbed.plan(inv, testbed.Options(stages=["network"])), dry_run=False)
        opts = testbed.Options(stages=["network"], files_root=str(tmp_path))
        steps = testbed.plan(inv, opts)
        assert not any(s.argv[:1] == ("netplan",) for s in steps)  # no netplan in a namespace
        testbed.apply(ssh_lab, steps, dry_run=False)
        ssh_lab.wait_settled()
        for name in ("client", "router", "master", "worker"):
            m = inv.machine(name)
            installed = (tmp_path / name / netplan.NETPLAN_PATH.lstrip("/")).read_text()
            assert yaml.safe_load(installed) == netplan.netplan(m)
            assert (tmp_path / name / netplan.SYSCTL_PATH.lstrip("/")).read_text() == netplan.sysctl_conf(m)
        assert ssh_lab.host("router").run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
        assert ssh_lab.host("client").run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "0"
        rows = {(s.machine, s.interface): s for s in ssh_lab.status()}
        assert rows[("router", "ens7")].mtu == 8950 and "2001:db8:1234:5678::3/64" in rows[("router", "ens7")].addresses
        r = reachability.ping(ssh_lab.host("client"), POD_IP, packet_bytes=8900, dont_fragment=True)
        assert r.ok and r.hop_limit == 62, r.error
        testbed.apply(ssh_lab, steps, dry_run=False)  # idempotent: a second run changes nothing and does not fail

        # The programming-latency probes over SSH, on the emulated worker's real datapaths.
        worker = ssh_lab.host("worker")
        node = datapaths.node_of(inv)
        workload = services.build(200)
        fronts = readback.frontends(workload.services)
        for name, pr in (
            ("iptables", readback.IptablesReadback(worker)),
            ("nftables", readback.NftablesReadback(worker)),
        ):
            since = time.monotonic()
            datapaths.switch(worker, node, name, services.service_ports(workload, node.name))
            rec = readback.wait_programmed(pr, fronts, since=since, timeout=30)
            assert rec["ok"] and rec["programmed"] == 200 and rec["probe"] == name, rec
            assert 0 < rec["latency_s"] < 30
        datapaths.switch(worker, node, "none", [])
        assert readback.IptablesReadback(worker).programmed() == set() == readback.NftablesReadback(worker).programmed()
    finally:
        ssh_lab.close()


@pytest.mark.seg6  # the emulated VMs share this machine's kernel, which needs SRv6 routes
def test_appendix_srv6_applied_over_ssh_on_emulated_vms(vms, tmp_path):
    """The appendix' SRv6 configuration (labtools.datapaths.srv6), through the same apply over SSH."""
    ssh_lab = Lab(vms.ssh_inventory())
    try:
        inv = ssh_lab.inventory
        opts = testbed.Options(stages=["network"], files_root=str(tmp_path))
        testbed.apply(ssh_lab, testbed.plan(inv, opts), dry_run=False)  # idempotent: as the test above left it
        ssh_lab.wait_settled()
        sr_steps = testbed.plan(inv, dataclasses.replace(opts, stages=["srv6"]))
        assert {s.machine for s in sr_steps} == {"router", "worker"}
        testbed.apply(ssh_lab, sr_steps, dry_run=False)
        route = ssh_lab.host("router").run(["ip", "-6", "route", "get", POD_IP]).stdout
        assert "encap seg6" in route and "fc00::2" in route, route
        assert reachability.ping(ssh_lab.host("client"), POD_IP).ok  # the pod is reachable through the tunnel

    finally:
        ssh_lab.close()
