"""The roles install from the lab's own signed repositories on fresh container hosts (issue 14, sections 2
and 3): containerd 2.x (Debian's, as Docker's containerd.io) and the Kubernetes and NVIDIA toolkit packages
(the doubles' packages, tests/doubles/debs.py) with the lab's inventory as `pyctl lab up` wrote it: no
switch turned off. The repository, key-check, pin, hold and install tasks run; the real containerd 2.x loads
the version-3 configuration (`containerd config dump`) and has it again after its host restarts; a key whose
fingerprint is not the expected one is refused by the role, and a repository signed by another key by apt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.doubles import debs, install

pytestmark = pytest.mark.lab

PHASES = "container_runtime,kubernetes"
KUBE = "1.36.5-1.1"
TOOLKIT = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)


def bootstrap(inventory: Path, state: Path, phases: str = PHASES) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYCTL_STATE_DIR=str(state))
    return subprocess.run(
        [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory), "--phases", phases],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def lab(session_lab):
    from pyctl.config import load_settings
    from pyctl.lab import repo

    my_lab = session_lab(nodes=2, kind="container", gpu_nodes=1)  # node2: gpu=true
    repo.publish(my_lab, debs.build(load_settings()))
    install.install(my_lab, gpus={"node2": 1}, packaged=True)
    return my_lab


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("repo-state")


@pytest.fixture(scope="module")
def first(lab, state):
    return bootstrap(lab.inventory_path, state)


def config_dump(lab, host: str) -> dict:
    return tomllib.loads(lab.ssh(host, "containerd config dump", timeout=60).stdout)


def check_containerd_config(lab, host: str, gpu: bool) -> None:
    dump = config_dump(lab, host)
    assert dump["version"] == 3
    runtime = dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]
    assert runtime["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert dump["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.2"
    if gpu:
        nvidia = runtime["runtimes"]["nvidia"]["options"]
        assert nvidia["BinaryName"] == "/usr/bin/nvidia-container-runtime" and nvidia["SystemdCgroup"] is True
    else:
        assert "nvidia" not in runtime["runtimes"]


def test_the_inventory_points_every_repository_at_the_lab_and_nothing_is_switched_off(lab):
    data = yaml.safe_load(Path(lab.inventory_path).read_text())["all"]["vars"]
    url, fingerprint = data["lab_repo_url"], data["lab_repo_fingerprint"]
    assert url == f"http://{lab.gateway}:8080" and len(fingerprint) == 40
    mirrors = data["mirrors_repositories"]  # the mirror settings a user's inventory has
    assert mirrors["kubernetes"]["url"] == f"{url}/pkgs.k8s.io/core:/stable:/v1.36/deb/"
    assert mirrors["docker"]["url"] == f"{url}/download.docker.com/linux"
    assert mirrors["nvidia"]["url"] == f"{url}/nvidia.github.io/libnvidia-container/stable/deb"
    assert {mirror["fingerprint"] for mirror in mirrors.values()} == {fingerprint}
    assert data["containerd_source"] == "docker" and data["containerd_docker_version"] == "2.1.9-1"
    switches = ("kubernetes_packages_enabled", "containerd_nvidia_toolkit_install_enabled")
    assert not [k for k in (*switches, "containerd_unsupported_version_enabled") if k in data]


def test_fresh_hosts_install_containerd_2_and_the_pinned_packages_held(lab, first):
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    for host, gpu in (("node1", False), ("node2", True)):
        packages = ["containerd.io", "kubelet", "kubeadm", "kubectl", "cri-tools", "kubernetes-cni"]
        packages += list(TOOLKIT) if gpu else []
        out = lab.ssh(
            host, f"dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {' '.join(packages)}"
        )
        found = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()}
        wanted = {
            "containerd.io": "2.1.9-1",
            "kubelet": KUBE,
            "kubeadm": KUBE,
            "kubectl": KUBE,
            "cri-tools": KUBE.replace("1.36.5", "1.36.0"),
        }
        wanted |= {name: "1.18.0-1" for name in TOOLKIT} if gpu else {}
        for name, version in wanted.items():
            assert found[name] == [version, "hi"], f"{host}: {name} {found.get(name)}"  # installed, held
        assert found["kubernetes-cni"][0] == "1.9.1-1.1"
        facts = lab.ssh(
            host,
            "containerd --version; command -v kubeadm; kubeadm version -o short; ls /opt/cni/bin/bridge;"
            " systemctl is-active containerd; cat /etc/apt/sources.list.d/pyctl-kubernetes.sources",
        ).stdout
        assert " 2.1.9" in facts.splitlines()[0], facts  # Debian's containerd 2.1, the real one
        assert "/usr/bin/kubeadm\nv1.36.5\n/opt/cni/bin/bridge\nactive\n" in facts, facts
        assert f"URIs: http://{lab.gateway}:8080/pkgs.k8s.io/core:/stable:/v1.36/deb/" in facts
        assert "Signed-By: /etc/apt/keyrings/pyctl-kubernetes.asc" in facts and "Suites: /" in facts
        check_containerd_config(lab, host, gpu)


def test_a_second_run_changes_nothing(lab, first, state):
    assert first.returncode == 0
    second = bootstrap(lab.inventory_path, state)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    changed = recap(second.stdout)
    assert sorted(changed) == ["node1", "node2"] and not any(changed.values()), second.stdout[-3000:]


def recap(output: str) -> dict[str, int]:
    """host -> changed, from the recap table."""
    rows = {}
    for line in output.split("recap", 1)[-1].splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 8 and cells[1].isdigit():
            rows[cells[0]] = int(cells[2])
    return rows


def test_a_key_with_another_fingerprint_is_refused_by_the_role(lab, first, tmp_path, state):
    assert first.returncode == 0
    data = yaml.safe_load(Path(lab.inventory_path).read_text())
    # pkgs.k8s.io's own fingerprint for the lab's mirror: the key the mirror serves is not that one
    data["all"]["vars"]["mirrors_repositories"]["kubernetes"]["fingerprint"] = (
        "DE15B14486CD377B9E876E1A234654DA9A296436"
    )
    inventory = tmp_path / "wrong.yml"
    inventory.write_text(yaml.safe_dump(data))
    run = bootstrap(inventory, state, phases="kubernetes")
    assert run.returncode == 1, run.stdout[-3000:]
    assert "Fail when the key is not the one pkgs.k8s.io signs with" in run.stderr, run.stderr
    assert "(fingerprint DE15B14486CD377B9E876E1A234654DA9A296436)" in run.stderr


def test_apt_refuses_the_lab_repository_under_another_key(lab, first):
    assert first.returncode == 0
    script = (
        "set -e; export GNUPGHOME=$(mktemp -d); "
        "gpg -q --batch --pinentry-mode loopback --passphrase '' --quick-gen-key 'not the lab <x@pyctl.invalid>'"
        " ed25519 sign never 2>/dev/null; "
        "gpg -q --batch --armor --export > /tmp/other.asc; "
        f"echo 'deb [signed-by=/tmp/other.asc] http://{lab.gateway}:8080/pkgs.k8s.io/core:/stable:/v1.36/deb/ /'"
        " > /tmp/wrong.list; "
        "lists=$(mktemp -d); mkdir $lists/partial; "
        "apt-get -o Dir::Etc::SourceList=/tmp/wrong.list -o Dir::Etc::SourceParts=/dev/null"
        " -o Dir::State::Lists=$lists update 2>&1 || echo refused=$?"
    )
    out = lab.ssh("node1", script, timeout=120).stdout
    assert "NO_PUBKEY" in out and "is not signed" in out and "refused=100" in out, out


def test_containerd_2_comes_back_with_its_configuration_after_the_host_restarts(lab, first):
    """A container host's restart (its systemd powers off, nspawn exits, the lab starts it again): what a reboot
    is for a container host (a VM reboot with containerd 2.x: tests/k8s/test_full_bootstrap.py, last test)."""
    assert first.returncode == 0
    from pyctl.lab import container, ssh

    (host,) = [h for h in lab.hosts if h.name == "node2"]
    before = container.pid(lab, host)
    lab.ssh(host, "systemctl poweroff", check=False, timeout=30)
    deadline = time.monotonic() + 120
    while container.pid(lab, host) == before:
        assert time.monotonic() < deadline, "node2 did not power off"
        time.sleep(0.2)
    container.start(lab, host)
    ssh.wait_ready(
        lab,
        host,
        timeout=240,
        systemd=True,
        console_log=container.console_log(lab, host),
        alive=lambda: container.pid(lab, host) is not None,
    )
    assert container.pid(lab, host) != before
    assert lab.ssh(host, "systemctl is-active containerd", check=False).stdout.strip() == "active"
    check_containerd_config(lab, "node2", gpu=True)
