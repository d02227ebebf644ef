"""The lab's own repositories (pyctl.lab.repo) and the doubles' packages (tests/doubles/debs.py), in-process:
package names, pinned versions and descriptions, byte-identical rebuilds, and repositories that apt itself
reads (file: URIs, a private apt state) when signed-by names the lab's key and refuses under any other key."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pyctl.lab import repo
from tests.doubles import debs

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (shutil.which("dpkg-deb") and shutil.which("dpkg-scanpackages") and shutil.which("gpg")),
    reason="needs dpkg-deb, dpkg-scanpackages (dpkg-dev) and gpg (scripts/setup installs them)",
)


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> list[Path]:
    return debs.build(SimpleNamespace(state_dir=tmp_path_factory.mktemp("state")))


def test_the_doubles_are_packaged_under_upstream_names_at_the_versions_pyctl_pins(built):
    versions = yaml.safe_load((ROOT / "roles/versions/defaults/main.yml").read_text())["versions_kubernetes"]["1.36"]
    toolkit = yaml.safe_load((ROOT / "roles/containerd/defaults/main.yml").read_text())[
        "containerd_nvidia_toolkit_version"
    ]
    found = {field(deb, "Package"): field(deb, "Version") for deb in built}
    assert found == {
        "kubelet": f"{versions['patch']}-1.1",
        "kubeadm": f"{versions['patch']}-1.1",
        "kubectl": f"{versions['patch']}-1.1",
        "cri-tools": f"{versions['cri_tools']}-1.1",
        "nvidia-container-toolkit": toolkit,
        "nvidia-container-toolkit-base": toolkit,
        "libnvidia-container-tools": toolkit,
        "libnvidia-container1": toolkit,
    }
    for deb in built:
        assert field(deb, "Description").startswith("pyctl TEST DOUBLE of "), deb.name
        assert "Not the real" in field(deb, "Description")
        assert field(deb, "Architecture") == "amd64"


def test_the_packages_hold_the_commands_the_roles_check(built):
    contents = {
        field(deb, "Package"): subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
        for deb in built
    }
    assert "./usr/bin/kubeadm" in contents["kubeadm"] and "./usr/bin/kubectl" in contents["kubectl"]
    assert "./usr/lib/systemd/system/kubelet.service" in contents["kubelet"]
    assert "./usr/bin/crictl" in contents["cri-tools"]
    assert "./usr/bin/nvidia-container-runtime" in contents["nvidia-container-toolkit-base"]
    assert field(next(d for d in built if d.name.startswith("kubelet_")), "Depends") == "kubernetes-cni (>= 1.1.1)"


def test_a_rebuild_gives_the_same_bytes_and_a_second_build_reuses_the_cache(tmp_path, built):
    again = debs.build(SimpleNamespace(state_dir=tmp_path / "other"))
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in again] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in built
    ]
    stamp = [p.stat().st_mtime_ns for p in again]
    assert [p.stat().st_mtime_ns for p in debs.build(SimpleNamespace(state_dir=tmp_path / "other"))] == stamp


def test_a_real_kubectl_is_packaged_as_pkgs_k8s_ios_kubectl_saying_what_it_is(tmp_path, built):
    """With kubectl=PATH the kubectl package holds that binary (Debian's real build, in the lab tests), under the
    pinned version, its description naming the binary's own version; the other packages stay the doubles'."""
    binary = tmp_path / "kubectl"
    binary.write_text("#!/bin/sh\necho 'Client Version: v1.36.4'\necho 'Kustomize Version: v5.8.1'\n")
    binary.chmod(0o755)
    real = debs.build(SimpleNamespace(state_dir=tmp_path / "state"), kubectl=binary)
    (kubectl,) = [deb for deb in real if field(deb, "Package") == "kubectl"]
    assert field(kubectl, "Version") == debs.pinned()["kubectl"]
    description = field(kubectl, "Description")
    assert description.startswith("Debian's kubectl 1.36.4 (sid), repackaged") and "TEST DOUBLE" not in description
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(kubectl), str(unpacked)], check=True)
    assert (unpacked / "usr/bin/kubectl").read_bytes() == binary.read_bytes()
    assert (unpacked / "usr/bin/kubectl").stat().st_mode & 0o777 == 0o755
    assert kubectl.parent != built[0].parent  # another binary, another content hash
    doubles = {field(deb, "Package"): deb.name for deb in built if field(deb, "Package") != "kubectl"}
    assert {field(deb, "Package"): deb.name for deb in real if field(deb, "Package") != "kubectl"} == doubles
    binary.write_text("#!/bin/sh\necho 'error: not kubectl' >&2\nexit 1\n")
    with pytest.raises(ValueError, match="does not run as kubectl: error: not kubectl"):
        debs.build(SimpleNamespace(state_dir=tmp_path / "state"), kubectl=binary)


def test_the_repackaged_versions_follow_the_upstream_schemes():
    assert repo.containerd_io_version("2.1.9+ds1-5") == "2.1.9-1"
    assert repo.kubernetes_cni_version("1.9.1+ds1-1") == "1.9.1-1.1"


def _apt_update(tmp_path: Path, sources: str) -> subprocess.CompletedProcess[str]:
    state = tmp_path / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(sources)
    options = [
        f"-oDir::Etc::SourceList={state / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={state / 'lists'}",
        f"-oDir::Cache={state / 'cache'}",
        "-oDir::Etc::Preferences=/dev/null",
        "-oDir::Etc::PreferencesParts=/dev/null",
        "-oAPT::Sandbox::User=root",
        "-oAPT::Architecture=amd64",
    ]
    update = subprocess.run(["apt-get", *options, "update"], capture_output=True, text=True, timeout=120)
    policy = subprocess.run(
        ["apt-cache", *options, "policy", "kubeadm", "containerd.io", "nvidia-container-toolkit"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return subprocess.CompletedProcess(update.args, update.returncode, update.stdout + policy.stdout, update.stderr)


@pytest.mark.skipif(not shutil.which("apt-get"), reason="needs apt")
def test_apt_reads_the_signed_repositories_and_refuses_them_under_another_key(tmp_path, built, monkeypatch):
    aliases: list[str] = []  # the short GNUPGHOME links gpg ran through (repo.gnupg_env)
    real_mkdtemp = repo.tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made = real_mkdtemp(*args, **kwargs)
        aliases.append(made)
        return made

    monkeypatch.setattr(repo.tempfile, "mkdtemp", recording_mkdtemp)
    lab = SimpleNamespace(name="unit", dir=tmp_path / "lab")
    lab.dir.mkdir(mode=0o700)
    fingerprint = repo.make_key(lab)
    assert len(fingerprint) == 40
    fake_containerd_io = debs.build_one(
        debs.Package("containerd.io", "2.1.9-1", "a stand-in for the repackaged containerd"),
        tmp_path / "tree",
        tmp_path / "containerd.io_2.1.9-1_amd64.deb",
    )
    repo.write_repositories(lab, [*built, fake_containerd_io])
    top = repo.root(lab)
    for key in (f"{repo.K8S_PATH}/Release.key", f"{repo.DOCKER_PATH}/debian/gpg", f"{repo.NVIDIA_PATH}/gpgkey"):
        shown = subprocess.run(
            ["gpg", "--batch", "--show-keys", "--with-colons", str(top / key)], capture_output=True, text=True
        )
        assert f"fpr:::::::::{fingerprint}:" in shown.stdout
        assert "sec:" not in shown.stdout  # the public key only
    assert (top / repo.K8S_PATH / "InRelease").read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert (top / repo.K8S_PATH / "Release.gpg").exists()

    sources = (
        f"deb [signed-by={top / repo.K8S_PATH / 'Release.key'}] file:{top / repo.K8S_PATH}/ /\n"
        f"deb [signed-by={top / repo.DOCKER_PATH / 'debian/gpg'}] file:{top / repo.DOCKER_PATH}/debian bookworm stable\n"
        f"deb [signed-by={top / repo.NVIDIA_PATH / 'gpgkey'}] file:{top / repo.NVIDIA_PATH}/stable/deb/amd64/ /\n"
    )
    good = _apt_update(tmp_path / "good", sources)
    assert good.returncode == 0, good.stderr
    assert "Candidate: 1.36.5-1.1" in good.stdout and "Candidate: 2.1.9-1" in good.stdout
    assert "Candidate: 1.18.0-1" in good.stdout

    other = SimpleNamespace(name="other", dir=tmp_path / "other-lab")
    other.dir.mkdir(mode=0o700)
    repo.make_key(other)
    wrong = other.dir / "wrong.asc"
    wrong.write_text(repo._gpg(other, "--armor", "--export").stdout)
    refused = _apt_update(tmp_path / "wrong", f"deb [signed-by={wrong}] file:{top / repo.K8S_PATH}/ /\n")
    assert refused.returncode == 100 and "NO_PUBKEY" in refused.stderr and "is not signed" in refused.stderr
    assert "1.36.5-1.1" not in refused.stdout  # nothing of the repository was taken
    assert "Invalid 'Date'" not in good.stderr
    # signing leaves no gpg-agent behind for either key's GNUPGHOME
    agents = subprocess.run(["pgrep", "-af", "gpg-agent"], capture_output=True, text=True).stdout
    assert aliases and str(tmp_path) not in agents, agents
    assert not [alias for alias in aliases if alias in agents], agents
    assert not [alias for alias in aliases if Path(alias).exists()]  # the links are gone too


@pytest.mark.skipif(not shutil.which("gpg"), reason="needs gpg")
def test_a_lab_in_a_deep_directory_still_gets_its_key_and_signs(tmp_path):
    # gpg-agent's socket lives in GNUPGHOME where /run/user/<uid> is absent (root, CI), and a Unix socket path
    # holds 107 bytes: from this directory gpg alone fails with "No agent running".
    deep = tmp_path / ("d" * 60) / "state" / "pyctl" / "labs" / "a-lab-with-a-long-name"
    deep.mkdir(parents=True, mode=0o700)
    lab = SimpleNamespace(name="deep", dir=deep)
    assert len(str(deep / "repo-gnupg" / "S.gpg-agent.browser")) > 107
    fingerprint = repo.make_key(lab)
    assert len(fingerprint) == 40
    release = tmp_path / "Release"
    release.write_text("Origin: test\n")
    repo._gpg(lab, "--clearsign", "-o", str(tmp_path / "InRelease"), str(release))
    assert (tmp_path / "InRelease").read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")


def test_the_hosts_apt_reaches_the_labs_repositories_directly_and_the_rest_through_the_proxy(tmp_path):
    from pyctl.lab import image

    key = tmp_path / "ssh_host_ed25519_key"
    key.write_text("private")
    key.with_name(key.name + ".pub").write_text("public")
    files = image.seed_files("keys", key, "hosts", "http://10.213.7.1:3142")
    text = files["apt-proxy.conf"][0].decode()
    assert 'Acquire::http::Proxy "http://10.213.7.1:3142";' in text
    assert 'Acquire::http::Proxy::10.213.7.1 "DIRECT";' in text
