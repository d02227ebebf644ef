"""SSH into the lab: the lab key, per-host host keys pinned in known_hosts, the ssh_config, readiness.

Every lab has its own ed25519 key pair (never baked into an image) and every host its own host key, so
`StrictHostKeyChecking yes` holds. The ssh_config reaches hosts through a ProxyCommand that runs socat
inside the lab namespace; OpenSSH, Ansible (`-F ssh_config`) and paramiko/fabric all honour it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pyctl.lab.errors import LabBootTimeout
from pyctl.lab.model import Lab, LabHost
from pyctl.lab.network import ns_path
from pyctl.lab.processes import run, tool_env

HOST_KEY = "ssh_host_ed25519_key"


def keygen(path: Path, comment: str) -> None:
    """An ed25519 key pair at `path` and `path`.pub (replaced if present)."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], what="ssh-keygen")
    path.chmod(0o600)


def make_keys(lab: Lab) -> None:
    """The lab's client key and one host key per host; known_hosts pins them by name and address."""
    keygen(lab.key_path, f"pyctl-lab-{lab.name}")
    (lab.dir / "authorized_keys").write_text(public_key(lab.key_path), encoding="utf-8")
    (lab.dir / "authorized_keys").chmod(0o600)
    lines = []
    for host in lab.hosts:
        directory = lab.host_dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        keygen(directory / HOST_KEY, f"{host.name}.{lab.name}.pyctl-lab")
        key_type, key = public_key(directory / HOST_KEY).split()[:2]
        lines.append(f"{host.name},{host.address} {key_type} {key}\n")
    lab.known_hosts_path.write_text("".join(lines), encoding="utf-8")


def public_key(private: Path) -> str:
    return private.with_name(private.name + ".pub").read_text(encoding="utf-8")


def proxy_command(lab: Lab) -> str:
    # nsenter only enters the network namespace (ip netns exec would also remount /sys); socat then
    # connects to the host inside it. %h/%p are expanded by ssh and by paramiko.
    return f"/usr/bin/nsenter --net={ns_path(lab.namespace)} /usr/bin/socat - TCP:%h:%p"


def write_ssh_config(lab: Lab) -> Path:
    blocks = [f"# SSH into pyctl lab {lab.name!r} ({lab.kind}). Use: ssh -F {lab.ssh_config_path} HOST\n"]
    for host in lab.hosts:
        blocks.append(
            f"\nHost {host.name} {host.address}\n"
            f"  HostName {host.address}\n"
            "  Port 22\n"
            "  User root\n"
            f"  IdentityFile {lab.key_path}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {lab.known_hosts_path}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  PasswordAuthentication no\n"
            "  LogLevel ERROR\n"
            f"  ProxyCommand {proxy_command(lab)}\n"
        )
    lab.ssh_config_path.write_text("".join(blocks), encoding="utf-8")
    return lab.ssh_config_path


def probe(lab: Lab, host: LabHost, command: str | None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run `command` on the host over SSH with the pinned key; returncode 255 means SSH itself failed.

    With no command, only log in: open the sftp subsystem and close it at once. That proves the same
    (host key pinned, lab key accepted) without starting a login shell, which costs more than the
    rest of the login on a busy machine (root's shell profile here takes half a second).
    """
    connect_timeout = int(min(30, max(1, timeout)))
    if command is None:
        argv = lab.ssh_argv(host, connect_timeout=connect_timeout, subsystem="sftp")
    else:
        argv = lab.ssh_argv(host, command, connect_timeout=connect_timeout)
    try:
        return subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            env=tool_env(),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([], 255, "", f"no answer within {timeout:.0f} s")


def reachable(lab: Lab, host: LabHost, timeout: float = 15) -> bool:
    return probe(lab, host, None, timeout).returncode == 0


READY_STATES = ("running", "degraded")


def wait_ready(
    lab: Lab,
    host: LabHost,
    *,
    timeout: float,
    systemd: bool,
    console_log: Path | None,
    alive: Callable[[], bool],
) -> None:
    """Wait until SSH answers with the pinned key (and, for systemd hosts, boot has finished).

    Polls conditions; never sleeps a fixed time. Raises LabBootTimeout naming the host and its console
    log when `timeout` passes, or at once when the host's process has died.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    # One SSH session that waits for the end of boot (--wait) rather than polling: under TCG every
    # login costs the guest seconds of CPU it needs for booting.
    command = "systemctl is-system-running --wait" if systemd else None
    while True:
        if not alive():
            _fail(lab, host, "its process exited", console_log)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _fail(lab, host, f"not ready within {timeout:.0f} s (last: {last})", console_log)
        result = probe(lab, host, command, timeout=max(2, remaining))
        state = result.stdout.strip()
        if result.returncode == 0 and (not systemd or state in READY_STATES):
            return
        if systemd and result.returncode != 255:
            if state in READY_STATES:
                return
            if state in ("maintenance", "stopping", "offline"):
                _fail(lab, host, f"systemd reports {state!r}", console_log)
            last = f"systemd is {state or 'not answering'}"
            time.sleep(1)
        else:
            last = (result.stderr.strip().splitlines() or ["ssh failed"])[-1]
            time.sleep(0.5 if systemd else 0.1)


def _fail(lab: Lab, host: LabHost, why: str, console_log: Path | None) -> None:
    where = f"; console log: {console_log}" if console_log else ""
    tail = _last_line(console_log) if console_log else None
    hint = f"last console line: {tail!r}; " if tail else ""
    raise LabBootTimeout(
        f"lab {lab.name}: host {host.name} ({host.address}) did not come up: {why}{where}",
        hint=f"{hint}clean up with 'pyctl lab down --name {lab.name}'",
    )


def _last_line(path: Path) -> str | None:
    try:
        data = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in data.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else None
