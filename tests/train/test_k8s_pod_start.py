"""The rendered Indexed Job's start script, run with /bin/sh as the container runtime would: with c10d
rendezvous (restarts on more than one node) node 0 hosts the store by completion index
(`PET_RDZV_CONF=is_host=1`, 0 elsewhere), never by torchrun resolving pod 0's own headless name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from pyctl.inventory import load
from pyctl.train.workloads import ddp, ddp_manifests

REPO = Path(__file__).resolve().parents[2]
INVENTORY = """\
all:
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 192.168.10.11}
    workers:
      hosts:
        w1: {ansible_host: 192.168.10.21}
"""


def _container(tmp_path: Path, **overrides) -> dict:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    request = ddp.DdpRequest(inventory=inventory, backend="k8s", nodes=2, **overrides)
    job = ddp.resolve(request, load(inventory), REPO)
    document = yaml.safe_load(ddp_manifests.render_ddp(job, "ddp-start")["job"])
    return document["spec"]["template"]["spec"]["containers"][0]


def _start(container: dict, env: dict[str, str]) -> dict[str, str]:
    """Run the container's command with `env` as the pod's environment; torchrun replaced by `env -0`."""
    command = [*container["command"], "env", "-0"]
    base = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}  # the image's python
    result = subprocess.run(command, env=base, capture_output=True, timeout=60, check=True)
    pairs = (item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


def _pod_env(container: dict, rank: int, port: int) -> dict[str, str]:
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({"PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)})
    return {k: v for k, v in env.items() if "$(" not in v}


def test_with_restarts_index_0_hosts_the_c10d_store_and_the_others_do_not(tmp_path):
    container = _container(tmp_path, max_restarts=2)
    assert {"name": "PET_RDZV_BACKEND", "value": "c10d"} in container["env"]
    with socket.create_server(("127.0.0.1", 0)) as master:  # node 0's port, for the peer's wait
        port = master.getsockname()[1]
        node0 = _start(container, _pod_env(container, 0, port))
        node1 = _start(container, _pod_env(container, 1, port))
    assert node0["PET_RDZV_CONF"] == "is_host=1"
    assert node1["PET_RDZV_CONF"] == "is_host=0"


def test_static_rendezvous_gets_no_is_host(tmp_path):
    container = _container(tmp_path)
    assert {"name": "PET_RDZV_BACKEND", "value": "static"} in container["env"]
    with socket.create_server(("127.0.0.1", 0)) as master:
        port = master.getsockname()[1]
        node0 = _start(container, _pod_env(container, 0, port))
    assert "PET_RDZV_CONF" not in node0
