"""A place commands run: a QEMU VM booting a distribution's stock kernel over this machine's own root.

For what needs a kernel this host does not have (SRv6 routes, Debian 12's 6.1): ``labtools vm run -- CMD``.

- The kernel comes from the distribution's package (``apt-get download``), unpacked under ``build/vm/`` and cached
  there by package version, never installed into /boot. Its initramfs is static busybox plus the modules that
  mounting needs; ``busybox depmod`` indexes the modules (no kmod needed).
- The guest's root is this host's ``/``, read-only over virtio-9p, under a tmpfs overlay: the guest sees the
  project, its venv and the tools, and nothing it writes reaches the host, except in the writable *shares*
  (``build/vm/results`` by default), mounted at their own paths.
- No network device, so nothing of the host's network is touched; the guest's namespaces are its own.
- QEMU runs in its own process group, dies with this process (PR_SET_PDEATHSIG) and is killed on every exit.
- KVM where it can boot a stock guest; else TCG (software emulation, 15-35x slower: timings mean nothing).
- The command runs as root in the same directory; its exit status comes back. The kernel's package and version
  are on the guest's command line (``labtools.kernel_package=``), which every run's provenance records.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from labtools.base import paths
from labtools.base.errors import LabError, PrerequisiteError

# --kernel: the distribution's metapackage whose dependency is the versioned kernel image.
KERNELS = {"debian": "linux-image-amd64"}
# What mounting the host's root needs, with their dependencies (modules.dep) put into the initramfs.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
CMDLINE_KEY = "labtools.kernel_package"
EXIT_MARK = "labtools-vm-exit:"  # the guest prints it with the command's status last
MEMORY_MB = 4096
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package, ready to boot."""

    package: str  # linux-image-6.1.0-57-amd64
    version: str  # the package's version, 6.1.192-3 (what the cache is keyed by)
    release: str  # uname -r in the guest, 6.1.0-57-amd64
    root: Path  # the unpacked package

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules"

    @property
    def initrd(self) -> Path:
        return self.root.parent / f"{self.root.name}.initrd"

    @property
    def label(self) -> str:
        return f"{self.package}={self.version}"


def cache_dir() -> Path:
    return paths.project_root() / "build" / "vm"


def default_share() -> Path:
    return cache_dir() / "results"


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise PrerequisiteError(f"`{argv[0]}` is missing: run `make vm-deps`") from None
    if res.returncode != 0:
        raise LabError(f"vm: `{shlex.join(argv)}` failed: {(res.stderr or res.stdout).strip()[-800:]}")
    return res.stdout


def _apt_version(package: str) -> str:
    """The candidate version of `package` in the apt sources."""
    m = re.search(r"^Version: (\S+)", _run(["apt-cache", "show", "--no-all-versions", package]), re.M)
    if not m:
        raise LabError(f"vm: apt knows no version of {package}: run `apt-get update`")
    return m.group(1)


def resolve(kernel: str) -> tuple[str, str]:
    """(package, version) of the kernel image `kernel` names: a --kernel choice or a package name."""
    package = KERNELS.get(kernel, kernel)
    if package in KERNELS.values():
        deps = re.findall(r"Depends: (linux-image-\S+)", _run(["apt-cache", "depends", package]))
        if not deps:
            raise LabError(f"vm: {package} depends on no kernel image in the apt sources")
        package = deps[0]
    if not re.fullmatch(r"linux-image-[0-9][\w.+-]*", package):
        raise LabError(f"vm: unknown kernel {kernel!r}: choose {', '.join(KERNELS)} or a linux-image-* package")
    return package, _apt_version(package)


def _unpack(package: str, into: Path, work: Path) -> None:
    """apt-get download `package` into `work` and unpack it into `into` (nothing is installed)."""
    _run(["apt-get", "download", "-q", package], cwd=work)
    (deb,) = work.glob(f"{package}_*.deb")
    _run(["dpkg-deb", "-x", str(deb), str(into)])
    deb.unlink()


