"""`pyctl train distdgl`: the request, its validation, the job's spec, and what each machine runs.

Every machine (an SSH host, or one pod of an Indexed Job) runs the start-up step
(`templates/distdgl_startup.py`) with the same `job.json`: checks, peer addresses and ip_config.txt,
the partition step (machine 0 runs `payloads/distdgl/partition.py` once into the cache on the shared
path; the others wait for its result there), then `payloads/distdgl/launch.py` (servers, then trainers
through torchrun). Machine id = partition id = the host's place in the job = the completion index.

Shared path layout (`<share>` = `--shared-path` on SSH hosts, `--claim-mount` in pods):

    <share>/pyctl/partitions/<graph>-<N>p-<method>-<key>/   partition.py's cache
    <share>/pyctl/datasets/                               downloads of the named data sets
    <share>/pyctl/jobs/<job>/partition.json               machine 0's partition result, for the others
    <share>/pyctl/jobs/<job>/machine-<i>/                 ip_config.txt and torchrun's logs of machine i
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from collections.abc import Callable
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
    kubernetes_minor,
    parse_env,
    refuse_iface_on_k8s,
    refuse_image_on_ssh,
)

GRAPHS = ("cora", "citeseer", "pubmed", "ogbn-products", "synthetic")
PART_METHODS = ("metis", "random")
DEFAULT_IMAGE = "pyctl-distdgl:cpu"  # payloads/distdgl/Dockerfile, target cpu
IMAGE_PAYLOAD_DIR = "/app"  # where that image keeps partition.py, launch.py, train.py
STARTUP_DIR = "/opt/pyctl/startup"  # where pods mount the job's ConfigMap (start-up step + job.json)
DEFAULT_PYTHON = "/opt/pyctl/venvs/distdgl/bin/python"
DEFAULT_SHARED_PATH = "/mnt/pyctl"  # the nfs_client role's mount point on every host
DEFAULT_PORT = 30050
TORCH_PORT = 29500  # launch.py's defaults, on machine 0
CONTROL_PORT = 30049
DEFAULT_PEER_TIMEOUT = 45.0
DEFAULT_PARTITION_TIMEOUT = 3600.0
PAYLOAD_FILES = ("launch.py", "partition.py", "train.py", "graphs.py", "partconfig.py", "proctree.py")
STARTUP = Path(__file__).with_name("templates") / "distdgl_startup.py"
SPEC_NAME = "job.json"
USER_SCRIPT_PREFIX = "user_"  # the --script travels as user_<name>, clear of the payload's own files
_FANOUTS = re.compile(r"^(-1|[1-9][0-9]*)(,(-1|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class DistDglRequest:
    """What the user asked for. None means 'not given': defaults are filled in by `resolve`."""

    inventory: Path
    backend: str = "k8s"
    graph: str | None = None
    graph_path: str | None = None
    synthetic_nodes: int | None = None
    part_method: str = "metis"
    num_parts: int | None = None
    num_trainers: int = 1
    num_samplers: int = 0
    num_servers: int = 1
    epochs: int | None = None
    batch_size: int | None = None
    fanouts: str | None = None
    eval_fanouts: str | None = None
    lr: float | None = None
    train_args: tuple[str, ...] = ()  # more train.py flags (or the --script's arguments), after '--'
    script: Path | None = None  # the user's own trainer, run where train.py would be
    port: int = DEFAULT_PORT
    peer_timeout: float = DEFAULT_PEER_TIMEOUT
    partition_timeout: float = DEFAULT_PARTITION_TIMEOUT
    env: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    ssh_user: str | None = None
    ssh_key: Path | None = None
    python: str | None = None
    iface: str | None = None
    check_env: bool = False
    shared_path: str | None = None
    image: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    claim: str = DEFAULT_CLAIM
    claim_mount: str = DEFAULT_CLAIM_MOUNT
    queue: str | None = None  # k8s: a Kueue LocalQueue (gang admission)
    grace_s: float = 15.0
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S  # k8s --follow: pods must have started by then


@dataclass(frozen=True)
class DistDglJob:
    """A validated request with every default filled in."""

    request: DistDglRequest
    num_parts: int
    partition_args: tuple[str, ...]
    train_args: tuple[str, ...]
    env: dict[str, str]
    hosts: tuple[Host, ...] = ()  # SSH: machine 0 first
    addresses: tuple[str, ...] = ()  # SSH: each host's cluster address (IPv4)
    shared_path: str = ""  # SSH: the share on the hosts; k8s: the claim's mount point
    kubernetes_version: str = "1.36"
    image: str = DEFAULT_IMAGE
    options: dict[str, Any] = field(default_factory=dict)
    script_name: str | None = None  # the user's --script, as it travels (user_<name>)
    script_text: str = ""

    @property
    def num_clients(self) -> int:
        r = self.request
        return r.num_trainers * (1 + r.num_samplers) * self.num_parts

    @property
    def world_size(self) -> int:
        return self.request.num_trainers * self.num_parts


def payload_dir(project_dir: Path) -> Path:
    return project_dir / "payloads" / "distdgl"


def _check_flags(r: DistDglRequest) -> None:
    check_backend(r.backend)
    if r.queue is not None and r.backend != "k8s":
        raise UsageError("--queue is for --backend k8s (Kueue admits Kubernetes jobs)")
    check_at_least(
        (
            ("--num-parts", r.num_parts, 1),
            ("--num-trainers", r.num_trainers, 1),
            ("--num-samplers", r.num_samplers, 0),
            ("--num-servers", r.num_servers, 1),
            ("--epochs", r.epochs, 1),
            ("--batch-size", r.batch_size, 1),
            ("--synthetic-nodes", r.synthetic_nodes, 8),
        )
    )
    check_lr(r.lr)
    for flag, value in (("--fanouts", r.fanouts), ("--eval-fanouts", r.eval_fanouts)):
        if value is not None and not _FANOUTS.match(value):
            raise UsageError(f"{flag} {value!r}: give a positive integer (or -1: all neighbours) per layer, e.g. 10,25")
    if r.fanouts and r.eval_fanouts and len(r.fanouts.split(",")) != len(r.eval_fanouts.split(",")):
        raise UsageError(f"--eval-fanouts {r.eval_fanouts} needs one value per layer, like --fanouts {r.fanouts}")
    if r.part_method not in PART_METHODS:
        raise UsageError(f"--part-method {r.part_method!r} is not one of {', '.join(PART_METHODS)}")
    top = r.port + r.num_servers - 1
    if r.port < 1024 or top > 65535 or r.port <= CONTROL_PORT <= top or r.port <= TORCH_PORT <= top:
        raise UsageError(
            f"--port {r.port}: the DGL servers use ports {r.port}..{top}; keep them within 1024..65535 and off "
            f"{TORCH_PORT} and {CONTROL_PORT} (torchrun's and the launchers' ports on machine 0)"
        )
    for flag, value in (("--peer-timeout", r.peer_timeout), ("--partition-timeout", r.partition_timeout)):
        if not value > 0:
            raise UsageError(f"{flag} {value}: must be a positive number of seconds")
    check_start_timeout(r.start_timeout_s)
    if r.backend == "k8s":
        refuse_iface_on_k8s(r.iface)
        absolute("--claim-mount", r.claim_mount, "hosts")
        for flag, value in (
            ("--shared-path", r.shared_path),
            ("--python", r.python),
            ("--hosts", ",".join(r.hosts) or None),
            ("--ssh-user", r.ssh_user),
        ):
            if value:
                raise UsageError(f"{flag} is for --backend ssh", hint="pods use the image and the claim (--claim)")
    else:
        refuse_image_on_ssh(r.image)


def _graph(r: DistDglRequest, share: str) -> tuple[str, ...]:
    """partition.py's graph flags (without --num-parts and --output, which the start-up step adds)."""
    if r.graph is not None and r.graph_path is not None:
        raise UsageError("give --graph or --graph-path, not both")
    if r.graph_path is not None:
        path = absolute("--graph-path", r.graph_path, "hosts")
        if r.backend == "k8s" and not PurePosixPath(path).is_relative_to(r.claim_mount):
            raise UsageError(
                f"--graph-path {path} is not on the NFS share, which pods mount at {r.claim_mount}",
                hint=f"copy the graph file under {r.claim_mount} (or change --claim-mount)",
            )
        if r.synthetic_nodes is not None:
            raise UsageError("--synthetic-nodes is for --graph synthetic")
        args: list[str] = ["--graph-path", path]
    else:
        graph = r.graph or "synthetic"
        if graph not in GRAPHS:
            raise UsageError(
                f"--graph {graph!r} is not one of {', '.join(GRAPHS)}",
                hint="or give your own DGL graph file with --graph-path",
            )
        if r.synthetic_nodes is not None and graph != "synthetic":
            raise UsageError("--synthetic-nodes is for --graph synthetic")
        args = ["--graph", graph]
        if r.synthetic_nodes is not None:
            args += ["--nodes", str(r.synthetic_nodes)]
        if graph != "synthetic":
            args += ["--data-dir", f"{share}/pyctl/datasets"]  # downloads are kept on the share
    return (*args, "--part-method", r.part_method)


