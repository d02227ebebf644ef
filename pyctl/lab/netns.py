"""netns hosts: light "machines" that share this machine's files and processes.

Each host is an sshd in its own network namespace (address on `eth0`, a veth into the lab bridge),
started inside its own mount, IPC and UTS namespaces with a private tmpfs on /dev/shm, its own
/etc/hosts and its own host name. SSH sessions into the host inherit all of that, which is what
SSH-launched training needs: torchrun/gloo see one interface and one address per machine, and DistDGL
servers of different "machines" no longer overwrite each other's partitions in /dev/shm.

The sshd uses its own config, host key and pidfile under the lab directory. It accepts the lab key
(the lab's own authorized_keys file) and, like any sshd, each user's ~/.ssh/authorized_keys: netns
hosts share this machine's users, so the training user that `pyctl bootstrap --phases ssh_trust`
creates can log in to them as it would to real hosts. The lab key is never added to any user's
~/.ssh, so it grants nothing outside the lab's own sshds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyctl.config import Settings
from pyctl.lab import network
from pyctl.lab.model import Lab, LabHost
from pyctl.lab.processes import pidfile_alive, run, wait_for_pidfile
from pyctl.lab.ssh import HOST_KEY

TOOLS = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "socat": "socat",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
}

SYSTEMD = False  # readiness is SSH answering; there is no init of its own
BOOT_TIMEOUT = 60.0
PARALLEL_START = True  # hosts are independent: start them all at once
SHM_SIZE = "50%"  # of RAM, like the kernel's default /dev/shm: DistDGL copies partitions there

# Runs inside `ip netns exec HOSTNS unshare --mount --ipc --uts`: a private /dev/shm, this host's
# /etc/hosts and host name, then sshd. Values come in as positional arguments, never pasted into the script.
_START = (
    'mount -t tmpfs -o "size=$4,mode=1777,nosuid,nodev" pyctl-shm /dev/shm'
    ' && mount --bind "$3" /etc/hosts'
    ' && hostname "$1"'
    ' && exec /usr/sbin/sshd -f "$2"'
)


def sshd_config(lab: Lab, host: LabHost) -> str:
    directory = lab.host_dir(host)
    return (
        f"# sshd for pyctl lab {lab.name}, host {host.name}: key-only root login on the lab address.\n"
        f"ListenAddress {host.address}\n"
        "Port 22\n"
        f"HostKey {directory / HOST_KEY}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {lab.dir / 'authorized_keys'} .ssh/authorized_keys\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "HostbasedAuthentication no\n"
        # PAM would run this machine's session stack (loginuid, motd); there is no login to manage here.
        "UsePAM no\n"
        # The key files are ours (0600, in a 0700 lab dir); StrictModes would also demand that every
        # parent directory up to / is unwritable by others, which a lab under /tmp does not meet.
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "AcceptEnv LANG LC_* GLOO_* NCCL_* PET_* DGL_*\n"
        "Subsystem sftp internal-sftp\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 100\n"
    )


def prepare(lab: Lab, settings: Settings, progress: Callable[[str], None]) -> None:
    """Nothing to build: netns hosts run this machine's own sshd."""


def start_lab(lab: Lab, hosts: list[LabHost]) -> None:
    """Make each host's namespace and join it to the lab bridge."""
    network.create_host_namespaces(
        lab.namespace,
        [network.HostLink(h.namespace, f"v-{h.name}", h.address) for h in hosts if h.namespace],
        lab.network.prefixlen,
        lab.dir,
    )


def start(lab: Lab, host: LabHost) -> None:
    """Start the host's sshd in its namespaces; returns once sshd listens (it daemonises after binding)."""
    assert host.namespace is not None
    directory = lab.host_dir(host)
    config = directory / "sshd_config"
    config.write_text(sshd_config(lab, host), encoding="utf-8")
    hosts = directory / "hosts"
    hosts.write_text(lab.etc_hosts(), encoding="utf-8")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    (directory / "sshd.pid").unlink(missing_ok=True)
    run(
        [
            "ip", "netns", "exec", host.namespace,
            "unshare", "--mount", "--ipc", "--uts", "--propagation", "private", "--",
            "sh", "-c", _START, "pyctl-lab-host", host.name, str(config), str(hosts), SHM_SIZE,
        ],
        what=f"starting sshd for lab host {host.name}",
        timeout=30,
    )  # fmt: skip
    wait_for_pidfile(directory / "sshd.pid", timeout=10)


def pid(lab: Lab, host: LabHost) -> int | None:
    return pidfile_alive(lab.host_dir(host) / "sshd.pid")


def console_log(lab: Lab, host: LabHost) -> Path | None:
    return None
