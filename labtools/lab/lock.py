"""One command at a time per lab: a lock file in the lab's state folder, held with flock(2).

A command that changes or measures a lab takes the lock for as long as it runs (`LabLock.hold`); a second one
is refused at once, and told who holds it (command and pid, written into the file). The kernel drops a flock
when its holder dies, even by kill -9, so a lock is never stale for long; a holder that died without
releasing leaves its line in the file, and the next command takes over with a note. Within one process the
lock is re-entrant (the command holds it, and the worker's owner takes it again inside).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

from labtools.base.errors import LabError

LOCK_FILE = "lock"


class LabBusy(LabError):
    """Another command holds the lab."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(text: str) -> tuple[int, str] | None:
    pid, _, command = text.strip().partition(" ")
    return (int(pid), command) if pid.isdigit() else None


class LabLock:
    """The lock of one lab's state folder (`lab.state.dir`)."""

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}  # this process's locks: path -> (fd, depth)

    def __init__(self, state_dir: Path, lab: str, note: Callable[[str], None] | None = None):
        self.path = Path(state_dir) / LOCK_FILE
        self.lab = lab
        self.note = note or (lambda msg: print(f"labtools: note: {msg}", file=sys.stderr))

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self.path in self._held

    def holder(self) -> tuple[int, str] | None:
        """(pid, command) of whoever holds or last held the lock without releasing it; None if nobody."""
        try:
            return _holder(self.path.read_text())
        except OSError:
            return None

    def acquire(self, command: str | None = None) -> None:
        """Take the lock, or raise `LabBusy` naming the holder. Re-entrant within this process."""
        if self.path in self._held:
            fd, depth = self._held[self.path]
            self._held[self.path] = (fd, depth + 1)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._lock()
        try:
            before = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            if before and before[0] != os.getpid():  # the holder died without releasing (flock went with it)
                self.note(f"lab {self.lab}: took over the lock of `{before[1]}` (pid {before[0]}), which is gone")
            line = f"{os.getpid()} {command or ' '.join(sys.argv)}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, line, 0)
        except BaseException:
            os.close(fd)
            raise
        self._held[self.path] = (fd, 1)

    def _lock(self) -> int:
        for _ in range(2):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = self.holder()
                if holder and not _alive(holder[0]):  # its flock lives on in a process it left behind
                    self.note(f"lab {self.lab}: the lock's holder `{holder[1]}` (pid {holder[0]}) is gone but "
                              "its lock is not (a leftover process holds it): taking the lock over")  # fmt: skip
                    self.path.unlink(missing_ok=True)
                    continue
                who = f"`{holder[1]}` (pid {holder[0]})" if holder else "another command"
                raise LabBusy(f"lab {self.lab} is in use by {who}: wait for it to finish, or use another "
                              "--prefix") from None  # fmt: skip
            if not os.path.exists(self.path) or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                os.close(fd)  # the file was replaced between open and flock (a takeover): lock the new one
                continue
            return fd
        raise LabBusy(f"lab {self.lab}: could not take its lock {self.path}")

    def release(self) -> None:
        if self.path not in self._held:
            return
        fd, depth = self._held[self.path]
        if depth > 1:
            self._held[self.path] = (fd, depth - 1)
            return
        del self._held[self.path]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # released cleanly: nobody to take over from
        os.close(fd)

    @contextlib.contextmanager
    def hold(self, command: str | None = None) -> Iterator[LabLock]:
        self.acquire(command)
        try:
            yield self
        finally:
            self.release()
