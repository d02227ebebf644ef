"""The node phases through pyctl itself, on VM hosts: a first run converges, a second run changes nothing on
any host, and after a reboot the state is back (swap off, modules, sysctls, containerd, the export) and a third
run again changes nothing. Tests in this module run in order on the session's VM lab."""

from __future__ import annotations

import re

import pytest

from tests.roles.conftest import PHASES, bootstrap, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """One pyctl state directory for the module: runs and the cluster's files (the SSH key) persist across runs."""
    return tmp_path_factory.mktemp("bootstrap-state")


def assert_no_change(run, hosts) -> None:
    assert run.returncode == 0, run.output
    assert sorted(run.per_host("ok")) == sorted(hosts), run.output
    changed = {host: count for host, count in run.per_host("changed").items() if count}
    assert not changed, f"a re-run changed something: {changed}\n{run.output}"


def test_first_run_converges_and_a_second_run_changes_nothing(vm_lab, state):
    hosts = [h.name for h in vm_lab.hosts]
    first = bootstrap(vm_lab.inventory_path, state, "--phases", PHASES)
    assert first.returncode == 0, first.output
    assert sorted(first.per_host("ok")) == sorted(hosts), first.output
    assert "== phase ssh_trust" in first.stdout
    second = bootstrap(vm_lab.inventory_path, state, "--phases", PHASES)
    assert_no_change(second, hosts)
    print(f"\nfirst run {first.seconds:.0f} s, no-op re-run {second.seconds:.0f} s")
    # The cluster's key went to the cluster directory pyctl passed (pyctl_cluster_dir), private.
    key_dir = next((state / "clusters").iterdir()) / "ssh"
    assert oct(key_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((key_dir / "id_ed25519").stat().st_mode & 0o777) == "0o600"


def _boot_id(lab, host) -> str:
    return lab.ssh(host, "cat /proc/sys/kernel/random/boot_id", timeout=60).stdout.strip()


def _booted(lab, host, old_boot_id: str) -> bool:
    result = lab.ssh(
        host, "cat /proc/sys/kernel/random/boot_id; systemctl is-system-running --wait", timeout=300, check=False
    )
    lines = result.stdout.split()
    return len(lines) == 2 and lines[0] != old_boot_id and lines[1] in ("running", "degraded")


def test_after_a_reboot_everything_is_back_and_a_rerun_changes_nothing(vm_lab, state):
    before = {h.name: _boot_id(vm_lab, h.name) for h in vm_lab.hosts}
    for host in vm_lab.hosts:
        vm_lab.ssh(host.name, "nohup sh -c 'sleep 2; systemctl reboot' >/dev/null 2>&1 &", timeout=120)
    for host in vm_lab.hosts:
        wait_for(lambda h=host.name: _booted(vm_lab, h, before[h]), timeout=1200, what=f"{host.name} to boot again")

    for host in vm_lab.hosts:
        out = vm_lab.ssh(
            host.name,
            "swapon --show --noheadings | wc -l; ls -d /sys/module/overlay /sys/module/br_netfilter | wc -l;"
            " sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward;"
            " systemctl is-active containerd; ctr version >/dev/null && echo ctr-ok;"
            " containerd config dump | grep -c '^ *SystemdCgroup = true';"
            " findmnt --noheadings --output FSTYPE --mountpoint /mnt/pyctl",
            timeout=300,
        ).stdout.split()
        assert out[0] == "0", f"{host.name}: swap is back: {out}"
        assert out[1] == "2", f"{host.name}: modules not loaded at boot: {out}"
        assert out[2:5] == ["1", "1", "1"], f"{host.name}: sysctls not applied at boot: {out}"
        assert out[5:7] == ["active", "ctr-ok"], f"{host.name}: containerd not healthy: {out}"
        assert int(out[7]) >= 1, f"{host.name}: SystemdCgroup lost: {out}"
        assert out[8] in ("nfs", "nfs4"), f"{host.name}: the export is not mounted after boot: {out}"
    exports = vm_lab.ssh("node1", "exportfs -s", timeout=120).stdout
    assert re.search(rf"^/srv/pyctl\s+{re.escape(vm_lab.subnet)}\(.*root_squash", exports, re.M), exports

    again = bootstrap(vm_lab.inventory_path, state, "--phases", PHASES)
    assert_no_change(again, [h.name for h in vm_lab.hosts])
