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


@pytest.fixture
def kubeadm(monkeypatch):
    """The kubeadm double's module, loaded as on a lab host (its folder on sys.path), with die() raising."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(Path(preflight.__file__).parent))
    module = importlib.import_module("fake_kubeadm")
    fake_common = sys.modules["fake_common"]

    def die(tool, message, code=1):
        raise SystemExit(message)

    monkeypatch.setattr(fake_common, "die", die)
    monkeypatch.setattr(fake_common, "config", dict)
    monkeypatch.setattr(module.kubeadm_preflight, "errors", lambda kind: [])
    return module


def test_swap_on_fails_at_kubelet_start_unless_the_kubelet_allows_it(kubeadm, monkeypatch, capsys):
    monkeypatch.setattr(kubeadm.kubeadm_preflight, "swap_on", lambda: True)
    with pytest.raises(SystemExit, match="running with swap on is not supported, please disable swap"):
        kubeadm.host_preflight("init", [{"kind": "KubeletConfiguration", "cgroupDriver": "systemd"}])
    assert "[WARNING Swap]: swap is enabled" in capsys.readouterr().out
    assert kubeadm.host_preflight("init", [{"kind": "KubeletConfiguration", "failSwapOn": False}]) == []


def test_a_lab_waiver_is_printed_and_returned_never_silent(kubeadm, monkeypatch, capsys):
    found = [("SystemVerification", preflight.CGROUP_V1)]
    monkeypatch.setattr(kubeadm.kubeadm_preflight, "errors", lambda kind: found)
    monkeypatch.setattr(kubeadm.kubeadm_preflight, "swap_on", lambda: False)
    with pytest.raises(SystemExit, match=r"\[ERROR SystemVerification\]: cgroups v1 support is deprecated"):
        kubeadm.host_preflight("join", [{}])
    monkeypatch.setattr(kubeadm.fake_common, "config", lambda: {"lab_waived_checks": {"SystemVerification": "hybrid"}})
    assert kubeadm.host_preflight("join", [{}]) == ["SystemVerification"]
    assert "[WARNING SystemVerification]: cgroups v1" in capsys.readouterr().out


def test_containerd_runtimes_are_read_from_either_config_version(kubeadm, monkeypatch):
    v2 = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = "runc"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nBinaryName = ""\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]\n'
        'BinaryName = "/usr/bin/nvidia-container-runtime"\n'
    )
    v3 = v2.replace("version = 2", "version = 3").replace("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime")
    for dump in (v2, v3):
        monkeypatch.setattr(
            kubeadm.subprocess, "run", lambda *a, dump=dump, **k: type("R", (), {"stdout": dump, "returncode": 0})()
        )
        assert kubeadm.containerd_facts() == {
            "runtimes": {"runc": "", "nvidia": "/usr/bin/nvidia-container-runtime"},
            "default_runtime": "runc",
        }
