"""`pyctl status`: a summary of the running cluster (nodes, GPUs, add-on pods, storage), from the API only."""

from __future__ import annotations

import json
from pathlib import Path

from pyctl import console, inventory
from pyctl.config import load_settings
from pyctl.errors import ExitCode
from pyctl.k8s import kube, names, summary


def run(inventory_path: Path, as_json: bool = False) -> int:
    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    kubeconfig = kube.kubeconfig_for(settings, cluster.name, inventory_path)
    api = kube.client(kubeconfig)
    claim = None
    if cluster.group(inventory.NFS_SERVER):
        cp_vars = cluster.control_plane.vars
        claim = (
            str(cp_vars.get("shared_storage_namespace", names.SHARED_CLAIM_NAMESPACE)),
            str(cp_vars.get("shared_storage_pvc_name", names.SHARED_CLAIM_NAME)),
        )
    overview = summary.summarize(kube.snapshot(api), claim)
    if as_json:
        console.out().print_json(json.dumps({"cluster": cluster.name, "server": kube.server(api), **overview}))
        return ExitCode.OK

    from rich.table import Table

    out = console.out()
    out.print(f"cluster {cluster.name} at {kube.server(api)}: {summary.one_line(overview)}", markup=False)
    nodes = Table("node", "status", "roles", "version", "GPUs", title="nodes", title_justify="left")
    for node in overview["nodes"]:
        nodes.add_row(node["name"], node["status"], ",".join(node["roles"]), node["version"], str(node["gpus"]))
    out.print(nodes)
    addons = Table("add-on", "DaemonSet", "pods ready", title="add-ons", title_justify="left")
    for addon in overview["addons"]:
        ready = f"{addon['ready']}/{addon['desired']}" if addon["present"] else "not installed"
        addons.add_row(addon["name"], addon["daemonset"], ready)
    out.print(addons)
    if overview["storage"]:
        storage = Table("claim", "phase", "volume", "capacity", title="shared storage", title_justify="left")
        s = overview["storage"]
        storage.add_row(s["claim"], s["phase"], s["volume"], s["capacity"])
        out.print(storage)
    else:
        out.print("shared storage: none (the inventory has no nfs_server host)", markup=False)
    return ExitCode.OK
