"""`pyctl train ddp`: the request, its validation, and what each node runs (torchrun + the payload).

Both backends start the same thing on every node: torchrun with static rendezvous (node rank = the
host's place in the job, or the Indexed Job's completion index; master = node 0) running the DDP
payload (`payloads/ddp/train.py`) or the user's own `--script`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pyctl.errors import UsageError
from pyctl.inventory import Cluster, Host
from pyctl.train.request import (
    DEFAULT_CLAIM,
    DEFAULT_CLAIM_MOUNT,
    DEFAULT_NAMESPACE,
    DEFAULT_START_TIMEOUT_S,
    MAX_SCRIPT_BYTES,
    absolute,
    check_at_least,
    check_backend,
    check_lr,
    check_start_timeout,
    host_pool,
    iface_of,
    parse_env,
    refuse_iface_on_k8s,
    refuse_image_on_ssh,
)

DATASETS = ("fashion-mnist", "digits")
KINDS = ("indexed-job", "pytorchjob", "trainjob")
DEFAULT_IMAGE_CPU = "pyctl-ddp:cpu"
DEFAULT_IMAGE_GPU = "pyctl-ddp:cuda"
IMAGE_PAYLOAD = "/opt/pyctl/ddp/train.py"  # where the payload image (payloads/ddp/Dockerfile) keeps it
PAYLOAD_MODULES = ("loaders.py", "checkpoint.py")  # train.py imports them from its own folder
USER_SCRIPT_DIR = "/opt/pyctl/user"  # where a --script is mounted in pods (from a ConfigMap)
DEFAULT_MASTER_PORT = 29500
DEFAULT_PYTHON = "/opt/pyctl/venvs/ddp/bin/python"  # what the train_env role installs on each host
PREFLIGHT_MODULE = "torch"  # what --check-env imports on every host
PREFLIGHT_HINTS = (  # for a missing interpreter, for a failed import
    "create it with 'pyctl train setup -i INVENTORY', or name another interpreter with torch "
    "(--python, or the train_python host variable)",
    "run 'pyctl train setup -i INVENTORY', or point --python at an environment with torch",
)
_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
_PAYLOAD_ONLY = ("dataset", "data_path", "epochs", "batch_size", "lr", "threads")


@dataclass(frozen=True)
class DdpRequest:
    """What the user asked for. None means 'not given': defaults are filled in by `resolve`."""

    inventory: Path
    backend: str = "k8s"
    nodes: int | None = None
    nproc_per_node: int | None = None
    gpus_per_node: int = 0
    image: str | None = None
    epochs: int | None = None
    dataset: str | None = None
    data_path: str | None = None
    batch_size: int | None = None
    lr: float | None = None
    threads: int | None = None
    checkpoint_dir: str | None = None
    script: Path | None = None
    script_args: tuple[str, ...] = ()
    kind: str = "indexed-job"
    queue: str | None = None  # k8s: a Kueue LocalQueue (gang admission)
    runtime: str | None = None  # --kind trainjob: the ClusterTrainingRuntime
    with_runtime: bool = False  # --kind trainjob: also render and apply pyctl's runtime
    max_restarts: int = 0
    master_port: int = DEFAULT_MASTER_PORT
    env: tuple[str, ...] = ()  # KEY=VALUE for every node
    hosts: tuple[str, ...] = ()  # SSH: these inventory hosts, in this order
    ssh_user: str | None = None
    ssh_key: Path | None = None
    python: str | None = None
    iface: str | None = None
    check_env: bool = False
    namespace: str = DEFAULT_NAMESPACE
    claim: str = DEFAULT_CLAIM
    claim_mount: str = DEFAULT_CLAIM_MOUNT
    grace_s: float = 15.0
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S  # k8s --follow: pods must have started by then


@dataclass(frozen=True)
class DdpJob:
    """A validated request with every default filled in, and the nodes it runs on."""

    request: DdpRequest
    nodes: int
    nproc_per_node: int
    payload_args: tuple[str, ...]
    env: dict[str, str]
    hosts: tuple[Host, ...] = ()  # SSH: the hosts, node 0 first
    kubernetes_version: str = "1.36"
    image: str = DEFAULT_IMAGE_CPU
    script_name: str = "train.py"
    script_text: bytes = b""
    options: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, bytes] = field(default_factory=dict)  # what travels beside the script (our payload's)

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node


def payload_path(settings_project_dir: Path) -> Path:
    return settings_project_dir / "payloads" / "ddp" / "train.py"


def select_hosts(request: DdpRequest, cluster: Cluster, nodes: int | None) -> tuple[Host, ...]:
    """The SSH hosts: --hosts in order, else the Kubernetes nodes (GPU hosts when GPUs are asked for)."""
    pool = host_pool(request.hosts, cluster, request.gpus_per_node)
    if not pool and request.gpus_per_node > 0:
        raise UsageError(
            f"--gpus-per-node {request.gpus_per_node} but the inventory has no GPU hosts (gpu=true)",
            hint="mark GPU hosts with gpu=true in the inventory, or name the hosts with --hosts",
        )
    if not pool:
        raise UsageError("the inventory has no hosts for this job", hint="add hosts to control_plane or workers")
    wanted = nodes if nodes is not None else len(pool)
    if wanted > len(pool):
        what = "GPU hosts (gpu=true)" if request.gpus_per_node > 0 and not request.hosts else "hosts"
        raise UsageError(
            f"--nodes {wanted} but the inventory has only {len(pool)} {what} for this job",
            hint=f"use --nodes {len(pool)} or fewer" if pool else "mark GPU hosts with gpu=true in the inventory",
        )
    return tuple(pool[:wanted])


def _check_flags(r: DdpRequest) -> None:
    check_backend(r.backend)
    if r.kind not in KINDS:
        raise UsageError(f"--kind {r.kind!r} is not one of {', '.join(KINDS)}")
    if r.kind != "indexed-job" and r.backend != "k8s":
        raise UsageError(f"--kind {r.kind} needs --backend k8s")
    _check_k8s_extras(r)
    check_at_least(
        (
            ("--nodes", r.nodes, 1),
            ("--nproc-per-node", r.nproc_per_node, 1),
            ("--gpus-per-node", r.gpus_per_node, 0),
            ("--epochs", r.epochs, 1),
            ("--batch-size", r.batch_size, 1),
            ("--threads", r.threads, 1),
            ("--max-restarts", r.max_restarts, 0),
        )
    )
    check_lr(r.lr)
    check_start_timeout(r.start_timeout_s)
    if not 1024 <= r.master_port <= 65535:
        raise UsageError(f"--master-port {r.master_port}: use a port from 1024 to 65535")
    if r.checkpoint_dir is not None:
        absolute("--checkpoint-dir", r.checkpoint_dir)
    if r.backend == "k8s":
        refuse_iface_on_k8s(r.iface)
        mount = absolute("--claim-mount", r.claim_mount)
        if r.checkpoint_dir and not PurePosixPath(r.checkpoint_dir).is_relative_to(mount):
            raise UsageError(
                f"--checkpoint-dir {r.checkpoint_dir} is not on the NFS share, which pods mount at {mount}",
                hint=f"use a folder under {mount} (or change --claim-mount)",
            )
    else:
        refuse_image_on_ssh(r.image)


def _check_k8s_extras(r: DdpRequest) -> None:
    """--queue, --runtime and --with-runtime: where each applies."""
    if r.queue is not None:
        if r.backend != "k8s":
            raise UsageError("--queue is for --backend k8s (Kueue admits Kubernetes jobs)")
        if not _LABEL_VALUE.match(r.queue):
            raise UsageError(f"--queue {r.queue!r} is not a LocalQueue name (lower-case letters, digits, '-', '.')")
        if r.kind == "pytorchjob":
            raise UsageError(
                "--queue with --kind pytorchjob is not supported (a legacy API)",
                hint="Kueue's pytorchjob integration is off by default; use --kind trainjob or indexed-job",
            )
    if (r.runtime is not None or r.with_runtime) and r.kind != "trainjob":
        raise UsageError("--runtime and --with-runtime are for --kind trainjob")
    if r.runtime is not None and not _LABEL_VALUE.match(r.runtime):
        raise UsageError(f"--runtime {r.runtime!r} is not a valid object name")
    if r.with_runtime and r.runtime == "torch-distributed":
        raise UsageError(
            "--with-runtime would replace Kubeflow Trainer's own torch-distributed runtime",
            hint="leave --runtime out (pyctl's is called pyctl-torch) or give another name",
        )
    if r.kind == "trainjob" and r.master_port != DEFAULT_MASTER_PORT:
        raise UsageError("--master-port with --kind trainjob: Kubeflow Trainer always uses port 29500")


def _program(r: DdpRequest, project_dir: Path) -> tuple[bytes, str, tuple[str, ...]]:
    """The script every node runs (its bytes and name) and its arguments."""
    if r.script is not None:
        given = [f"--{n.replace('_', '-')}" for n in _PAYLOAD_ONLY if getattr(r, n) is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)} set(s) our payload's flags, which --script does not run",
                hint="pass your script's own arguments after '--'",
            )
        script = r.script.expanduser()
        if not script.is_file():
            raise UsageError(f"--script {r.script}: no such file")
        text = script.read_bytes()
        if r.backend == "k8s" and len(text) > MAX_SCRIPT_BYTES:
            raise UsageError(
                f"--script {r.script} is {len(text)} bytes; a ConfigMap holds at most {MAX_SCRIPT_BYTES}",
                hint="put a larger program in the image and run it from there",
            )
        return text, (script.name if script.suffix == ".py" else f"{script.name}.py"), tuple(r.script_args)
    if r.script_args:
        raise UsageError(
            f"arguments after '--' ({' '.join(r.script_args)}) are only for --script",
            hint="our payload's flags are pyctl's own: --dataset, --epochs, --batch-size, --lr",
        )
    dataset = r.dataset or "digits"
    if dataset not in DATASETS:
        raise UsageError(f"--dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    if dataset == "fashion-mnist" and not r.data_path:
        raise UsageError(
            "--dataset fashion-mnist needs --data-path (IDX files or a Hugging Face save, on the nodes)",
            hint="nothing is downloaded; --dataset digits needs no data",
        )
    if dataset == "digits" and r.data_path:
        raise UsageError("--data-path is not used with --dataset digits (scikit-learn ships it)")
    payload = payload_path(project_dir)
    if not payload.is_file():
        raise UsageError(f"the DDP payload {payload} is missing", hint="reinstall pyctl from its source tree")
    args = ["--dataset", dataset, "--epochs", str(r.epochs or 10)]
    if r.data_path:
        args += ["--data-path", absolute("--data-path", r.data_path)]
    if r.batch_size:
        args += ["--batch-size", str(r.batch_size)]
    if r.lr:
        args += ["--lr", repr(float(r.lr))]
    if r.threads:
        args += ["--num-threads", str(r.threads)]
    return payload.read_bytes(), "train.py", tuple(args)


def _placement(r: DdpRequest, cluster: Cluster) -> tuple[int, tuple[Host, ...]]:
    """How many nodes, and (SSH) which hosts, node 0 first."""
    if r.backend == "k8s":
        pool = [h for h in cluster.nodes if h.gpu] if r.gpus_per_node else cluster.nodes
        nodes = r.nodes or max(1, len(pool))
        if nodes > len(pool):
            what = "GPU nodes (gpu=true)" if r.gpus_per_node else "Kubernetes nodes"
            raise UsageError(
                f"--nodes {nodes} but the inventory has only {len(pool)} {what}",
                hint=f"use --nodes {len(pool)} or fewer" if pool else "mark GPU hosts with gpu=true",
            )
        return nodes, ()
    hosts = select_hosts(r, cluster, r.nodes)
    if r.iface is None and len(hosts) > 1 and not all(iface_of(h) for h in hosts):
        missing = [h.name for h in hosts if not iface_of(h)]
        raise UsageError(
            f"no network interface for gloo/NCCL on {', '.join(missing)}",
            hint="set train_iface (the interface carrying the cluster address) for the hosts, or give --iface",
        )
    return len(hosts), hosts


def resolve(request: DdpRequest, cluster: Cluster, project_dir: Path) -> DdpJob:
    """Check every input and fill in the defaults; UsageError (exit 2) names the first problem."""
    r = request
    _check_flags(r)
    env = parse_env(r.env)
    text, script_name, payload_args = _program(r, project_dir)
    nodes, hosts = _placement(r, cluster)
    if r.kind in ("pytorchjob", "trainjob") and r.backend == "k8s" and nodes > 1 and r.max_restarts > 0:
        raise UsageError(
            f"--max-restarts with --kind {r.kind} on more than one node is not supported",
            hint="the operator wires torchrun's static rendezvous, which cannot restart across nodes; "
            "use --kind indexed-job (c10d rendezvous when restarts are asked for)",
        )
    nproc = r.nproc_per_node or (r.gpus_per_node or 1)
    image = r.image or (DEFAULT_IMAGE_GPU if r.gpus_per_node else DEFAULT_IMAGE_CPU)
    base_env = {"PYTHONUNBUFFERED": "1"}
    if nodes > 1 and r.max_restarts > 0:
        # Each attempt gets a fresh store on a fresh port (see payloads/ddp/README.md, "Restarts").
        base_env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    base_env.update(env)
    options = {
        "backend": r.backend,
        "kind": r.kind if r.backend == "k8s" else None,
        "queue": r.queue,
        "nodes": nodes,
        "nproc_per_node": nproc,
        "gpus_per_node": r.gpus_per_node,
        "max_restarts": r.max_restarts,
        "script": str(r.script.expanduser().resolve()) if r.script else None,
        "payload_args": list(payload_args),
        "checkpoint_dir": r.checkpoint_dir,
        "env_names": sorted(env),  # names only: values may be anything the user passed
        "inventory": str(cluster.path),
    }
    return DdpJob(
        request=r,
        nodes=nodes,
        nproc_per_node=nproc,
        payload_args=payload_args,
        env=base_env,
        hosts=hosts,
        kubernetes_version=str(cluster.settings.get("kubernetes_version") or "1.36"),
        image=image,
        script_name=script_name,
        script_text=text,
        options=options,
        modules={}
        if r.script
        else {name: (project_dir / "payloads" / "ddp" / name).read_bytes() for name in PAYLOAD_MODULES},
    )


# --- what runs on each node ---------------------------------------------------------------------------


def checkpoint_args(job: DdpJob, default_dir: str) -> list[str]:
    """The payload's checkpoint and JSON-log flags (our payload only)."""
    if job.request.script is not None:
        return []
    directory = job.request.checkpoint_dir or default_dir
    return ["--checkpoint-path", f"{directory}/checkpoint.pt", "--log-path", f"{directory}/train.jsonl"]


