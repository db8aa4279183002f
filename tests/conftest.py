"""Shared fixtures, and the one marker for tests that need root and a lab.

`lab`: the test needs root and brings network namespaces up (the lab, emulated VMs, a capture's namespace).
A test that uses a fixture made with `lab_fixture`, directly or through other fixtures, is marked by
`pytest_collection_modifyitems`; a test that brings a lab up itself says `@pytest.mark.lab`. Without root
every `lab` test is skipped, and `pytest -m "not lab"` runs the rest as any user with no lab: a test that
would bring one up in-process without the marker fails (`pytest_runtest_setup`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from labtools.base import prereqs
from labtools.hosts import namespaces
from labtools.lab import Lab, emulated_vms

ROOT = Path(__file__).resolve().parents[1]
POD_IP = "2001:db8:1234:5678:8:2:1:841"
IS_ROOT = os.geteuid() == 0

NOT_ROOT = pytest.mark.skip(reason="needs root: network namespaces (run `make test` as root)")
needs_root = pytest.mark.lab  # the old name, still imported by tests/test_faults.py
# The kernel's SRv6 routes (encap seg6, seg6local): some kernels are built without them.
HAS_SEG6 = IS_ROOT and prereqs.kernel_has_seg6_lwtunnel()
# `make test` deselects these on such a kernel and runs them in the VM instead (labtools vm run).
needs_seg6 = pytest.mark.seg6


def lab_fixture(**kwargs) -> Callable:
    """`pytest.fixture(**kwargs)` for a fixture that brings a lab up: every test using it is marked `lab`."""

    def make(fn: Callable) -> Callable:
        fn.brings_a_lab_up = True
        return pytest.fixture(**kwargs)(fn)

    return make


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items) -> None:
    """Tests using a lab fixture are `lab` tests (skipped without root); a seg6 test skips, saying why, on a
    kernel without SRv6 routes (`make test` runs those in a VM on Debian's kernel instead)."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        used = [defs[-1].func for defs in fixtures.name2fixturedefs.values() if defs] if fixtures else []
        if any(getattr(f, "brings_a_lab_up", False) for f in used):
            item.add_marker(pytest.mark.lab)
        if not IS_ROOT and item.get_closest_marker("lab"):
            item.add_marker(NOT_ROOT)
        if IS_ROOT and not HAS_SEG6 and item.get_closest_marker("seg6"):
            item.add_marker(pytest.mark.skip(reason=prereqs.SEG6_MISSING))


GUARD = pytest.StashKey[pytest.MonkeyPatch]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """Outside `lab` tests, bringing a lab or emulated VMs up fails the test, in its fixtures (of any scope) too:
    `-m "not lab"` must need no root."""
    if not item.get_closest_marker("lab"):

        def refuse(*args, **kwargs):
            pytest.fail(f"{item.nodeid} brings a lab up: mark it `lab` or give it a `lab_fixture`")

        guard = item.stash[GUARD] = pytest.MonkeyPatch()
        guard.setattr(Lab, "up", refuse)
        guard.setattr(emulated_vms, "start", refuse)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        if GUARD in item.stash:
            item.stash[GUARD].undo()


def fresh_lab(prefix: str):
    """A `lab_fixture`'s body: the thesis testbed under its own `prefix`, torn down (and checked gone) after."""
    lab = Lab(prefix=prefix)
    lab.down()  # leftovers of an earlier, crashed run
    lab.up(progress=False)
    yield lab
    lab.down()
    assert not namespaces.lab_namespaces(prefix)


def emulated_vms_up(prefix: str, tmp_path_factory):
    """A `lab_fixture`'s body: the thesis machines as bare "VMs" (namespaces, cables, no addresses) running sshd."""
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


@lab_fixture(scope="session")
def lab():
    """The thesis testbed, up for the whole session under prefix `pyt`."""
    yield from fresh_lab("pyt")
