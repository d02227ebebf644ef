"""The kubeadm double's host preflight (tests/doubles/kubeadm_preflight.py), in-process against made-up
/proc trees: it refuses what kubeadm 1.36 refuses, with kubeadm's own lines, and no more."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.doubles import kubeadm_preflight as preflight

CGROUP2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
HYBRID = (
    "tmpfs /sys/fs/cgroup tmpfs ro,nosuid 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    "cgroup /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
)


def proc(tmp_path: Path, forward: str = "1\n", mounts: str = CGROUP2, swaps: str = "") -> Path:
    root = tmp_path / "proc"
    (root / "sys/net/ipv4").mkdir(parents=True)
    (root / "self").mkdir()
    (root / "sys/net/ipv4/ip_forward").write_text(forward)
    (root / "self/mounts").write_text(mounts)
    (root / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n" + swaps)
    return root


def test_a_host_prepared_as_kubeadm_wants_passes(tmp_path):
    root = proc(tmp_path)
    assert preflight.ip_forward(root) == [] and preflight.cgroups(root) == [] and not preflight.swap_on(root)


def test_ip_forward_off_is_kubeadms_error(tmp_path):
    found = preflight.ip_forward(proc(tmp_path, forward="0\n"))
    assert preflight.report(found, set()) == (
        "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
        "\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1\n"
        "[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
    )
    assert preflight.report(found, {"filecontent--proc-sys-net-ipv4-ip_forward"}) == ""
    assert preflight.report(found, {"all"}) == ""


def test_cgroups_v1_is_an_error_for_kubelet_1_35_and_newer(tmp_path):
    ((name, text),) = preflight.cgroups(proc(tmp_path, mounts=HYBRID))
    assert name == "SystemVerification" and text.startswith("cgroups v1 support is deprecated")
    assert "'FailCgroupV1' to 'false'" in text


def test_swap_is_seen_from_proc_swaps(tmp_path):
    assert preflight.swap_on(proc(tmp_path, swaps="/dev/vdb\tpartition\t1048572\t0\t-2\n"))


def test_a_runtime_socket_nobody_answers_is_kubeadms_cri_error(tmp_path):
    ((name, text),) = preflight.cri(str(tmp_path / "containerd.sock"))
    assert name == "CRI"
    assert text.startswith("could not connect to the container runtime: failed to create new CRI runtime service")
    assert "connect: no such file or directory" in text


def test_a_socket_that_answers_without_the_cri_plugin_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "c.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        monkeypatch.setenv("PATH", str(tmp_path))  # no ctr: nothing lists a CRI plugin
        ((name, text),) = preflight.cri(path)
    assert name == "CRI" and text.endswith("unknown service runtime.v1.RuntimeService")


def test_a_port_in_use_is_named():
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert preflight.ports((port,)) == [(f"Port-{port}", f"Port {port} is in use")]


@pytest.mark.parametrize("kind", ["init", "join"])
def test_bridge_netfilter_is_not_a_kubeadm_check_since_1_30(kind, tmp_path, monkeypatch):
    """kubernetes/kubernetes#123464 removed it: the double must not refuse more than kubeadm does."""
    monkeypatch.setattr(preflight, "cri", lambda sock=None: [])
    monkeypatch.setattr(preflight, "ports", lambda numbers: [])
    assert preflight.errors(kind, proc(tmp_path)) == []