def _module_closure(modules: Path, release: str, names: Sequence[str]) -> list[str]:
    """The module files (relative to lib/modules/RELEASE) that load `names`, with their dependencies."""
    deps: dict[str, list[str]] = {}
    for line in (modules / release / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[Path(path).name.split(".ko")[0].replace("-", "_")] = [path, *rest.split()]
    # A name without a file is built into the kernel: nothing to load.
    return sorted({p for n in names if n in deps for p in deps[n]})


INIT = """#!/bin/busybox sh
# labtools vm stage 1: the host's root read-only under a tmpfs overlay, then stage 2 in it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev
echo "labtools-vm: loading modules"
for m in {modules}; do modprobe $m; done
p9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /host /rw /newroot
mount -t 9p -o $p9,ro,cache=loose hostroot /host || {{ echo "labtools-vm: no host root"; poweroff -f; }}
mount -t tmpfs -o mode=755 tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot
mkdir -p /newroot/usr/lib/modules && mount -t 9p -o $p9,ro modules /newroot/usr/lib/modules
i=0
for share in $(cat /shares); do
  mkdir -p /newroot$share && mount -t 9p -o $p9 share$i /newroot$share; i=$((i+1))
done
mkdir -p /newroot/.labtools-vm && cp /bin/busybox /stage2 /command /newroot/.labtools-vm/
exec switch_root /newroot /.labtools-vm/busybox sh /.labtools-vm/stage2
"""

STAGE2 = """# labtools vm stage 2: the mounts a system has, then the command; its status printed last.
bb=/.labtools-vm/busybox
$bb mount -t proc proc /proc; $bb mount -t sysfs sys /sys; $bb mount -t devtmpfs dev /dev
$bb mkdir -p /dev/pts /dev/shm && $bb mount -t devpts devpts /dev/pts && $bb mount -t tmpfs tmpfs /dev/shm
$bb mount -t tmpfs -o mode=755 tmpfs /run && $bb mkdir -p /run/netns /run/lock /run/sshd
# /tmp stays the overlay's (writes land in its tmpfs): a project checked out under /tmp must stay visible
$bb mount -t bpf bpf /sys/fs/bpf; $bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
$bb ln -s $bb /.labtools-vm/modprobe && echo /.labtools-vm/modprobe > /proc/sys/kernel/modprobe
$bb hostname labtools-vm; $bb ip link set lo up
echo "labtools-vm: up"
$bb sh /.labtools-vm/command </dev/null
echo "{mark}$?"
$bb sync; $bb poweroff -f
"""


def _cpio(src: Path, out: Path) -> None:
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    with open(out, "wb") as fh:
        res = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=src, input="\n".join(files).encode(),
                             stdout=fh, stderr=subprocess.PIPE)  # fmt: skip
    if res.returncode != 0:
        raise LabError(f"vm: cpio failed: {res.stderr.decode().strip()}")


