"""Argument parsing only. Each command imports its implementation lazily, so `pyctl --help` is instant."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from pyctl import __version__

app = typer.Typer(
    name="pyctl",
    help="Turn bare-metal GPU servers into a verified Kubernetes training cluster, with Ansible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
inventory_app = typer.Typer(help="Validate inventories.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(inventory_app, name="inventory")
lab_app = typer.Typer(
    help="A local multi-host lab (VMs, containers or network namespaces) to run pyctl against.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(lab_app, name="lab")
node_app = typer.Typer(help="Add nodes to a running cluster.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(node_app, name="node")

InventoryOpt = Annotated[
    Path, typer.Option("--inventory", "-i", help="Ansible inventory (INI or YAML).", show_default=False)
]
# Options `pyctl train ddp` and `pyctl train distdgl` share, word for word.
EnvOpt = Annotated[list[str] | None, typer.Option("--env", help="NAME=VALUE for every process (repeat).")]
SshUserOpt = Annotated[str | None, typer.Option("--ssh-user", help="ssh: log in as (default: pyctl).")]
SshKeyOpt = Annotated[Path | None, typer.Option("--ssh-key", help="ssh: private key (default: the cluster's).")]
HostsOpt = Annotated[
    str | None, typer.Option("--hosts", help="ssh: these hosts, comma-separated, node (machine) 0 first.")
]


def _host_names(hosts: str | None) -> tuple[str, ...]:
    """`--hosts a,b`: the names, in order, blanks dropped."""
    return tuple(h.strip() for h in (hosts or "").split(",") if h.strip())


# `pyctl train ddp` and `pyctl doctor --workload`: the interpreter with torch on the SSH hosts.
TorchPythonOpt = Annotated[
    str | None, typer.Option("--python", help="ssh: interpreter with torch on the hosts (train_python).")
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", help="k8s namespace.")]
ClaimOpt = Annotated[str, typer.Option("--claim", help="k8s: the shared NFS PersistentVolumeClaim.")]
ClaimMountOpt = Annotated[str, typer.Option("--claim-mount", help="k8s: where pods mount it.")]
RenderOpt = Annotated[
    Path | None, typer.Option("--render", help="Write every manifest or command to DIR; start nothing.")
]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Print the merged log; exit with the job's code.")]
QueueOpt = Annotated[
    str | None, typer.Option("--queue", help="k8s: submit through this Kueue LocalQueue (all pods admitted at once).")
]
StartTimeoutOpt = Annotated[
    float, typer.Option("--start-timeout", help="k8s --follow: seconds for every pod to start, else fail (0: wait).")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pyctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the Python traceback when pyctl fails.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Turn bare-metal GPU servers into a verified Kubernetes training cluster, with Ansible."""


