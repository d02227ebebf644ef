"""The lab of the whole bootstrap end to end (issue 14, section 5), shared by tests/k8s/test_full_bootstrap.py,
`scripts/demo --full` and `benchmarks/bootstrap_lab.py --full`. Test code: it installs test doubles.

    lab = up(full_lab.spec("e2e")).lab                     # node1 a VM (control plane, NFS server), node2 and
    inventory = full_lab.prepare(lab, work / "inv.yml")    # node3 container hosts, node3 gpu=true; Debian 13
    ... pyctl bootstrap -i inventory (every phase) ...
    with full_lab.api_double(lab, work / "api", state_dir, inventory, share) as api:
        ... pyctl train ddp --backend k8s --follow ...

`prepare` publishes the doubles' packages (kubelet, kubeadm, kubectl, cri-tools, the NVIDIA toolkit; tests/doubles/
debs.py) in the lab's own signed repositories next to the real containerd 2.x and CNI plugins, installs the doubles'
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

The seam: `pyctl bootstrap`'s own Kubernetes calls (kubeadm on the hosts, kubectl in the addons and the acceptance
gate) go to the kubeadm double's fake cluster (tests/doubles/fake_cluster.py: a plain-HTTP model of the cluster on
node1:6443, driven by the kubectl double), and the admin.conf it fetches points there. Training goes through the
Kubernetes API double over HTTPS (tests/doubles/fake_apiserver.py), started by `api_double` for the cluster the
bootstrap built: its nodes are the lab's worker hosts (their network namespaces and addresses; GPUs as the
bootstrap labelled them in the fake cluster), and its admin.conf replaces the fetched one where pyctl reads it.

Closing the seam (one API double for the bootstrap and training): done for tests/k8s/test_lab_phases.py's lab
(a 3-host container lab), not yet for this one:
(a) done: the API double listens inside a lab's network namespace (`netns=`, `host=`, `port=6443`), with the SANs
    the hosts use and a CA made beforehand (`ca=`); tests/k8s/test_kubeadm_rest.py in process. install.api_double
    serves it for a lab before the bootstrap (nodes=[], on the gateway, the CA and the client certificates kubeadm
    signs put on node1 before `kubeadm init`, `api_double` in every host's settings): test_lab_phases' lab and
    test_kubeadm_rest_lab's. Not done here: pyctl on the controller reaching the fetched admin.conf's server
    (node1:6443 lives in the lab's namespace; test_lab_phases needs no controller-side API call).
(b) done: kubeadm's token, cluster-info, discovery and Node registration over REST (tests/doubles/kubeadm_rest.py),
    the kubeadm double's REST mode (tests/k8s/test_kubeadm_rest_lab.py), and test_lab_phases' whole bootstrap
    (init, joins, an interrupted join repaired, node add, preflight regressions, reset) through it.
(c) done: the fake cluster's model (flannel, device plugin, RuntimeClass handlers, the claim, the acceptance gate's
    smoke/GPU/write/read pods) runs in the API double for joined nodes (tests/k8s/test_apiserver_cluster_model.py),
    and test_lab_phases' checks read the cluster through the API (the real kubectl on node1; the double's audit
    record and its history of bootstrap-token Secrets) instead of install.cluster_state.
(d) done: debs.build(settings, kubectl=PATH) packages Debian's kubectl 1.36 (sid's build, the binary scripts/setup
    --dev puts in the venv) as pkgs.k8s.io's `kubectl` at the pinned version; test_lab_phases' roles install it
    from the lab's repository and run their kubectl calls (API wait, flannel, label, device plugin, claim, gate)
    with it over TLS.
Next, for this lab: `prepare` builds the debs with kubectl=, install.api_double is served before the bootstrap (the
one double then also trains, so `api_double` below stops making its own and node_specs reads the joined Nodes), the
Job pods of joined nodes go to the kubelet stand-in in their host's namespace (today a double given NodeSpecs sends
standalone pods without nodeName to the stand-in, joined nodes' to the model), pyctl on the controller reaches
node1:6443 (its commands run inside the lab's namespace, or the admin.conf it reads names the gateway), and
test_full_bootstrap reads the cluster through the API instead of install.cluster_state.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.doubles import debs, install

GPU = "nvidia.com/gpu"
OS = "debian-13"
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
    """Publish the doubles' packages, install the doubles, and write the adapted inventory to `inventory`."""
    from pyctl.config import load_settings
    from pyctl.lab import repo

    repo.publish(lab, debs.build(load_settings()))
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


def node_specs(lab: Any) -> list[Any]:
    """The API double's nodes: the lab's workers, with the GPUs the bootstrap made allocatable in the fake cluster
    (a node counts its nvidia-smi GPUs only where the device plugin landed: the label nvidia.com/gpu.present)."""
    from tests.doubles.fake_apiserver import NodeSpec

    nodes = install.cluster_state(lab, control_plane(lab))["nodes"]
    specs = []
    for host in workers(lab):
        node = nodes[host.name]
        count = node.get("gpus", 0) if node["labels"].get(f"{GPU}.present") == "true" else 0
        specs.append(NodeSpec(host.name, netns=host.namespace, address=host.address, gpus=count))
    return specs


@contextmanager
def api_double(
    lab: Any, folder: Path, state_dir: Path, inventory: Path, share: Path, distdgl_python: Path | None = None
) -> Iterator[Any]:
    """The HTTPS API double for the cluster the bootstrap built, its admin.conf where pyctl reads the cluster's.
    The fetched admin.conf (the fake cluster's) is kept beside it as admin.conf.fake-cluster and put back after."""
    from tests.doubles.fake_apiserver import ApiServerDouble
    from tests.train.apiserver_support import ddp_image, distdgl_image, install_kubeconfig

    images = {"pyctl-ddp:cpu": ddp_image()}
    if distdgl_python is not None:
        images["pyctl-distdgl:cpu"] = distdgl_image(distdgl_python)
    with ApiServerDouble(folder, nodes=node_specs(lab), images=images, claims={"pyctl-shared": share}) as api:
        from pyctl.inventory import load

        fetched = state_dir / "clusters" / load(inventory).name / "admin.conf"
        kept = fetched.with_name("admin.conf.fake-cluster")
        if fetched.exists():
            shutil.copy2(fetched, kept)
        install_kubeconfig(api, state_dir, inventory)
        try:
            yield api
        finally:
            if kept.exists():
                kept.replace(fetched)


# --- scripts/demo --full ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.full_lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="publish the doubles' packages, install the doubles, write the inventory")
    prep.add_argument("lab")
    prep.add_argument("inventory", type=Path)
    serve = sub.add_parser("serve-api", help="run the HTTPS API double for the lab's cluster until stopped")
    serve.add_argument("lab")
    serve.add_argument("inventory", type=Path)
    serve.add_argument("--state-dir", type=Path, required=True)
    serve.add_argument("--folder", type=Path, required=True, help="the double's files and the claim's folder")
    args = parser.parse_args(argv)
    from pyctl.lab import get

    lab = get(args.lab)
    if args.command == "prepare":
        print(prepare(lab, args.inventory.resolve()))
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    share = args.folder / "claim-pyctl-shared"
    share.mkdir(parents=True, exist_ok=True)
    with api_double(lab, args.folder / "api", args.state_dir, args.inventory.resolve(), share) as api:
        nodes = ", ".join(f"{n.name} ({n.gpus} GPU)" for n in api.nodes)
        print(f"TEST DOUBLE: Kubernetes API server double at {api.server}; nodes {nodes}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