def prepare(kernel: str = "debian", say: Callable[[str], None] = print) -> Kernel:
    """The kernel `kernel` names, unpacked and indexed, with its initramfs: from the cache when it is there."""
    package, version = resolve(kernel)
    root = cache_dir() / f"{package}_{version}"
    release = package.removeprefix("linux-image-")
    k = Kernel(package, version, release, root)
    if k.vmlinuz.exists() and k.initrd.exists():
        return k
    for tool in ("apt-get", "dpkg-deb", "cpio"):
        if not shutil.which(tool):
            raise PrerequisiteError(f"vm: `{tool}` is missing: run `make vm-deps`")
    _remove_stale()
    work = cache_dir() / f".work-{os.getpid()}"
    try:
        (work / "kernel").mkdir(parents=True)
        say(f"vm: fetching {package} {version} and busybox-static (apt-get download, into {cache_dir()})")
        _unpack(package, work / "kernel", work)
        _unpack("busybox-static", work / "busybox", work)
        busybox = work / "busybox" / "bin" / "busybox"
        say("vm: indexing the modules (busybox depmod) and packing the initramfs")
        _run([str(busybox), "depmod", "-b", str(work / "kernel"), release])
        initramfs = work / "initramfs"
        for d in ("bin", "proc", "sys", "dev"):
            (initramfs / d).mkdir(parents=True)
        shutil.copy2(busybox, initramfs / "bin" / "busybox")
        mods = work / "kernel" / "lib" / "modules" / release
        for rel in _module_closure(work / "kernel" / "lib" / "modules", release, BOOT_MODULES):
            (initramfs / "lib" / "modules" / release / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(mods / rel, initramfs / "lib" / "modules" / release / rel)
        _run([str(busybox), "depmod", "-b", str(initramfs), release])
        shutil.rmtree(root, ignore_errors=True)
        (work / "kernel").rename(root)
        _cpio(initramfs, work / "initrd")
        (work / "initrd").rename(k.initrd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return k


def _initrd_for(k: Kernel, shares: Sequence[Path], command: str, scratch: Path) -> Path:
    """The cached initramfs (busybox and modules) plus a second cpio archive appended: the scripts, this run's
    shares and command (the kernel unpacks both). Written into `scratch`; returns the initrd's path."""
    extra = scratch / "extra"
    extra.mkdir(parents=True)
    (extra / "init").write_text(INIT.format(modules=" ".join(BOOT_MODULES)))
    (extra / "init").chmod(0o755)
    (extra / "stage2").write_text(STAGE2.format(mark=EXIT_MARK))
    (extra / "shares").write_text("\n".join(str(s) for s in shares))
    (extra / "command").write_text(command)
    _cpio(extra, scratch / "extra.cpio")
    initrd = scratch / "initrd"
    with open(initrd, "wb") as fh:
        fh.write(k.initrd.read_bytes())
        fh.write((scratch / "extra.cpio").read_bytes())
    return initrd


def _remove_stale() -> None:
    """Scratch files of runs whose process is gone (killed outright: no `finally` ran)."""
    for p in (*cache_dir().glob(".run-*"), *cache_dir().glob(".work-*")):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def accelerator(kvm: str = "/dev/kvm", modules: Path = Path("/sys/module")) -> tuple[list[str], str]:
    """QEMU's accelerator options and why: KVM where it can boot a stock guest, else TCG."""
    if not os.access(kvm, os.R_OK | os.W_OK):
        return ["-accel", "tcg,thread=multi", "-cpu", "max"], "TCG (no usable /dev/kvm)"
    if (modules / "kvm_pvm").exists():
        return (["-accel", "tcg,thread=multi", "-cpu", "max"],
                "TCG (this KVM is kvm_pvm, a paravirtual kind that cannot boot stock guests)")  # fmt: skip
    return ["-accel", "kvm", "-cpu", "host"], "KVM"


def _command_script(argv: Sequence[str], cwd: Path) -> str:
    """The guest's shell script: the caller's directory and environment (what the lab reads), then `argv`."""
    keep = ("PATH", "HOME", "TERM", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("LABTOOLS_")}
    if not sys.stdout.isatty():  # the guest's console is a terminal; what reads this output may not be
        env.update(TERM="dumb", NO_COLOR="1", PY_COLORS="0")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    return f"{exports}cd {shlex.quote(str(cwd))} || exit 125\n{shlex.join(argv)}\n"


def _die_with_parent() -> None:
    """In QEMU before exec: SIGKILL when the process that started it dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def _killed_on_exit(proc: subprocess.Popen) -> Iterator[None]:
    """QEMU's process group is killed however this block ends; SIGTERM and SIGHUP end it like Ctrl-C."""

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class VmResult:
    """What a run in the VM gave: the command's status, how the VM ran, how long it took."""

    status: int
    accelerator: str
    boot_s: float  # from QEMU's start to the guest's "up"
    total_s: float
    kernel: Kernel


def run(argv: Sequence[str], *, kernel: str = "debian", shares: Sequence[Path] = (), memory_mb: int = MEMORY_MB,
        cpus: int | None = None, say: Callable[[str], None] = print) -> VmResult:  # fmt: skip
    """Run `argv` as root in a VM on `kernel`; its output goes to stdout, its status comes back."""
    if os.geteuid() != 0:
        raise PrerequisiteError("vm: needs root (the guest's root is this host's, shared by QEMU as root)")
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise PrerequisiteError("vm: qemu-system-x86_64 is missing: run `make vm-deps`")
    k = prepare(kernel, say)
    shares = [Path(s).resolve() for s in (shares or [default_share()])]
    for s in shares:
        s.mkdir(parents=True, exist_ok=True)
    accel, why = accelerator()
    _remove_stale()
    scratch = cache_dir() / f".run-{os.getpid()}"  # under build/, removed on every exit but SIGKILL (then next run)
    try:
        return _boot(qemu, k, accel, why, shares, argv, memory_mb, cpus, say,
                     _initrd_for(k, shares, _command_script(argv, Path.cwd()), scratch))  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _boot(qemu: str, k: Kernel, accel: list[str], why: str, shares: list[Path], argv: Sequence[str],
          memory_mb: int, cpus: int | None, say: Callable[[str], None], initrd: Path) -> VmResult:  # fmt: skip
    p9 = "security_model=passthrough,multidevs=remap"
    cmd = [qemu, *accel, "-m", str(memory_mb), "-smp", str(cpus or os.cpu_count() or 1), "-nodefaults",
           "-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none", "-no-reboot",
           "-kernel", str(k.vmlinuz), "-initrd", str(initrd),
           "-virtfs", f"local,path=/,mount_tag=hostroot,{p9},readonly=on",
           "-virtfs", f"local,path={k.modules},mount_tag=modules,{p9},readonly=on",
           *[a for i, s in enumerate(shares) for a in ("-virtfs", f"local,path={s},mount_tag=share{i},{p9}")],
           "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 {CMDLINE_KEY}={k.label}"]  # fmt: skip
    say(f"vm: booting {k.package} {k.version} under {why}; shares: {', '.join(map(str, shares))}")
    t0 = time.monotonic()
    boot_s, status = 0.0, None
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    with _killed_on_exit(proc):
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            if status is not None:
                continue  # the guest powering off
            if line.startswith(EXIT_MARK):
                status = int(line[len(EXIT_MARK):] or 1)
                continue
            if line == "labtools-vm: up":
                boot_s = time.monotonic() - t0
                say(f"vm: up in {boot_s:.0f} s; running {shlex.join(argv)}")
                continue
            print(line.replace("labtools-vm:", "vm:", 1), flush=True)
        proc.wait()
    total = time.monotonic() - t0
    if status is None:
        raise LabError(f"vm: the guest stopped before the command finished (QEMU exit {proc.returncode}); "
                       "see the output above")  # fmt: skip
    say(f"vm: exit status {status} after {total:.0f} s ({why.split(' ')[0]}, boot {boot_s:.0f} s)")
    sys.stdout.flush()
    return VmResult(status, why, boot_s, total, k)


def kernel_package(cmdline: Path = Path("/proc/cmdline")) -> str | None:
    """In a VM this module booted: the kernel's package and version (from the kernel command line); else None."""
    with contextlib.suppress(OSError):
        for arg in cmdline.read_text().split():
            if arg.startswith(f"{CMDLINE_KEY}="):
                return arg.split("=", 1)[1]
    return None
