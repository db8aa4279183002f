"""The exceptions labtools raises. Each message says what failed, where, and how to fix it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class LabError(Exception):
    """Base class of every error labtools raises on purpose."""


class PrerequisiteError(LabError):
    """Something the machine must provide is missing: root, a tool, a kernel feature."""


class InventoryError(LabError):
    """An inventory file is malformed; the message names the file and line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path, self.line, self.reason = path, line, message
        where = f"{path or '<inventory>'}:{line}: " if line else f"{path}: " if path else ""
        super().__init__(f"{where}{message}")


class WorkerStateUnknown(LabError):
    """Nothing says what the lab's worker is programmed with (an apply was interrupted, or none was made)."""


class HostUnreachable(LabError):
    """A host cannot be reached: a missing namespace, a refused or timed-out connection."""


class HostKeyError(LabError):
    """An SSH host key is unknown or does not match."""


class CommandError(LabError):
    """A command run on a host failed or timed out."""

    def __init__(
        self,
        host: str,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        timeout: float | None = None,
    ):
        self.host, self.argv, self.returncode = host, list(argv), returncode
        self.stdout, self.stderr, self.timeout = stdout, stderr, timeout
        cmd = shlex.join(self.argv)
        what = f"timed out after {timeout:g} s" if timeout is not None else f"failed (exit {returncode})"
        detail = (stderr or stdout).strip()
        super().__init__(f"[{host}] `{cmd}` {what}" + (f":\n{detail}" if detail else ""))
