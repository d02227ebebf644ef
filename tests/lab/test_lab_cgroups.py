"""The bookkeeping that lets many container hosts share this machine: a cgroup of their own per host, the
inotify limits N systemd instances need, and the sysctls the lab sets for hosts that cannot set them.

No root needed: the cgroup and /proc/sys trees here are plain directories under tmp_path.
"""

from __future__ import annotations

from pathlib import Path

from pyctl.lab import Lab, LabSpec, cgroups, container
from pyctl.lab.model import plan_hosts, subnet_for

MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""


def _lab(tmp_path: Path, nodes: int = 3) -> Lab:
    spec = LabSpec(name="big", nodes=nodes, kind="container")
    return Lab(
        name="big", kind="container", dir=tmp_path / "lab", subnet=subnet_for(3), hosts=plan_hosts(spec, subnet_for(3))
    )


def test_only_the_hierarchies_systemd_manages_are_used(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert cgroups.hierarchies(mounts) == [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n")  # a cgroup v2-only machine
    assert cgroups.hierarchies(mounts) == [Path("/sys/fs/cgroup")]


def test_each_host_gets_its_own_cgroup_in_each_hierarchy_and_down_removes_them(tmp_path):
    roots = [tmp_path / "systemd", tmp_path / "unified"]
    lab = _lab(tmp_path)
    procs = [cgroups.make(lab, host, roots) for host in lab.hosts]
    assert procs[0] == [roots[0] / "pyctl-lab/big/node1/cgroup.procs", roots[1] / "pyctl-lab/big/node1/cgroup.procs"]
    assert len({p for host in procs for p in host}) == 6  # no two hosts share one
    # What nspawn and the container's systemd make below the host's cgroup, with processes in it.
    payload = roots[1] / "pyctl-lab/big/node2/payload/system.slice"
    payload.mkdir(parents=True)
    (payload / "cgroup.procs").write_text("4242\n4243\n")
    (roots[1] / "pyctl-lab/big/node2/cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert cgroups.pids("big", roots) == [4242, 4243]
    assert cgroups.pids("other", roots) == []
    assert cgroups.cpu_seconds(lab, lab.hosts[1], roots) == 2.5
    assert cgroups.cpu_seconds(lab, lab.hosts[0], roots) is None

    for path in (roots[0] / "pyctl-lab/big").rglob("cgroup.procs"):
        path.unlink()  # cgroupfs has no files to delete: an empty cgroup's directory goes with rmdir
    for path in [*(roots[1] / "pyctl-lab/big").rglob("cgroup.procs"), *(roots[1] / "pyctl-lab/big").rglob("cpu.stat")]:
        path.unlink()
    cgroups.remove("big", roots)
    assert not (roots[0] / "pyctl-lab").exists()
    assert not (roots[1] / "pyctl-lab").exists()


def test_the_container_host_starts_inside_its_cgroups(tmp_path, monkeypatch):
    lab = _lab(tmp_path, nodes=1)
    lab.extra["image_dir"] = str(tmp_path / "image")
    (lab.dir).mkdir()
    (lab.dir / "authorized_keys").write_text("ssh-ed25519 AAAA lab\n")
    host_dir = lab.host_dir(lab.hosts[0])
    host_dir.mkdir(parents=True)
    (host_dir / "ssh_host_ed25519_key").write_text("key")
    (host_dir / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 BBBB host\n")
    roots = [tmp_path / "systemd", tmp_path / "unified"]
    monkeypatch.setattr(cgroups, "hierarchies", lambda: roots)
    started = []
    monkeypatch.setattr(container, "spawn", lambda argv, **_: started.append(argv))
    container.start(lab, lab.hosts[0])
    argv = started[0]
    nspawn = argv.index("systemd-nspawn")
    assert argv[:2] == ["sh", "-c"]
    assert argv[4:nspawn] == [str(r / "pyctl-lab/big/node1/cgroup.procs") for r in roots]
    assert argv[2] == 'echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@"'


def test_inotify_limits_are_raised_for_many_hosts_and_never_lowered(tmp_path):
    inotify = tmp_path / "fs" / "inotify"
    inotify.mkdir(parents=True)
    (inotify / "max_user_instances").write_text("128\n")
    (inotify / "max_user_watches").write_text("99999999\n")
    raised = container.raise_inotify_limits(50, proc_sys=tmp_path)
    instances = int((inotify / "max_user_instances").read_text())
    assert raised == {"fs.inotify.max_user_instances": instances}
    assert instances >= 128 + 8 * 50  # systemd, journald, logind and dbus take several each
    assert (inotify / "max_user_watches").read_text() == "99999999\n"
    assert container.raise_inotify_limits(50, proc_sys=tmp_path) == {}


def test_the_lab_sets_forwarding_in_every_container_hosts_namespace(monkeypatch):
    calls = []
    monkeypatch.setattr(container, "run", lambda argv, **_: calls.append(argv))
    container.set_host_sysctls(["pyctl-big.node1", "pyctl-big.node2"])
    assert len(calls) == 1  # one process for all hosts, however many
    argv = calls[0]
    assert argv[-2:] == ["pyctl-big.node1", "pyctl-big.node2"]
    assert "net.ipv4.ip_forward=1" in argv[2]
    assert container.HOST_SYSCTLS == {"net.ipv4.ip_forward": "1"}  # node_prep's only per-namespace sysctl that is 0
