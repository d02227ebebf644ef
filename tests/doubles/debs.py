"""Build the .deb packages of the test doubles, for the lab's own repositories (pyctl.lab.repo).

What cannot be real in the lab (kubelet, kubeadm, crictl, the NVIDIA container toolkit) is packaged from the
doubles in this directory under the upstream packages' names and the exact versions pyctl pins (roles/versions,
roles/kubernetes, roles/containerd defaults), each with a Description that says it is a test double, so that the
roles' repository tasks, key checks, pins, holds and installs run on fresh lab hosts. Only pyctl's lab tests use
these packages.

kubectl is the real one where the lab's cluster is the HTTPS API double (fake_apiserver.py): `build(settings,
kubectl=PATH)` packages that binary (Debian sid's kubectl 1.36 build, which scripts/setup --dev puts in the venv) as
pkgs.k8s.io's `kubectl` at the pinned version, its Description naming what it is. Without `kubectl` the package
holds the kubectl double (fake_kubectl.py), which speaks to the kubeadm double's plain-HTTP fake cluster only.

The packages hold the commands only: thin wrappers over the doubles' Python code, which `install.install`
puts in /opt/pyctl-test-doubles with each host's settings (as today), and the double of the runtime or tool
itself where it is one file (crictl, nvidia-container-runtime). Not packaged: the NVIDIA driver (the containerd
role refuses Debian's driver branch before installing it, so no lab host gets that far; nvidia-smi stays a
double installed by `install.install`).

    debs = build(settings)          # cached by content under <state>/cache/lab-debs/<hash>/
    debs = build(settings, kubectl=Path(sys.executable).parent / "kubectl")   # the real kubectl
    pyctl.lab.repo.publish(lab, debs)

Built once per content hash (the doubles, this file, the pinned versions and the kubectl binary given),
byte-identical on a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pyctl.lab.locks import locked
from pyctl.lab.repo import ARCH, build_deb, format_control

HERE = Path(__file__).resolve().parent
ROLES = HERE.parent.parent / "roles"
MAINTAINER = "pyctl tests <tests@pyctl.invalid>"
WRAPPER = "#!/bin/sh\n# pyctl TEST DOUBLE (tests/doubles, package {package}): stands in for {tool}.\nexec {command}\n"
PYTHON = "/usr/bin/python3 /opt/pyctl-test-doubles"
KUBELET_UNIT = """\
[Unit]
Description=pyctl TEST DOUBLE: stands in for the kubelet (does nothing)

[Service]
ExecStart=/usr/bin/kubelet
Restart=always

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    stands_for: str  # what upstream package it doubles, for the Description
    files: dict[str, tuple[str | Path, int]] = field(default_factory=dict)  # path -> (content or file, mode)
    depends: str = ""
    description: str = ""  # instead of the test double's


def _defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text(encoding="utf-8"))


def pinned(minor: str = "1.36") -> dict[str, str]:
    """The versions pyctl pins for each package it installs from pkgs.k8s.io and NVIDIA's repository."""
    release = _defaults("versions")["versions_kubernetes"][minor]
    revision = _defaults("kubernetes")["kubernetes_package_revision"]
    toolkit = _defaults("containerd")["containerd_nvidia_toolkit_version"]
    kube = f"{release['patch']}-{revision}"
    return {
        "kubelet": kube,
        "kubeadm": kube,
        "kubectl": kube,
        "cri-tools": f"{release['cri_tools']}-{revision}",
        "nvidia-container-toolkit": toolkit,
        "nvidia-container-toolkit-base": toolkit,
        "libnvidia-container-tools": toolkit,
        "libnvidia-container1": toolkit,
    }


def _wrapper(package: str, tool: str, command: str) -> tuple[str, int]:
    return WRAPPER.format(package=package, tool=tool, command=command), 0o755


def real_kubectl(binary: Path, version: str) -> Package:
    """pkgs.k8s.io's `kubectl` at the pinned `version`, holding the real kubectl `binary` (Debian's build)."""
    found = subprocess.run([str(binary), "version", "--client"], capture_output=True, text=True, timeout=30)
    client = re.search(r"Client Version: v(\S+)", found.stdout)
    if found.returncode != 0 or client is None:
        raise ValueError(f"{binary} does not run as kubectl: {(found.stderr or found.stdout).strip()[:200]}")
    description = (
        f"Debian's kubectl {client[1]} (sid), repackaged under pkgs.k8s.io's name for pyctl's lab\n"
        f" The real kubectl binary from Debian's kubectl package (sid's {client[1]} build), unchanged, packaged\n"
        f" under pkgs.k8s.io's package name and the version pyctl pins ({version}) so that the roles' repository,\n"
        " pin, hold and install tasks install it and their kubectl calls run for real against the lab's API\n"
        " server (pyctl's HTTPS Kubernetes API test double). Only pyctl's lab tests install it."
    )
    return Package("kubectl", version, "", {"usr/bin/kubectl": (binary, 0o755)}, description=description)


