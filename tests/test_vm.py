"""The VM runner's pieces that need no VM (`labtools vm run` itself runs in `make test`'s VM pass)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from labtools import cli
from labtools.base.errors import LabError
from labtools.hosts import vm


def test_boot_modules_come_with_their_dependencies_and_built_ins_are_skipped(tmp_path):
    dep = tmp_path / "6.1.0-57-amd64" / "modules.dep"
    dep.parent.mkdir()
    dep.write_text("kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
                   "kernel/net/9p/9pnet.ko:\nkernel/fs/netfs/netfs.ko:\n"
                   "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko\n")  # fmt: skip
    got = vm._module_closure(tmp_path, "6.1.0-57-amd64", ["9p", "9pnet_virtio", "virtio_pci"])
    assert got == ["kernel/fs/9p/9p.ko", "kernel/fs/netfs/netfs.ko", "kernel/net/9p/9pnet.ko",
                   "kernel/net/9p/9pnet_virtio.ko"]  # fmt: skip


def test_the_guest_runs_the_command_where_it_was_given_with_the_labs_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABTOOLS_PREFIX", "it's")
    monkeypatch.setenv("SECRET_TOKEN", "x")
    script = vm._command_script(["sh", "-c", "echo $LABTOOLS_PREFIX; pwd; exit 7"], tmp_path)
    assert "SECRET_TOKEN" not in script
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert res.returncode == 7 and res.stdout.split("\n")[:2] == ["it's", str(tmp_path)]
    assert f"cd {shlex.quote(str(tmp_path))}" in script


def test_the_kernel_package_is_read_from_the_guests_command_line(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"console=ttyS0 quiet {vm.CMDLINE_KEY}=linux-image-6.1.0-57-amd64=6.1.192-3\n")
    assert vm.kernel_package(cmdline) == "linux-image-6.1.0-57-amd64=6.1.192-3"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/vda1\n")
    assert vm.kernel_package(cmdline) is None


def test_kvm_is_used_only_where_it_boots_a_stock_guest(tmp_path):
    kvm, modules = tmp_path / "kvm", tmp_path / "module"
    (modules / "kvm").mkdir(parents=True)
    assert vm.accelerator(str(kvm), modules)[1] == "TCG (no usable /dev/kvm)"
    kvm.touch()
    assert vm.accelerator(str(kvm), modules) == (["-accel", "kvm", "-cpu", "host"], "KVM")
    (modules / "kvm_pvm").mkdir()  # this machine's kind: -cpu host aborts, other models hang
    opts, why = vm.accelerator(str(kvm), modules)
    assert opts == ["-accel", "tcg,thread=multi", "-cpu", "max"] and why.startswith("TCG (this KVM is kvm_pvm")


def test_vm_run_without_a_command_is_a_clear_error(capsys):
    assert cli.main(["vm", "run", "--"]) == 2
    err = capsys.readouterr().err
    assert "give the command after --" in err and "Traceback" not in err


def test_an_unknown_kernel_is_refused_before_anything_is_fetched():
    with pytest.raises(LabError, match="unknown kernel 'bsd'"):
        vm.resolve("bsd")