def _train(r: DistDglRequest) -> tuple[str, ...]:
    args = ["--epochs", str(r.epochs or 10)]
    if r.batch_size:
        args += ["--batch-size", str(r.batch_size)]
    if r.fanouts:
        args += ["--fanouts", r.fanouts]
    if r.eval_fanouts:
        args.append(f"--eval-fanouts={r.eval_fanouts}")  # '=': the value may start with '-'
    if r.lr:
        args += ["--lr", repr(float(r.lr))]
    reserved = [a for a in r.train_args if a.split("=", 1)[0] in ("--mode", "--part-config", "--ip-config")]
    if reserved:
        raise UsageError(f"{', '.join(reserved)} after '--' is set by pyctl and launch.py, not by you")
    return (*args, *r.train_args)


def _script(r: DistDglRequest) -> tuple[str | None, str]:
    """The user's trainer (name as it travels, text), checked; (None, "") for our train.py."""
    if r.script is None:
        return None, ""
    given = [
        flag
        for flag, value in (
            ("--epochs", r.epochs),
            ("--batch-size", r.batch_size),
            ("--fanouts", r.fanouts),
            ("--eval-fanouts", r.eval_fanouts),
            ("--lr", r.lr),
        )
        if value is not None
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)} are our train.py's flags, not your --script's",
            hint="give your script's own flags after '--'",
        )
    path = r.script.expanduser()
    if not path.is_file():
        raise UsageError(f"--script {r.script}: no such file")
    data = path.read_bytes()
    if len(data) > MAX_SCRIPT_BYTES:
        raise UsageError(
            f"--script {r.script} is {len(data) // 1024} KiB; at most {MAX_SCRIPT_BYTES // 1024} KiB travel with a job",
            hint="put large code in the image or on the shared folder and keep a small entry script",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--script {r.script} is not UTF-8 text (a Python script is expected)") from None
    name = path.name if path.suffix == ".py" else f"{path.name}.py"
    return f"{USER_SCRIPT_PREFIX}{name}", text


def _address_of(host: Host) -> str:
    """The address DistDGL uses for a host: `train_address`, else the inventory address; literal IPv4."""
    value = str(host.vars.get("train_address") or host.address)
    try:
        if ipaddress.ip_address(value).version == 4:
            return value
    except ValueError:
        pass
    raise UsageError(
        f"host {host.name}: its address {value!r} is not a literal IPv4 address, which DistDGL's ip_config needs",
        hint="set ansible_host (or train_address, the address on the cluster network) to the host's IPv4 address",
    )


def _hosts(r: DistDglRequest, cluster: Cluster) -> tuple[Host, ...]:
    """SSH: the machines, machine 0 first: --hosts as given, else the first --num-parts inventory nodes."""
    pool = host_pool(r.hosts, cluster)
    if r.hosts:
        chosen = pool
        if r.num_parts is not None and r.num_parts != len(chosen):
            raise UsageError(
                f"--num-parts {r.num_parts} but --hosts names {len(chosen)} host(s); DistDGL runs one machine per "
                "partition",
                hint=f"use --num-parts {len(chosen)}, or name {r.num_parts} hosts",
            )
        return tuple(chosen)
    wanted = r.num_parts if r.num_parts is not None else len(pool)
    if wanted > len(pool):
        raise UsageError(
            f"--num-parts {wanted} but the inventory has only {len(pool)} hosts; DistDGL runs one machine per "
            "partition",
            hint=f"use --num-parts {len(pool)} or fewer",
        )
    return tuple(pool[:wanted])


def resolve(request: DistDglRequest, cluster: Cluster, project_dir: Path) -> DistDglJob:
    """Check every input and fill in the defaults; UsageError (exit 2) names the first problem."""
    r = request
    _check_flags(r)
    env = parse_env(r.env)
    payload = payload_dir(project_dir)
    missing = [name for name in PAYLOAD_FILES if not (payload / name).is_file()]
    if missing:
        raise UsageError(f"the DistDGL payload in {payload} lacks {', '.join(missing)}", hint="reinstall pyctl")
    hosts: tuple[Host, ...] = ()
    addresses: tuple[str, ...] = ()
    if r.backend == "ssh":
        hosts = _hosts(r, cluster)
        addresses = tuple(_address_of(h) for h in hosts)
        repeated = sorted({a for a in addresses if addresses.count(a) > 1})
        if repeated:
            raise UsageError(f"two hosts of the job have the same address {', '.join(repeated)}")
        num_parts = len(hosts)
        first = hosts[0].vars
        share = absolute(
            "--shared-path", r.shared_path or str(first.get("nfs_client_mount_path") or DEFAULT_SHARED_PATH), "hosts"
        ).rstrip("/")
    else:
        pool = cluster.nodes
        num_parts = r.num_parts or max(1, len(pool))
        if num_parts > len(pool):
            raise UsageError(
                f"--num-parts {num_parts} but the inventory has only {len(pool)} Kubernetes nodes; DistDGL runs one "
                "pod per partition",
                hint=f"use --num-parts {len(pool)} or fewer" if pool else "add hosts to control_plane or workers",
            )
        share = r.claim_mount.rstrip("/")
    base_env = {"PYTHONUNBUFFERED": "1", "DGLBACKEND": "pytorch"}
    base_env.update(env)
    partition_args = _graph(r, share)
    script_name, script_text = _script(r)
    train_args = r.train_args if script_name else _train(r)
    options = {
        "backend": r.backend,
        "num_parts": num_parts,
        "num_trainers": r.num_trainers,
        "num_samplers": r.num_samplers,
        "num_servers": r.num_servers,
        "partition_args": list(partition_args),
        "train_args": list(train_args),
        "script": str(r.script.expanduser().resolve()) if r.script else None,
        "shared_path": share,
        "queue": r.queue,
        "env_names": sorted(env),
        "inventory": str(cluster.path),
    }
    return DistDglJob(
        request=r,
        num_parts=num_parts,
        partition_args=partition_args,
        train_args=train_args,
        env=base_env,
        hosts=hosts,
        addresses=addresses,
        shared_path=share,
        kubernetes_version=str(cluster.settings.get("kubernetes_version") or "1.36"),
        image=r.image or DEFAULT_IMAGE,
        options=options,
        script_name=script_name,
        script_text=script_text,
    )


# --- the job's spec (job.json), read by the start-up step on every machine -----------------------------


def spec(job: DistDglJob, job_id: str, *, python: str | None) -> dict[str, Any]:
    r = job.request
    body: dict[str, Any] = {"job": job_id, "num_parts": job.num_parts}
    if job.addresses:
        body["addresses"] = list(job.addresses)
    else:
        body["peer_names"] = [f"{job_id}-{i}.{job_id}" for i in range(job.num_parts)]
        body["resolve_timeout_s"] = r.peer_timeout
    body.update(
        {
            "num_servers": r.num_servers,
            "num_trainers": r.num_trainers,
            "num_samplers": r.num_samplers,
            "num_clients": job.num_clients,
            "port": r.port,
            "python": python,
            "share": f"{job.shared_path}/pyctl/jobs/{job_id}",
            "partition": {
                "args": list(job.partition_args),
                "output": f"{job.shared_path}/pyctl/partitions",
                "timeout_s": r.partition_timeout,
            },
            "launch_args": ["--peer-timeout", f"{r.peer_timeout:g}", "--grace", "10"],
            "train_args": list(job.train_args),
        }
    )
    if job.script_name:
        body["script"] = job.script_name  # beside job.json; launch.py runs it where it runs our train.py
    return body


def spec_text(job: DistDglJob, job_id: str, *, python: str | None) -> str:
    return json.dumps(spec(job, job_id, python=python), indent=2) + "\n"


# --- SSH: one NodeLaunch per host ------------------------------------------------------------------------


def job_iface(job: DistDglJob, host: Host) -> str | None:
    """--iface, else the host's train_iface/lab_iface; None: launch.py picks the address's interface."""
    return job.request.iface or iface_of(host)


def pythons(job: DistDglJob) -> dict[str, str]:
    r = job.request
    return {h.name: r.python or str(h.vars.get("distdgl_python") or DEFAULT_PYTHON) for h in job.hosts}


def ssh_launches(job: DistDglJob, job_id: str, project_dir: Path) -> list[Any]:
    """Each host runs the start-up step from its job folder, where the payload and job.json travel too.
    GLOO_SOCKET_IFNAME: --iface, else the host's train_iface/lab_iface, else launch.py's own pick (the
    interface that carries the host's address)."""
    from pyctl.train.launch import JOB_DIR, NodeLaunch

    payload = payload_dir(project_dir)
    files = {name: (payload / name).read_bytes() for name in PAYLOAD_FILES}
    files["distdgl_startup.py"] = STARTUP.read_bytes()
    files[SPEC_NAME] = spec_text(job, job_id, python=None).encode()
    if job.script_name:
        files[job.script_name] = job.script_text.encode()
    interpreters = pythons(job)
    launches = []
    for index, host in enumerate(job.hosts):
        env = dict(job.env)
        env.update({"PYCTL_JOB_ID": job_id, "PYCTL_MACHINE_INDEX": str(index)})
        iface = job_iface(job, host)
        if iface:
            env.setdefault("GLOO_SOCKET_IFNAME", iface)
        argv = [
            interpreters[host.name],
            f"{JOB_DIR}/distdgl_startup.py",
            "--spec",
            f"{JOB_DIR}/{SPEC_NAME}",
            "--payload",
            JOB_DIR,
            "--index",
            str(index),
        ]
        launches.append(
            NodeLaunch(rank=index, host=host.name, address=job.addresses[index], argv=tuple(argv), env=env, files=files)
        )
    return launches


# --- SSH preflight ---------------------------------------------------------------------------------------


PREFLIGHT_MODULE = "dgl"  # what --check-env imports on every host
PREFLIGHT_HINTS = (  # for a missing interpreter, for a failed import
    "install payloads/distdgl/requirements.txt into a virtualenv on the hosts and name it "
    "with --python or the distdgl_python host variable",
    None,
)


def preflight_ifaces(job: DistDglJob) -> dict[str, str | None]:
    """The interfaces the preflight checks: only --iface (without it launch.py takes the interface that
    carries the host's address)."""
    iface = job.request.iface
    return {h.name: iface for h in job.hosts} if iface else {}


def host_checks(job: DistDglJob) -> Callable[[int, Any, Any], None]:
    """The SSH preflight's DistDGL checks on each host (index, target, connection): the shared folder
    exists and is writable; on machine 0, the --graph-path file is there."""
    from pyctl import remote

    q = remote.quote
    share = job.shared_path
    graph_path = job.request.graph_path

    def check(index: int, target: Any, conn: Any) -> None:
        code, _ = remote.run(conn, f"test -d {q([share])} && test -w {q([share])}", timeout=30)
        if code != 0:
            raise UsageError(
                f"host {target.name}: the shared folder {share} does not exist or is not writable",
                hint="mount the NFS share on every host (pyctl bootstrap --phases storage), or name a folder "
                "every host shares with --shared-path",
            )
        if index == 0 and graph_path:
            code, _ = remote.run(conn, f"test -f {q([graph_path])} && test -r {q([graph_path])}", timeout=30)
            if code != 0:
                raise UsageError(
                    f"--graph-path {graph_path}: no such file on {target.name} (machine 0, which partitions)",
                    hint="put the graph file on the shared folder and give its path there",
                )

    return check


def check_shared(targets: list[Any], share: str, job_id: str) -> None:
    """After the per-host checks, with more than one host: machine 0 writes a token into the shared
    folder; every other host must read it back (the folder is really shared)."""
    from pyctl import remote

    q = remote.quote
    token = secrets.token_hex(8)
    probe = f"{share}/.pyctl-probe-{job_id}"
    conn = remote.connect(targets[0])
    try:
        code, out = remote.run(conn, f"printf %s {token} > {q([probe])}", timeout=30)
        if code != 0:
            raise UsageError(f"host {targets[0].name}: cannot write {probe}: {out.strip()}")
        for target in targets[1:]:
            other = remote.connect(target)
            try:
                code, out = remote.run(other, f"cat {q([probe])}", timeout=30)
            finally:
                remote.close(other)
            if code != 0 or out.strip() != token:
                raise UsageError(
                    f"host {target.name} does not see what {targets[0].name} wrote to {share}: the folder is not "
                    "shared",
                    hint="DistDGL machines read the partitions from one shared folder: mount the NFS share on every "
                    "host, or name a shared folder with --shared-path",
                )
    finally:
        remote.run(conn, f"rm -f {q([probe])}", timeout=30)
        remote.close(conn)


# --- Kubernetes: ConfigMap (start-up step + job.json), headless Service, Indexed Job ---------------------


def _ports(job: DistDglJob) -> list[tuple[str, int]]:
    r = job.request
    ports = [(f"dgl-server-{s}", r.port + s) for s in range(r.num_servers)]
    return [*ports, ("torchrun", TORCH_PORT), ("launch-control", CONTROL_PORT)]


def render_k8s(job: DistDglJob, job_id: str) -> dict[str, str]:
    """The manifests for `job`, by name (file stem): what `--render` writes and what is submitted. The
    ConfigMap is called "configmap" so the Kubernetes client owns it to the Job (removed with it)."""
    from pyctl.render import render
    from pyctl.train import kueue
    from pyctl.train.workloads.ddp_manifests import (
        COMPLETION_INDEX_ANNOTATION,
        PER_INDEX_SINCE,
        SUCCESS_POLICY_SINCE,
        TEMPLATES,
    )

    r = job.request
    configmap = f"{job_id}-startup"
    context = {
        "job": job_id,
        "service": job_id,
        "configmap": configmap,
        "namespace": r.namespace,
        "labels": {
            "app.kubernetes.io/name": "pyctl-train",
            "app.kubernetes.io/managed-by": "pyctl",
            "pyctl/job-id": job_id,
            "pyctl/workload": "distdgl",
        },
        "startup_dir": STARTUP_DIR,
        "queue": r.queue or "",
    }
    context["job_labels"] = kueue.job_labels(context["labels"], r.queue)
    index = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    env: list[dict[str, Any]] = [
        {"name": "PYCTL_MACHINE_INDEX", "valueFrom": {"fieldRef": {"fieldPath": index}}},
        {"name": "PYCTL_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        # The pod count the Job runs; the start-up step checks it against the machines in job.json.
        {"name": "PYCTL_MACHINES", "value": str(job.num_parts)},
        {"name": "PYCTL_JOB_ID", "value": job_id},
    ]
    env += [{"name": k, "value": v} for k, v in job.env.items()]
    ports = _ports(job)
    version = kubernetes_minor(job.kubernetes_version)
    return {
        "configmap": render(
            TEMPLATES,
            "distdgl-configmap.yaml.j2",
            **context,
            spec_json=spec_text(job, job_id, python="python"),
            startup=STARTUP.read_text(encoding="utf-8"),
            script_name=job.script_name,
            script=job.script_text,
        ),
        "service": render(
            TEMPLATES,
            "distdgl-service.yaml.j2",
            **context,
            ports=[{"name": name, "port": port, "targetPort": port} for name, port in ports],
        ),
        "job": render(
            TEMPLATES,
            "distdgl-job.yaml.j2",
            **context,
            machines=job.num_parts,
            image=job.image,
            command=["python", f"{STARTUP_DIR}/distdgl_startup.py"],
            args=[
                "--spec",
                f"{STARTUP_DIR}/{SPEC_NAME}",
                "--payload",
                IMAGE_PAYLOAD_DIR,
                "--own-ip",
                "$(PYCTL_POD_IP)",
            ],
            env=env,
            ports=[{"name": name, "containerPort": port} for name, port in ports],
            claim=r.claim,
            claim_mount=r.claim_mount,
            success_policy=version >= SUCCESS_POLICY_SINCE,
            per_index=version >= PER_INDEX_SINCE,
        ),
    }