@inventory_app.command("check")
def inventory_check(
    file: Annotated[Path, typer.Argument(help="Inventory file (INI or YAML).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Validate an inventory without touching any host; print its hosts or every problem found."""
    from pyctl.commands.inventory import run_check

    raise typer.Exit(run_check(file, as_json))


@app.command()
def bootstrap(  # noqa: PLR0917 - typer passes options by keyword
    inventory: Annotated[
        Path | None, typer.Option("--inventory", "-i", help="Ansible inventory (INI or YAML).", show_default=False)
    ] = None,
    phases: Annotated[
        str | None, typer.Option("--phases", help="Comma-separated phases to run (default: all, in order).")
    ] = None,
    limit: Annotated[str | None, typer.Option("--limit", "-l", help="Only these hosts or groups.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Report what would change; change nothing.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More Ansible output in the log.")] = 0,
    list_artifacts: Annotated[
        bool,
        typer.Option(
            "--list-artifacts",
            help="Print every package, image and manifest the bootstrap pulls (for offline mirrors); run nothing.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --list-artifacts: one JSON document (schema in the README).")
    ] = False,
) -> None:
    """Take the hosts of an inventory to a cluster, phase by phase, with live progress."""
    if list_artifacts:
        from pyctl.commands.artifacts import run as list_run

        raise typer.Exit(list_run(inventory, as_json))
    if as_json:
        from pyctl.errors import UsageError

        raise UsageError("--json goes with --list-artifacts: pyctl bootstrap --list-artifacts --json [-i FILE]")
    if inventory is None:
        from pyctl.errors import UsageError

        raise UsageError("bootstrap needs an inventory: --inventory FILE (-i FILE)")
    from pyctl.commands.bootstrap import run

    raise typer.Exit(run(inventory, phases, limit, check, verbose))


@app.command()
def doctor(  # noqa: PLR0917 - typer passes options by keyword
    inventory: InventoryOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    workload: Annotated[
        bool,
        typer.Option(
            "--workload",
            help="Instead: all-reduce between every pair of nodes, then a short DDP run; a verdict per node.",
        ),
    ] = False,
    backend: Annotated[str, typer.Option("--backend", help="--workload: k8s or ssh.")] = "k8s",
    ssh_user: SshUserOpt = None,
    ssh_key: SshKeyOpt = None,
    python: TorchPythonOpt = None,
    allreduce_mib: Annotated[
        float | None, typer.Option("--allreduce-mib", help="--workload: MiB per all-reduce (default 16).")
    ] = None,
    min_gbps: Annotated[
        float | None, typer.Option("--min-gbps", help="--workload: a node whose best link is below is slow.")
    ] = None,
    loss_threshold: Annotated[
        float | None,
        typer.Option("--loss-threshold", help="--workload: the DDP run's final loss must be at most this (0.6)."),
    ] = None,
    render: RenderOpt = None,
) -> None:
    """Judge the running cluster against the inventory (nodes, GPUs, add-ons, storage); exit 1 on a problem.

    With --workload: all-reduce bandwidth between every pair of nodes, then a short DDP run that must reach a loss
    threshold; a verdict per node (ok, slow, failed) with a reason; exit 1 when any node is not ok.
    """
    from pyctl.commands.doctor import run, run_workload
    from pyctl.workload.check import WorkloadRequest

    given = {"size_mib": allreduce_mib, "min_gbps": min_gbps, "loss_threshold": loss_threshold, "render": render}
    request = WorkloadRequest(
        inventory=inventory,
        backend=backend,
        ssh_user=ssh_user,
        ssh_key=ssh_key,
        python=python,
        **{name: value for name, value in given.items() if value is not None},
    )
    if workload:
        raise typer.Exit(run_workload(request, as_json))
    if request != WorkloadRequest(inventory=inventory):
        from pyctl.errors import UsageError

        raise UsageError(
            "--backend, --ssh-user, --ssh-key, --python, --allreduce-mib, --min-gbps, --loss-threshold and --render "
            "are options of --workload"
        )
    raise typer.Exit(run(inventory, as_json))


@app.command()
def status(
    inventory: InventoryOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise the running cluster: nodes, GPUs, add-on pods, shared storage (API only, no SSH)."""
    from pyctl.commands.status import run

    raise typer.Exit(run(inventory, as_json))


@app.command()
def reset(
    inventory: InventoryOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More Ansible output in the log.")] = 0,
) -> None:
    """Take every node host out of the cluster: kubeadm reset and what pyctl added (asks first)."""
    from pyctl.commands.reset import run

    raise typer.Exit(run(inventory, yes, verbose))


@node_app.command("add")
def node_add(
    inventory: InventoryOpt,
    host: Annotated[str, typer.Option("--host", help="The inventory host (in workers) to join.", show_default=False)],
    phases: Annotated[
        str | None, typer.Option("--phases", help="Comma-separated node phases to run (default: all, in order).")
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More Ansible output in the log.")] = 0,
) -> None:
    """Prepare one host and join it; the control plane is touched only to mint its join token."""
    from pyctl.commands.node import add

    raise typer.Exit(add(inventory, host, phases, verbose))


LabNameOpt = Annotated[str, typer.Option("--name", help="Lab name (letters, digits, dashes).")]


@lab_app.command("up")
def lab_up(  # noqa: PLR0917 - typer passes options by keyword
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Hosts; host 1 is the control plane.")] = 3,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="vm (QEMU), container (nspawn), netns, or mixed (node1 a VM, the others container hosts).",
        ),
    ] = "vm",
    gpu_nodes: Annotated[int, typer.Option("--gpu-nodes", help="Mark the last K hosts gpu=true.")] = 0,
    name: LabNameOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the lab as JSON.")] = False,
    os_name: Annotated[str, typer.Option("--os", help="vm/container hosts: debian-12 or debian-13.")] = "debian-12",
) -> None:
    """Create the lab (or find it up already) and print the path of its inventory."""
    from pyctl.commands.lab import run_up
    from pyctl.lab import LabSpec

    spec = LabSpec(name=name, nodes=nodes, kind=kind, gpu_nodes=gpu_nodes, os=os_name)
    raise typer.Exit(run_up(spec, as_json))


@lab_app.command("down")
def lab_down(
    name: LabNameOpt = "default",
    everything: Annotated[bool, typer.Option("--all", help="Take down every lab.")] = False,
) -> None:
    """Remove everything the lab made: processes, namespaces, mounts, its files (not the image cache)."""
    from pyctl.commands.lab import run_down

    raise typer.Exit(run_down(name, everything))


@lab_app.command("status")
def lab_status(
    name: LabNameOpt = "default",
    everything: Annotated[bool, typer.Option("--all", help="Report on every lab.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the lab's hosts: address, kind, health (process alive, SSH reachable)."""
    from pyctl.commands.lab import run_status

    raise typer.Exit(run_status(None if everything else name, as_json))


train_app = typer.Typer(
    help="Run distributed training on the cluster (Kubernetes) or over SSH, and manage its jobs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(train_app, name="train")


@train_app.command("ddp", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train_ddp(  # noqa: PLR0917 - typer passes every option positionally
    ctx: typer.Context,
    inventory: InventoryOpt,
    backend: Annotated[str, typer.Option("--backend", help="k8s (an Indexed Job or PyTorchJob) or ssh.")] = "k8s",
    nodes: Annotated[
        int | None, typer.Option("--nodes", help="Nodes (default: every node, GPU nodes with GPUs).")
    ] = None,
    nproc_per_node: Annotated[
        int | None, typer.Option("--nproc-per-node", help="Processes per node (default: GPUs per node, else 1).")
    ] = None,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node (nvidia.com/gpu).")] = 0,
    image: Annotated[
        str | None, typer.Option("--image", help="k8s: the payload image (default pyctl-ddp:cpu|cuda).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs in all (default 10).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="fashion-mnist or digits (default).")] = None,
    data_path: Annotated[str | None, typer.Option("--data-path", help="Fashion-MNIST folder on the nodes.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size per process (default 64).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default 0.01).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads per process.")] = None,
    checkpoint_dir: Annotated[
        str | None, typer.Option("--checkpoint-dir", help="Checkpoint folder (k8s: on the NFS share); reused = resume.")
    ] = None,
    script: Annotated[
        Path | None, typer.Option("--script", help="Your own torchrun-ready script; its arguments after '--'.")
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="k8s: indexed-job, trainjob (Kubeflow Trainer v2) or pytorchjob (legacy).")
    ] = "indexed-job",
    queue: QueueOpt = None,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", help="trainjob: the ClusterTrainingRuntime (default torch-distributed)."),
    ] = None,
    with_runtime: Annotated[
        bool, typer.Option("--with-runtime", help="trainjob: also apply pyctl's runtime (pyctl-torch[-nvidia]).")
    ] = False,
    max_restarts: Annotated[int, typer.Option("--max-restarts", help="torchrun restarts of the whole job.")] = 0,
    master_port: Annotated[int, typer.Option("--master-port", help="torchrun's rendezvous port on node 0.")] = 29500,
    env: EnvOpt = None,
    hosts: HostsOpt = None,
    ssh_user: SshUserOpt = None,
    ssh_key: SshKeyOpt = None,
    python: TorchPythonOpt = None,
    iface: Annotated[str | None, typer.Option("--iface", help="Interface for gloo/NCCL (train_iface).")] = None,
    check_env: Annotated[
        bool, typer.Option("--check-env", help="ssh: check torch imports on every host first.")
    ] = False,
    namespace: NamespaceOpt = "default",
    claim: ClaimOpt = "pyctl-shared",
    claim_mount: ClaimMountOpt = "/mnt/pyctl-shared",
    render: RenderOpt = None,
    follow: FollowOpt = False,
    start_timeout: StartTimeoutOpt = 900.0,
) -> None:
    """Data-parallel PyTorch training (torchrun) on the cluster's nodes."""
    from pyctl.commands.train import run_ddp
    from pyctl.train.workloads.ddp import DdpRequest

    request = DdpRequest(
        inventory=inventory,
        backend=backend,
        nodes=nodes,
        nproc_per_node=nproc_per_node,
        gpus_per_node=gpus_per_node,
        image=image,
        epochs=epochs,
        dataset=dataset,
        data_path=data_path,
        batch_size=batch_size,
        lr=lr,
        threads=threads,
        checkpoint_dir=checkpoint_dir,
        script=script,
        script_args=tuple(ctx.args),
        kind=kind,
        queue=queue,
        runtime=runtime,
        with_runtime=with_runtime,
        max_restarts=max_restarts,
        master_port=master_port,
        env=tuple(env or ()),
        hosts=_host_names(hosts),
        ssh_user=ssh_user,
        ssh_key=ssh_key,
        python=python,
        iface=iface,
        check_env=check_env,
        namespace=namespace,
        claim=claim,
        claim_mount=claim_mount,
        start_timeout_s=start_timeout,
    )
    raise typer.Exit(run_ddp(request, render, follow))


@train_app.command("distdgl", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train_distdgl(  # noqa: PLR0917 - typer passes every option positionally
    ctx: typer.Context,
    inventory: InventoryOpt,
    backend: Annotated[str, typer.Option("--backend", help="k8s (an Indexed Job) or ssh.")] = "k8s",
    graph: Annotated[
        str | None,
        typer.Option("--graph", help="citeseer, cora, pubmed, ogbn-products (downloaded) or synthetic (default)."),
    ] = None,
    graph_path: Annotated[
        str | None, typer.Option("--graph-path", help="A dgl.save_graphs file on the hosts (k8s: on the share).")
    ] = None,
    synthetic_nodes: Annotated[
        int | None, typer.Option("--synthetic-nodes", help="--graph synthetic: nodes (default 4000).")
    ] = None,
    part_method: Annotated[str, typer.Option("--part-method", help="metis or random.")] = "metis",
    num_parts: Annotated[
        int | None, typer.Option("--num-parts", help="Partitions = machines (default: every host or node).")
    ] = None,
    num_trainers: Annotated[int, typer.Option("--num-trainers", help="Trainer processes per machine.")] = 1,
    num_samplers: Annotated[int, typer.Option("--num-samplers", help="Sampler processes per trainer.")] = 0,
    num_servers: Annotated[int, typer.Option("--num-servers", help="DGL servers per machine.")] = 1,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (default 10).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Seeds per batch and trainer (256).")] = None,
    fanouts: Annotated[str | None, typer.Option("--fanouts", help="Neighbours sampled per layer (10,10).")] = None,
    eval_fanouts: Annotated[
        str | None, typer.Option("--eval-fanouts", help="For validation and test; -1 = all (--eval-fanouts=-1,-1).")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default 0.01).")] = None,
    script: Annotated[
        Path | None,
        typer.Option("--script", help="Your own DistDGL trainer instead of ours; its arguments after '--'."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="First DGL server port (server s: port + s).")] = 30050,
    peer_timeout: Annotated[
        float, typer.Option("--peer-timeout", help="Seconds for peers to resolve and to meet before failing.")
    ] = 45.0,
    partition_timeout: Annotated[
        float, typer.Option("--partition-timeout", help="Seconds machines wait for machine 0's partition.")
    ] = 3600.0,
    env: EnvOpt = None,
    hosts: HostsOpt = None,
    ssh_user: SshUserOpt = None,
    ssh_key: SshKeyOpt = None,
    python: Annotated[
        str | None, typer.Option("--python", help="ssh: interpreter with dgl on the hosts (distdgl_python).")
    ] = None,
    iface: Annotated[str | None, typer.Option("--iface", help="Interface for gloo (default: the address's).")] = None,
    check_env: Annotated[bool, typer.Option("--check-env", help="ssh: check dgl imports on every host first.")] = False,
    shared_path: Annotated[
        str | None, typer.Option("--shared-path", help="ssh: a folder every host shares (default /mnt/pyctl).")
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="k8s: the payload image (default pyctl-distdgl:cpu).")
    ] = None,
    namespace: NamespaceOpt = "default",
    claim: ClaimOpt = "pyctl-shared",
    claim_mount: ClaimMountOpt = "/mnt/pyctl-shared",
    queue: QueueOpt = None,
    render: RenderOpt = None,
    follow: FollowOpt = False,
    start_timeout: StartTimeoutOpt = 900.0,
) -> None:
    """Partition a graph, then train GraphSAGE on DistDGL: one machine per partition (train.py flags after '--')."""
    from pyctl.commands.train import run_distdgl
    from pyctl.train.workloads.distdgl import DistDglRequest

    request = DistDglRequest(
        inventory=inventory,
        backend=backend,
        graph=graph,
        graph_path=graph_path,
        synthetic_nodes=synthetic_nodes,
        part_method=part_method,
        num_parts=num_parts,
        num_trainers=num_trainers,
        num_samplers=num_samplers,
        num_servers=num_servers,
        epochs=epochs,
        batch_size=batch_size,
        fanouts=fanouts,
        eval_fanouts=eval_fanouts,
        lr=lr,
        train_args=tuple(ctx.args),
        script=script,
        port=port,
        peer_timeout=peer_timeout,
        partition_timeout=partition_timeout,
        env=tuple(env or ()),
        hosts=_host_names(hosts),
        ssh_user=ssh_user,
        ssh_key=ssh_key,
        python=python,
        iface=iface,
        check_env=check_env,
        shared_path=shared_path,
        image=image,
        namespace=namespace,
        claim=claim,
        queue=queue,
        claim_mount=claim_mount,
        start_timeout_s=start_timeout,
    )
    raise typer.Exit(run_distdgl(request, render, follow))


@train_app.command("setup")
def train_setup(
    inventory: InventoryOpt,
    limit: Annotated[str | None, typer.Option("--limit", "-l", help="Only these hosts or groups.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Report what would change; change nothing.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More Ansible output in the log.")] = 0,
) -> None:
    """Install the DDP payload's Python environment on every training host (for --backend ssh)."""
    from pyctl.commands.train import run_setup

    raise typer.Exit(run_setup(inventory, limit, check, verbose))


JobArg = Annotated[str, typer.Argument(help="Job id, a unique prefix of it, or 'last'.", show_default=False)]


@train_app.command("status")
def train_status(
    job: Annotated[str | None, typer.Argument(help="Job id (default: list every job).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show a job (state, nodes, exit code, accuracy), or list every job."""
    from pyctl.commands.train import run_status

    raise typer.Exit(run_status(job, as_json))


@train_app.command("logs")
def train_logs(
    job: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print a job's merged log, each line prefixed with its host or node."""
    from pyctl.commands.train import run_logs

    raise typer.Exit(run_logs(job, follow))


@train_app.command("report")
def train_report(
    job: JobArg,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also draw the figures into FILE.png or FILE.html.")
    ] = None,
) -> None:
    """Loss and accuracy per epoch and throughput per rank, from the job's metrics: a table (and a figure)."""
    from pyctl.commands.train import run_report

    raise typer.Exit(run_report(job, out))


@train_app.command("cancel")
def train_cancel(job: JobArg) -> None:
    """Stop a job everywhere: every process group on every host, or the Kubernetes Job and its pods."""
    from pyctl.commands.train import run_cancel

    raise typer.Exit(run_cancel(job))


@train_app.command("fetch")
def train_fetch(
    job: JobArg,
    dest: Annotated[Path, typer.Argument(help="Folder to copy into (made when missing).", show_default=False)],
) -> None:
    """Copy a job's checkpoint (verified against its sha256) and metrics from node 0 or the share."""
    from pyctl.commands.train_fetch import run_fetch

    raise typer.Exit(run_fetch(job, dest))


def _handle(exc: BaseException, show_traceback: bool) -> int:
    """Map an exception to one clear stderr line and an exit code."""
    from pyctl.errors import ExitCode, PyctlError

    if show_traceback and not isinstance(exc, typer.Exit):
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, PyctlError):
        from pyctl import console

        console.err().print(f"pyctl: error: {exc.message}", markup=False)
        if exc.hint:
            console.err().print(f"pyctl: hint: {exc.hint}", markup=False)
        return int(exc.exit_code)
    if isinstance(exc, (KeyboardInterrupt, typer.Abort)):
        sys.stderr.write("pyctl: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    if isinstance(exc, typer.exceptions.TyperException) and hasattr(exc, "show"):
        exc.show()  # a usage error: click prints it with the usage line
        return int(ExitCode.USAGE)
    sys.stderr.write(f"pyctl: internal error: {type(exc).__name__}: {exc} (run again with --traceback)\n")
    return 70


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    try:
        result = app(args=args, prog_name="pyctl", standalone_mode=False)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        return _handle(exc, show_traceback)
    return int(result or 0)


def entry() -> None:
    """The `pyctl` console script: `main`, then a prompt exit.

    Tearing down an interpreter that loaded Ansible's runner, rich and typer takes about 0.05 s, paid
    after the work is done. When no other thread is left, the exit code is returned to the shell
    directly, after the standard streams (and logging, when it was loaded) are flushed.
    """
    try:
        code = main()
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        code = exc.code or 0
    _leave(code)


def _leave(code: int) -> None:
    import contextlib
    import os
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
