"""The lab of the whole bootstrap end to end (issue 14, section 5), shared by tests/k8s/test_full_bootstrap.py,
`scripts/demo --full` and `benchmarks/bootstrap_lab.py --full`. Test code: it installs test doubles.

    lab = up(full_lab.spec("e2e")).lab                     # node1 a VM (control plane, NFS server), node2 and
    inventory = full_lab.prepare(lab, work / "inv.yml")    # node3 container hosts, node3 gpu=true; Debian 13
    with full_lab.api_double(lab, work / "api") as api:    # the cluster, before the bootstrap
        ... pyctl bootstrap -i inventory (every phase) ...
        ... full_lab.in_lab(lab, ["pyctl", "train", "ddp", "--backend", "k8s", "--follow", ...]) ...

`prepare` publishes the doubles' packages (kubelet, kubeadm, cri-tools, the NVIDIA toolkit; tests/doubles/debs.py)
and Debian's real kubectl 1.36 under pkgs.k8s.io's name and pinned version (the binary scripts/setup --dev puts in
the venv) in the lab's own signed repositories next to the real containerd 2.x and CNI plugins, installs the doubles'
code and settings (tests/doubles/install.py; node3 gets one GPU from the nvidia-smi double), and writes the lab's
inventory adapted to what a lab host can be, each adaptation a documented knob:

- every host runs containerd 2.x from the lab's Docker-shaped repository (the lab's own inventory keeps VM hosts on
  Debian's containerd 1.x, the path tested elsewhere while pyctl supports it);
- container hosts cannot mount NFS (no NFS in this machine's kernel): `nfs_client_mount_enabled: false` on them;
  the VM serves the export and mounts it itself;
- where this machine's kernel runs cgroups v1/v2 hybrid, container hosts inherit it: the preflight's cgroup v2
  check is waived by name on them (`lab_waived_checks`, printed as a WARNING), as the kubeadm double waives its
  SystemVerification check (their kubelet is a double);
- the preflight's minimums fit a 1-vCPU VM with 1 GiB and the lab's disk, and the control plane and gate waits are
  short (the doubles answer at once).

The cluster is one HTTPS Kubernetes API double (tests/doubles/fake_apiserver.py) for the bootstrap and training,
served by `api_double` before the bootstrap on the lab's gateway inside its network namespace (install.api_double):
kubeadm init, join and token go to it over REST (the kubeadm double's REST mode, its CA given on node1), node1's port
6443 is forwarded to it, and the roles' kubectl calls (the API wait, flannel, the device plugin's label and manifests,
the claim, the acceptance gate) reach it over TLS with Debian's real kubectl and the admin.conf kubeadm wrote. Its
cluster model (fake_cluster.Cluster) judges the joined nodes, add-ons, GPUs and the gate's pods. The admin.conf
`pyctl bootstrap` fetches names node1:6443, as a real one names the control plane: pyctl's own API calls (`pyctl
train --backend k8s`) run on the lab's network (`in_lab`: inside its network namespace), as a user's controller sits
on the nodes' network. A Job's pods go to the joined nodes the scheduler finds feasible (Ready, the control plane's
taint not tolerated, enough GPUs), and the double's kubelet stand-in runs each in its worker host's network
namespace as processes with this machine's payload environments (images pyctl-ddp:cpu and pyctl-distdgl:cpu), so the
DDP and DistDGL jobs train for real; the claim is a folder of this machine (the container hosts cannot mount the
VM's NFS export).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.doubles import debs, install

OS = "debian-13"
KUBECTL = Path(sys.executable).parent / "kubectl"  # Debian sid's 1.36 build, as scripts/setup --dev installs it
# The waits of the control plane and the acceptance gate: the doubles answer at once (test_lab_phases' values).
WAITS = {"control_plane_api_wait_seconds": 30, "verify_timeout_seconds": 8, "verify_poll_seconds": 1}
# The preflight's minimums on lab hosts: a TCG VM has 1 vCPU and 1 GiB; the lab's disks hold a few GiB free.
LAB_MINIMUMS = {
    "preflight_min_cpus_control_plane": 1,
    "preflight_min_memory_mb_control_plane": 900,
    "preflight_min_free_disk_gb": 2,
}
CGROUP_WAIVER = (
    "a container host inherits this machine's cgroups v1/v2 hybrid layout (a real node must be on cgroup v2);"
    " its kubelet is a test double"
)


def spec(name: str, nodes: int = 3) -> Any:
    """node1 a VM (control plane and NFS server), the workers container hosts, the last one gpu=true; Debian 13."""
    from pyctl.lab import LabSpec

    return LabSpec(name=name, nodes=nodes, kind="mixed", gpu_nodes=1, os=OS)


def gpus(lab: Any) -> dict[str, int]:
    """What the nvidia-smi double lists on each host: one GPU on each gpu=true host."""
    return {h.name: 1 for h in lab.hosts if h.gpu}


def prepare(lab: Any, inventory: Path) -> Path:
    """Publish the doubles' packages and the real kubectl, install the doubles, and write the adapted inventory to
    `inventory`."""
    from pyctl.config import load_settings
    from pyctl.lab import repo

    if not KUBECTL.is_file():
        raise FileNotFoundError(f"kubectl 1.36 is not at {KUBECTL}: run scripts/setup --dev")
    repo.publish(lab, debs.build(load_settings(), kubectl=KUBECTL))
    install.install(lab, gpus=gpus(lab), packaged=True)
    inventory.parent.mkdir(parents=True, exist_ok=True)
    inventory.write_text(yaml.safe_dump(adapt(lab), sort_keys=False), encoding="utf-8")
    return inventory


def adapt(lab: Any, hosts: list[Any] | None = None) -> dict[str, Any]:
    """The lab's inventory with the adaptations above (only `hosts`, when given: `pyctl node add` grows it)."""
    data = yaml.safe_load(Path(lab.inventory_path).read_text(encoding="utf-8"))
    all_vars = data["all"]["vars"]
    all_vars.update(WAITS | LAB_MINIMUMS)
    served = lab.extra.get("repo") or {}
    kinds = {h.name: getattr(h, "kind", lab.kind) for h in lab.hosts}
    if "vm" not in kinds.values():  # a container lab (no NFS server possible) while developing without VMs
        data["all"]["children"].pop("nfs_server", None)
    keep = {h.name for h in hosts} if hosts is not None else set(kinds)
    for name in list(data["all"]["hosts"]):
        if name not in keep:
            data["all"]["hosts"].pop(name)
            for group in data["all"]["children"].values():
                (group.get("hosts") or {}).pop(name, None)
    for name, hvars in data["all"]["hosts"].items():
        if served.get("containerd_io_version"):
            for key in ("containerd_source", "containerd_docker_version", "containerd_unsupported_version_enabled"):
                hvars.pop(key, None)
                all_vars.pop(key, None)
            hvars["containerd_source"] = "docker"
            hvars["containerd_docker_version"] = served["containerd_io_version"]
        if kinds[name] == "container":
            hvars["nfs_client_mount_enabled"] = False
            cgroup = lab.ssh(name, "stat -fc %T /sys/fs/cgroup", timeout=30).stdout.strip()
            if cgroup != "cgroup2fs":
                hvars["lab_waived_checks"] = {"cgroup_v2": CGROUP_WAIVER}
    return data


