"""Inventory loading and validation: every mistake is a clear error that names the line."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from labtools.base.errors import InventoryError
from labtools.model import topology
from tests.conftest import POD_IP, ROOT


def write(tmp_path, text: str):
    p = tmp_path / "inv.yml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """\
backend: netns
prefix: t
mtu: 9000
machines:
  a:
    role: client
    interfaces:
      eth0: {addresses: ["2001:db8::1/64"]}
    routes:
      - {to: "2001:db8:1::/64", via: "2001:db8::2", dev: eth0}
  b:
    role: router
    forwarding: true
    interfaces:
      eth0: {addresses: ["2001:db8::2/64"]}
links:
  - {name: net, members: ["a:eth0", "b:eth0"]}
"""


def test_thesis_inventory_has_the_thesis_addresses():
    inv = topology.load(ROOT / "labtools" / "inventories" / "thesis-netns.yml")
    assert list(inv.machines) == ["client", "router", "master", "worker", "pod"]
    assert {i.mtu for m in inv.machines.values() for i in m.interfaces.values()} == {8950}
    assert inv.machine("client").global_v6() == [ipaddress.ip_address("2001:db8:1234:5679::1")]
    assert [str(a) for a in inv.machine("router").global_v6()] == ["2001:db8:1234:5679::2", "2001:db8:1234:5678::3"]
    assert str(inv.machine("master").global_v6()[0]) == "2001:db8:1234:5678::1"
    assert str(inv.machine("worker").global_v6()[0]) == "2001:db8:1234:5678::2"
    assert str(inv.machine("pod").global_v6()[0]) == POD_IP
    assert [m.name for m in inv.machines.values() if m.forwarding] == ["router", "master", "worker"]
    assert [(r.to, str(r.via)) for r in inv.machine("client").routes] == [
        ("2001:db8:1234:5678::/64", "2001:db8:1234:5679::2")
    ]
    assert {lk.name: len(lk.members) for lk in inv.links} == {"clientnet": 2, "clusternet": 3, "podnet": 2}


def test_openstack_example_is_valid_and_ssh():
    inv = topology.load(ROOT / "labtools" / "inventories" / "openstack-example.yml")
    assert inv.backend == "ssh"
    assert inv.machine("worker").ssh["user"] == "ubuntu"  # from ssh_defaults
    assert inv.machine("worker").ssh["host"] == "192.0.2.13"


def test_good_inventory_and_commands(tmp_path):
    inv = topology.load(write(tmp_path, GOOD))
    cmds = topology.configure_commands(inv.machine("a"))
    assert ["ip", "link", "set", "dev", "eth0", "mtu", "9000", "up"] in cmds
    assert ["ip", "-6", "addr", "replace", "2001:db8::1/64", "dev", "eth0", "nodad"] in cmds
    assert cmds[-1] == ["ip", "-6", "route", "replace", "2001:db8:1::/64", "via", "2001:db8::2", "dev", "eth0"]
    assert ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"] in topology.configure_commands(inv.machine("b"))


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ('"2001:db8::1/64"', '"2001:db8::zz/64"', 8, "is not a valid IP address"),
        ('"2001:db8::1/64"', '"2001:db8::1"', 8, "missing /prefix-length"),
        ('via: "2001:db8::2"', 'via: "2001:db8::2::"', 10, "is not a valid IP address"),
        ("dev: eth0}", "dev: eth9}", 10, "unknown interface 'eth9' in route"),
        ('via: "2001:db8::2"', 'via: "2001:db8:5::2"', 10, "is not on a subnet of eth0"),
        ("  b:\n", "  a:\n", 11, "duplicate key 'a' (first on line 5)"),
        ('"b:eth0"', '"c:eth0"', 17, "unknown machine 'c'"),
        ('"b:eth0"', '"b:eth1"', 17, "has no interface 'eth1'"),
        ("role: router", "role: switch", 12, "role must be one of"),
        ("prefix: t", "prefix: bad-prefix", 2, "prefix must be"),
        ("mtu: 9000", "mtu: 900", 3, "mtu must be an integer 1280..65535"),
        ("forwarding: true", "forwarding: yes please", 13, "forwarding must be true or false"),
        ("backend: netns", "backend: docker", 1, "backend must be one of"),
        ("    role: client", "    role: client\n    colour: red", 7, "unknown key 'colour'"),
        ('"2001:db8::2/64"', '"2001:db8::1/64"', 15, "is used by both a:eth0 and b:eth0"),
    ],
)
def test_bad_inventories_name_the_line(tmp_path, old, new, line, message):
    assert old in GOOD
    with pytest.raises(InventoryError) as e:
        topology.load(write(tmp_path, GOOD.replace(old, new, 1)))
    assert message in str(e.value)
    assert e.value.line == line
    if line:
        assert f"inv.yml:{line}:" in str(e.value)


def test_unwired_interface_is_an_error_on_netns(tmp_path):
    text = GOOD.replace('links:\n  - {name: net, members: ["a:eth0", "b:eth0"]}\n', "links: []\n")
    with pytest.raises(InventoryError, match="not wired to any link"):
        topology.load(write(tmp_path, text))


def test_interface_in_two_links(tmp_path):
    text = GOOD + '  - {name: net2, members: ["a:eth0", "b:eth0"]}\n'
    with pytest.raises(InventoryError, match="already wired to another link"):
        topology.load(write(tmp_path, text))


def test_ssh_backend_needs_ssh_section(tmp_path):
    text = GOOD.replace("backend: netns", "backend: ssh")
    with pytest.raises(InventoryError, match="needs an 'ssh:' section") as e:
        topology.load(write(tmp_path, text))
    assert e.value.line == 5


def test_yaml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(InventoryError, match="YAML syntax error") as e:
        topology.load(write(tmp_path, "machines: [a, b\nlinks: x\n"))
    assert e.value.line == 2
    with pytest.raises(InventoryError, match="cannot read inventory"):
        topology.load(tmp_path / "nope.yml")
