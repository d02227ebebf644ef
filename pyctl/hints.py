"""Known errors and what to do about them: module messages matched to a hint a user can act on."""

from __future__ import annotations

import re

# (pattern, hint). First match wins; keep the most specific patterns first.
KNOWN_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), hint)
    for pattern, hint in (
        (
            r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|host key for .* has changed",
            "the host's SSH key changed or is unknown: if the host was reinstalled, remove the old key "
            "(ssh-keygen -R <address>) and connect once to accept the new one",
        ),
        (
            r"Permission denied \(publickey|Permission denied, please try again|Authentication failed",
            "the host refused the SSH key: check ansible_user and ansible_ssh_private_key_file, and that the "
            "public key is in that user's ~/.ssh/authorized_keys",
        ),
        (
            r"Could not resolve hostname|Name or service not known|Temporary failure in name resolution"
            r"|nodename nor servname",
            "the host name does not resolve: set ansible_host to its IP address or fix DNS / /etc/hosts",
        ),
        (
            r"Connection timed out|No route to host|Connection refused|Network is unreachable",
            "the host does not answer on SSH: check that it is up, the address and port, and any firewall",
        ),
        (
            r"Missing sudo password|sudo: a password is required|privilege escalation prompt",
            "the SSH user needs passwordless sudo on the host (or connect as root)",
        ),
        (
            r"Could not get lock|Unable to acquire the dpkg frontend lock|dpkg was interrupted|lock-frontend",
            "another apt/dpkg process holds the lock (often unattended-upgrades): wait for it to finish, "
            "or run 'dpkg --configure -a' if a previous install was interrupted, then re-run",
        ),
        (
            r"No space left on device",
            "the host's disk is full: free space (apt-get clean, journalctl --vacuum-size=200M) and re-run",
        ),
        (
            r"/usr/bin/python3?: not found|No such file or directory.*python|interpreter discovery|"
            r"python3?: command not found",
            "Python 3 is missing on the host: install it (apt-get install -y python3) and re-run",
        ),
        (
            r"pod cidr not assigned|podCIDR|CIDR .*overlap|overlaps",
            "the pod network must use one CIDR everywhere: set pod_cidr once in the inventory's [all:vars]; "
            "it feeds kubeadm's podSubnet and flannel",
        ),
        (
            r"Failed to update apt cache|Temporary failure resolving|Unable to fetch some archives|"
            r"Failed to fetch",
            "the host cannot reach its package mirror: check its DNS, proxy and apt sources",
        ),
        (
            r"nvidia-smi",
            "the NVIDIA driver is not working on this GPU host: install the driver and reboot, check "
            "'nvidia-smi' by hand, or set gpu=false for this host",
        ),
        (
            r"swap",
            "swap must stay off on Kubernetes nodes: check /etc/fstab, zram and systemd swap units",
        ),
    )
)


def hint_for(message: str) -> str | None:
    """The hint for the first known error that matches `message`, or None."""
    for pattern, hint in KNOWN_ERRORS:
        if pattern.search(message or ""):
            return hint
    return None
