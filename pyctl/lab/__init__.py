"""`pyctl lab`: a local multi-host lab (QEMU VMs, systemd-nspawn containers, network namespaces, or mixed).

The Python API other code and tests use:

    from pyctl.lab import LabSpec, up, down, status

    lab = up(LabSpec(name="demo", nodes=3, kind="netns")).lab
    lab.inventory_path            # YAML inventory that passes pyctl.inventory.check
    lab.ssh(lab.hosts[1], "hostname").stdout
    lab.connection("node2")       # a fabric Connection through the lab's ssh_config
    reboot(lab, ["node2"])        # as its kind reboots (VM, container or netns host); back when it answers
    down("demo")

Everything a lab makes lives inside its own network namespaces and under `settings.labs_dir / NAME`.
"""

from pyctl.lab.lifecycle import (
    DownResult,
    HostStatus,
    LabStatus,
    UpResult,
    down,
    down_all,
    get,
    names,
    reboot,
    status,
    up,
)
from pyctl.lab.model import KINDS, Lab, LabHost, LabSpec

__all__ = [
    "KINDS",
    "DownResult",
    "HostStatus",
    "Lab",
    "LabHost",
    "LabSpec",
    "LabStatus",
    "UpResult",
    "down",
    "down_all",
    "get",
    "names",
    "reboot",
    "status",
    "up",
]
