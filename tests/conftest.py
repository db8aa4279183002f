"""Shared fixtures. Lab tests need root and bring up real network namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labtools import prereqs
from labtools.hosts import namespaces
from labtools.lab import Lab

ROOT = Path(__file__).resolve().parents[1]
POD_IP = "2001:db8:1234:5678:8:2:1:841"
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: network namespaces (run `make test` as root)")
# The kernel's SRv6 routes (encap seg6, seg6local): some kernels are built without them.
HAS_SEG6 = IS_ROOT and prereqs.kernel_has_seg6_lwtunnel()
# `make test` deselects these on such a kernel and runs them in the VM instead (labtools vm run).
needs_seg6 = pytest.mark.seg6


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A seg6 test skips, saying why, on a kernel without SRv6 routes."""
    if IS_ROOT and not HAS_SEG6:
        for item in items:
            if item.get_closest_marker("seg6"):
                item.add_marker(pytest.mark.skip(reason=prereqs.SEG6_MISSING))


def fresh_lab(prefix: str):
    """A fixture body: the thesis testbed under its own `prefix`, torn down (and checked gone) after."""
    if not IS_ROOT:
        pytest.skip("needs root: network namespaces (run `make test` as root)")
    lab = Lab(prefix=prefix)
    lab.down()  # leftovers of an earlier, crashed run
    lab.up(progress=False)
    yield lab
    lab.down()
    assert not namespaces.lab_namespaces(prefix)


def emulated_vms_up(prefix: str, tmp_path_factory):
    """A fixture body: the thesis machines as bare "VMs" (namespaces, cables, no addresses) running sshd."""
    from labtools.lab import emulated_vms

    if not IS_ROOT:
        pytest.skip("needs root: sshd in network namespaces (run `make test` as root)")
    lab = Lab(prefix=prefix)
    lab.down()  # leftovers of an earlier, crashed run
    try:
        yield emulated_vms.start(lab, tmp_path_factory.mktemp(f"{prefix}vms"))
    finally:
        lab.down()
    assert not namespaces.lab_namespaces(prefix)


@pytest.fixture(scope="session", autouse=True)
def no_tmp_leftovers():
    """The SSH-backend tests run on emulated VMs that share this machine's /tmp, where an SSH host keeps its
    server logs and installed tools (a real VM keeps them in its own /tmp): remove what the session added."""
    tmp = Path("/tmp")
    before = set(tmp.glob("labtools-*"))
    yield
    for path in set(tmp.glob("labtools-*")) - before:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def lab():
    """The thesis testbed, up for the whole session under prefix `pyt`."""
    yield from fresh_lab("pyt")
