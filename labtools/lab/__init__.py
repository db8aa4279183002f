"""Layer 3, lab: bring a testbed up and down, and what runs on it (traffic tools, captures, reachability).

`Lab` is the testbed of an inventory on the netns or SSH backend.
"""

from labtools.lab.lab import InterfaceState, Lab, ssh_config

__all__ = ["InterfaceState", "Lab", "ssh_config"]