def packages(minor: str = "1.36", kubectl: Path | None = None) -> list[Package]:
    v = pinned(minor)
    toolkit = v["nvidia-container-toolkit"]
    crictl = (HERE / "fake_crictl").read_text(encoding="utf-8")
    crictl = crictl.replace("${FAKE_CRICTL_VERSION:-1.36.0}", v["cri-tools"].split("-")[0])
    return [
        Package(
            "kubelet",
            v["kubelet"],
            "pkgs.k8s.io's kubelet",
            {
                "usr/bin/kubelet": _wrapper("kubelet", "the kubelet", "sleep infinity"),
                "usr/lib/systemd/system/kubelet.service": (KUBELET_UNIT, 0o644),
            },
            depends="kubernetes-cni (>= 1.1.1)",
        ),
        Package(
            "kubeadm",
            v["kubeadm"],
            "pkgs.k8s.io's kubeadm",
            {"usr/bin/kubeadm": _wrapper("kubeadm", "kubeadm", f'{PYTHON}/fake_kubeadm.py "$@"')},
            depends=f"kubelet (>= {minor}.0), kubectl (>= {minor}.0), cri-tools (>= {v['cri-tools'].split('-')[0]})",
        ),
        real_kubectl(kubectl, v["kubectl"])
        if kubectl is not None
        else Package(
            "kubectl",
            v["kubectl"],
            "pkgs.k8s.io's kubectl",
            {"usr/bin/kubectl": _wrapper("kubectl", "kubectl", f'{PYTHON}/fake_kubectl.py "$@"')},
        ),
        Package("cri-tools", v["cri-tools"], "pkgs.k8s.io's cri-tools (crictl)", {"usr/bin/crictl": (crictl, 0o755)}),
        Package(
            "nvidia-container-toolkit-base",
            toolkit,
            "NVIDIA's nvidia-container-toolkit-base (nvidia-container-runtime)",
            {"usr/bin/nvidia-container-runtime": ((HERE / "fake_nvidia_container_runtime").read_text(), 0o755)},
            depends="runc",
        ),
        Package(
            "nvidia-container-toolkit",
            toolkit,
            "NVIDIA's nvidia-container-toolkit",
            depends=(
                f"nvidia-container-toolkit-base (= {toolkit}), libnvidia-container-tools (>= {toolkit}),"
                " libnvidia-container-tools (<< 2.0.0)"
            ),
        ),
        Package(
            "libnvidia-container-tools",
            toolkit,
            "NVIDIA's libnvidia-container-tools",
            depends=f"libnvidia-container1 (>= {toolkit})",
        ),
        Package("libnvidia-container1", toolkit, "NVIDIA's libnvidia-container1"),
    ]


def control(package: Package) -> dict[str, str]:
    fields = {
        "Package": package.name,
        "Version": package.version,
        "Architecture": ARCH,
        "Maintainer": MAINTAINER,
        "Section": "admin",
        "Priority": "optional",
    }
    if package.depends:
        fields["Depends"] = package.depends
    if package.description:
        fields["Description"] = package.description
        return fields
    fields["Description"] = (
        f"pyctl TEST DOUBLE of {package.stands_for}\n"
        f" Not the real {package.name}: a test double from pyctl's tests/doubles, packaged under the\n"
        " upstream name and the version pyctl pins so that the lab runs pyctl's repository, pin, hold and\n"
        " install tasks. Only pyctl's lab tests install it."
    )
    return fields


def _content(source: str | Path) -> str:
    """What a file of a package hashes as: its text, or a copied file's sha256."""
    if isinstance(source, Path):
        with source.open("rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    return source


def content_hash(all_packages: list[Package]) -> str:
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    for package in all_packages:
        files = sorted((path, _content(source), mode) for path, (source, mode) in package.files.items())
        digest.update(json.dumps([control(package), files], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def build(settings: Any, minor: str = "1.36", kubectl: Path | None = None) -> list[Path]:
    """The doubles' packages (with `kubectl`, that real binary as the kubectl package), built once per content hash
    under the lab cache; returns the .deb paths."""
    base = settings.state_dir / "cache" / "lab-debs"
    all_packages = packages(minor, kubectl)
    out = base / content_hash(all_packages)
    wanted = [out / f"{p.name}_{p.version}_{ARCH}.deb" for p in all_packages]
    with locked(base / ".lock"):
        if all(p.exists() for p in wanted):
            return wanted
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=base))
        try:
            for package, dest in zip(all_packages, wanted, strict=True):
                build_one(package, work / package.name, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return wanted


def build_one(package: Package, tree: Path, dest: Path) -> Path:
    (tree / "DEBIAN").mkdir(parents=True)
    files = dict(package.files)
    if not package.description:
        note = f"pyctl TEST DOUBLE of {package.stands_for}: see the package description.\n"
        files[f"usr/share/doc/{package.name}/README.pyctl-test-double"] = (note, 0o644)
    for path, (source, mode) in sorted(files.items()):
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copyfile(source, target)
        else:
            target.write_text(source, encoding="utf-8")
        target.chmod(mode)
    for directory in [tree, *(p for p in tree.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)
    (tree / "DEBIAN" / "control").write_text(format_control(control(package)), encoding="utf-8")
    return build_deb(tree, dest)