def workers(lab: Any) -> list[Any]:
    return [h for h in lab.hosts if "workers" in h.groups]


def control_plane(lab: Any) -> str:
    return next(h.name for h in lab.hosts if "control_plane" in h.groups)


def in_lab(lab: Any, argv: list[str]) -> list[str]:
    """`argv` run on the lab's network, inside its network namespace: where a controller on the nodes' network
    reaches node1:6443, as the admin.conf the bootstrap fetched names it."""
    return ["nsenter", f"--net=/run/netns/{lab.namespace}", *argv]


@contextmanager
def api_double(lab: Any, folder: Path, distdgl_python: Path | None = None, **options: Any) -> Iterator[Any]:
    """The lab's cluster, served before the bootstrap and for training (install.api_double): the HTTPS API double on
    the lab's gateway, its CA on the control plane, the images the payloads' Jobs use (pyctl-distdgl:cpu only with
    `distdgl_python`, the DistDGL environment). `options` go to the double (e.g. history=)."""
    from tests.train.apiserver_support import ddp_image, distdgl_image

    images = {"pyctl-ddp:cpu": ddp_image()}
    if distdgl_python is not None:
        images["pyctl-distdgl:cpu"] = distdgl_image(distdgl_python)
    with install.api_double(lab, folder, control_plane(lab), images=images, **options) as api:
        yield api


# --- scripts/demo --full ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.full_lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="publish the doubles' packages, install the doubles, write the inventory")
    prep.add_argument("lab")
    prep.add_argument("inventory", type=Path)
    serve = sub.add_parser("serve-api", help="serve the lab's cluster (the HTTPS API double) until stopped")
    serve.add_argument("lab")
    serve.add_argument("--folder", type=Path, required=True, help="the double's files and the claims' folders")
    serve.add_argument("--distdgl-python", type=Path, help="the DistDGL environment's python (pyctl-distdgl:cpu)")
    args = parser.parse_args(argv)
    from pyctl.lab import get

    lab = get(args.lab)
    if args.command == "prepare":
        print(prepare(lab, args.inventory.resolve()))
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with api_double(lab, args.folder.resolve() / "api", args.distdgl_python) as api:
        print(
            f"TEST DOUBLE: Kubernetes API server double at {api.server} in network namespace {lab.namespace}"
            f" (reached as {lab.host(control_plane(lab)).address}:6443 once kubeadm init forwards it)",
            flush=True,
        )
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
