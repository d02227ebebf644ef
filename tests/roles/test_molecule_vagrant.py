"""node_prep's Molecule `vagrant` scenario, run for real: Debian 12's vagrant 2.3 and vagrant-libvirt 0.11, the
molecule-plugins[vagrant] driver, a libvirtd this test starts, and a box made from the lab's Debian image
(`pyctl.lab.vagrant_box`; none can be downloaded here).

Network: the test creates a network namespace and starts libvirtd (and virtlogd) inside it, so the management
network vagrant-libvirt makes (192.168.121.0/24: its bridge, dnsmasq and NAT rules) and the guests' taps exist
only in that namespace; vagrant, Molecule and Ansible run inside it too (`ip netns exec`). libvirtd's control
socket is a file, so nothing else is needed to reach it. Guests run as libvirt domains of type `qemu` (TCG):
/dev/kvm here is a nested device that stock guest kernels die on.

Only node1 (Debian 12) runs: node2 is Ubuntu, and no Ubuntu box can be had here. The scenario's converge,
idempotence and verify must pass on it, as on a user's workstation.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_root, unique_lab_name
from tests.roles.conftest import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow]

BOX = "pyctl/debian12"
TOOLS = ("vagrant", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")
VIRSH = ["virsh", "--connect", "qemu:///system"]


def _require(condition: bool, reason: str) -> None:
    """Skip when `condition` fails, or fail where CI is set (CI installs all of it through scripts/setup)."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _virsh(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRSH, *args], capture_output=True, text=True, timeout=120, check=check)