def torchrun_args(job: DdpJob) -> list[str]:
    """torchrun's flags that are the same on every node (the per-node ones travel as PET_* or flags)."""
    return ["--nnodes", str(job.nodes), "--nproc-per-node", str(job.nproc_per_node)]


def ssh_launches(job: DdpJob, job_id: str, pythons: dict[str, str]) -> list[Any]:
    """One NodeLaunch per host: torchrun (`python -m torch.distributed.run`) with c10d rendezvous hosted
    by node 0's agent (`is_host` set explicitly, never guessed) and each node's inventory address as its
    `--local-addr`. c10d, not static: with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 it gives each restart a
    fresh store, which static rendezvous cannot (a multi-node restart then dies reading the failed
    attempt's peer address). Ranks follow the sorted local addresses, so rank 0 stays on one host across
    restarts and its checkpoint is found again. The script travels with the job."""
    from pyctl.train.launch import JOB_DIR, NodeLaunch

    r = job.request
    endpoint = f"{_url_host(job.hosts[0].address)}:{r.master_port}"
    launches = []
    for rank, host in enumerate(job.hosts):
        env = dict(job.env)
        env.update({"PYCTL_JOB_ID": job_id, "PYCTL_NODE_RANK": str(rank)})
        if r.checkpoint_dir:
            env["PYCTL_CHECKPOINT_DIR"] = r.checkpoint_dir
        iface = r.iface or iface_of(host)
        if iface:
            env["GLOO_SOCKET_IFNAME"] = iface
            if r.gpus_per_node:
                env["NCCL_SOCKET_IFNAME"] = iface
        argv = [
            pythons[host.name],
            "-m",
            "torch.distributed.run",
            *torchrun_args(job),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            endpoint,
            "--rdzv-id",
            job_id,
            "--rdzv-conf",
            f"is_host={1 if rank == 0 else 0}",
            "--local-addr",
            host.address,
            "--max-restarts",
            str(r.max_restarts),
            f"{JOB_DIR}/{job.script_name}",
            *job.payload_args,
            *checkpoint_args(job, JOB_DIR),
        ]
        launches.append(
            NodeLaunch(
                rank=rank,
                host=host.name,
                address=host.address,
                argv=tuple(argv),
                env=env,
                files={**job.modules, job.script_name: job.script_text},
            )
        )
    return launches


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
