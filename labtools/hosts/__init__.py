"""Layer 2, hosts: one way to run commands anywhere.

`Host.run()` on a local network namespace (`NetnsHost`), an SSH machine (`SSHHost`, paramiko), or
through another host (`ExecHost`: ``kubectl exec``, ``sudo -n``); `RecordingHost` runs nothing, for unit
tests (it records the commands and answers from a script). `namespaces` holds the low-level
network-namespace helpers the lab builds on. `Host.session()` keeps a command running between requests
(one line of answer each): the eBPF map writer that stays up as Cilium's agent does.
"""

from labtools.hosts.base import Host, Process, Result, Session, ShellProcess, start_script
from labtools.hosts.exec import ExecHost, as_root, privileged
from labtools.hosts.local import NetnsHost, NetnsProcess
from labtools.hosts.recording import Call, RecordingHost, Reply
from labtools.hosts.ssh import SSHConfig, SSHHost

__all__ = ["Call", "ExecHost", "Host", "NetnsHost", "NetnsProcess", "Process", "RecordingHost", "Reply", "Result",
           "SSHConfig", "SSHHost", "Session", "ShellProcess", "as_root", "privileged", "start_script"]