def _wait_for(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def vagrant_modules() -> Path:
    import molecule_plugins.vagrant

    return Path(molecule_plugins.vagrant.__file__).parent / "modules"


@dataclass
class Libvirt:
    netns: str
    vagrant_home: Path
    prefix: str  # vagrant-libvirt names domains <Vagrantfile directory>_<machine>
    log: Path


@pytest.fixture
def libvirt_in_netns(tmp_path) -> Iterator[Libvirt]:
    """libvirtd and virtlogd started inside a network namespace made for this test, stopped (by their process
    ids) and the namespace removed at the end; the domains, network and box volume of this run go too."""
    require_root("the Vagrant scenario starts libvirtd in a network namespace: it needs root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    _require(not missing, f"{', '.join(missing)} missing: run scripts/setup (it installs vagrant-libvirt)")
    running = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, check=False).returncode == 0
    _require(not running, "a libvirtd runs already: this test starts its own, inside a network namespace")
    name = unique_lab_name("vg")
    netns = f"pyctl-{name}"
    # VAGRANT_HOME holds the box's kernel, which libvirt's QEMU user reads: a directory it can reach.
    vagrant_home = Path(tempfile.mkdtemp(prefix=f"pyctl-{name}-", dir="/var/tmp"))
    vagrant_home.chmod(0o755)
    log = tmp_path / "libvirtd.log"
    daemons: list[subprocess.Popen] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with log.open("w") as out:
            for daemon in ("virtlogd", "libvirtd"):  # foreground: `ip netns exec` becomes the daemon
                command = [daemon] if daemon == "virtlogd" else _without_kvm("libvirtd", tmp_path)
                daemons.append(subprocess.Popen(["ip", "netns", "exec", netns, *command], stdout=out, stderr=out))
        _wait_for("libvirtd answering", lambda: _virsh("version").returncode == 0 or daemons[1].poll() is not None, 60)
        assert daemons[1].poll() is None, log.read_text()
        yield Libvirt(netns, vagrant_home, f"molecule-{name}", log)
    finally:
        if daemons and daemons[-1].poll() is None:
            _clean_libvirt(f"molecule-{name}_")
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(vagrant_home, ignore_errors=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        print(f"\nlibvirtd, vagrant, Molecule, Ansible (and the box, if made): {cpu:.0f} CPU-s; not QEMU's")


def _without_kvm(daemon: str, scratch: Path) -> list[str]:
    """`daemon` in a mount namespace where /dev/kvm is an empty file no one may open, and libvirt's qemu.conf
    with `namespaces = []` (else libvirt moves that mount into each domain's own /dev, which fails here). The
    domains run under TCG anyway; but here /dev/kvm is one that QEMU opens and libvirt's access check for its
    QEMU user refuses, so libvirt found its cached QEMU capabilities stale ("KVM was enabled when probing ...,
    but it is not available now") at every look-up and probed QEMU again, twice, 2 s a time: 44 s for each
    domain definition, of which vagrant-libvirt makes two."""
    if not Path("/dev/kvm").exists():
        return [daemon]
    mask = scratch / "no-kvm"
    mask.touch(mode=0o000)
    conf = scratch / "qemu.conf"
    conf.write_text(Path("/etc/libvirt/qemu.conf").read_text() + "\nnamespaces = []\n")
    script = 'mount --bind "$0" /dev/kvm && mount --bind "$1" /etc/libvirt/qemu.conf && exec "$2"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(mask), str(conf), daemon]


def _clean_libvirt(prefix: str) -> None:
    """What a failed run may leave in libvirt: this run's domains, the management network's dnsmasq (a process
    in the namespace), and the box volume vagrant-libvirt uploaded (800 MB in /var/lib/libvirt/images)."""
    for domain in _virsh("list", "--all", "--name").stdout.split():
        if domain.startswith(prefix):
            _virsh("destroy", domain)
            _virsh("undefine", domain, "--remove-all-storage")
    if "vagrant-libvirt" in _virsh("net-list", "--name").stdout.split():
        _virsh("net-destroy", "vagrant-libvirt")
    volumes = _virsh("vol-list", "default").stdout.split()
    for volume in volumes:
        if volume.startswith(BOX.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"):
            _virsh("vol-delete", "--pool", "default", volume)


@pytest.fixture
def local_box(libvirt_in_netns) -> str:
    """The box made from the lab's image (cached with it), added to this test's VAGRANT_HOME."""
    from pyctl.config import load_settings
    from pyctl.lab import vagrant_box

    path = vagrant_box.ensure(load_settings(), progress=print)
    env = dict(os.environ, VAGRANT_HOME=str(libvirt_in_netns.vagrant_home))
    subprocess.run(["vagrant", "box", "add", "--name", BOX, str(path)], env=env, check=True, capture_output=True)
    return BOX


def test_node_prep_vagrant_scenario_converges_idempotently_on_a_libvirt_vm(libvirt_in_netns, local_box, tmp_path):
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(
        os.environ,
        VAGRANT_HOME=str(libvirt_in_netns.vagrant_home),
        PYCTL_VAGRANT_BOX_DEBIAN=local_box,
        PYCTL_VAGRANT_LIBVIRT_DRIVER="qemu",
        # The driver's own `vagrant` module: Molecule 26 no longer puts a driver's modules on Ansible's path.
        ANSIBLE_LIBRARY=str(vagrant_modules()),
        # Molecule's state and the Vagrantfile for this test only (its directory names the libvirt domains).
        MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / libvirt_in_netns.prefix),
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
    )
    command = ["ip", "netns", "exec", libvirt_in_netns.netns, "molecule", "test", "-s", "vagrant"]
    returncode, output, steps = _run_timing_steps(
        [*command, "--platform-name", "node1"], ROOT / "roles" / "node_prep", env
    )
    assert returncode == 0, output[-20000:]
    for action in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"\[vagrant > {action}\] Executed: Successful", output), output[-5000:]
    recaps = [line for line in output.splitlines() if re.match(r"^node1\s+: ok=", line)]
    assert len(recaps) >= 3, output[-5000:]  # converge, idempotence and verify ran on the VM
    # The VM was a domain of this namespace's libvirtd, run under TCG (QEMU's command line, which libvirt logs),
    # and destroy removed it.
    logs = sorted(Path("/var/log/libvirt/qemu").glob(f"{libvirt_in_netns.prefix}_*.log"))
    assert [log.name for log in logs] == [f"{libvirt_in_netns.prefix}_node1.log"], logs
    assert re.search(r"-accel tcg|accel=tcg", logs[0].read_text()), logs[0].read_text()[-3000:]
    assert not [d for d in _virsh("list", "--all", "--name").stdout.split() if d.startswith(libvirt_in_netns.prefix)]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\nmolecule test -s vagrant (node_prep, node1 under TCG): {time.monotonic() - start:.0f} s wall,"
        f" {after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime:.0f} CPU-s in Molecule and Ansible"
        " (not QEMU's: libvirtd daemonizes it, so its CPU time is not counted here)",
        *recaps,
        "the steps (s): " + ", ".join(f"{step} {seconds:.0f}" for step, seconds in steps),
        sep="\n  ",
    )


def _run_timing_steps(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, list[tuple[str, float]]]:
    """Run `molecule test`, its output read as it comes, and time each of its steps from Molecule's
    `[scenario > step] Executing` lines (printed at the end: where a CI run's minutes go)."""
    lines: list[str] = []
    steps: list[tuple[str, float]] = []
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        watchdog = threading.Timer(3600, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                started = re.search(r"\[vagrant > (\w+)\] Executing", line)
                if started:
                    steps.append((started[1], time.monotonic()))
        finally:
            watchdog.cancel()
    ends = [start for _, start in steps[1:]] + [time.monotonic()]
    return (
        proc.returncode,
        "".join(lines),
        [(step, end - start) for (step, start), end in zip(steps, ends, strict=False)],
    )
