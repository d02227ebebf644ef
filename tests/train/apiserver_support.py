"""Shared pieces of the tests that run pyctl against the Kubernetes API double over HTTPS
(tests/doubles/fake_apiserver.py): an inventory, the double with pyctl's fetched kubeconfig in place,
and the images the double "pulls" (host folders standing in for the payload images)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyctl.inventory import load
from tests.doubles.fake_apiserver import ApiServerDouble, Image, NodeSpec
from tests.train.conftest import DDP_PYTHON, REPO

# Hosts on loopback addresses: the Kubernetes backend never connects to them (only to the API).
INVENTORY = """\
all:
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 127.0.0.2}
    workers:
      hosts:
        w1: {ansible_host: 127.0.0.3, gpu: true}
        w2: {ansible_host: 127.0.0.4, gpu: true}
"""


def ddp_image() -> Image:
    """pyctl-ddp:cpu (payloads/ddp/Dockerfile): the payload at /opt/pyctl/ddp, torch on PATH."""
    return Image({"/opt/pyctl/ddp": REPO / "payloads" / "ddp"}, f"{DDP_PYTHON.parent}:/usr/local/bin:/usr/bin:/bin")


def distdgl_image(python: Path) -> Image:
    """pyctl-distdgl:cpu (payloads/distdgl/Dockerfile): the payload at /app, DGL on PATH."""
    return Image({"/app": REPO / "payloads" / "distdgl"}, f"{python.parent}:/usr/local/bin:/usr/bin:/bin")


def install_kubeconfig(api: ApiServerDouble, state_dir: Path, inventory: Path) -> Path:
    """Where `pyctl bootstrap` puts the fetched admin.conf for the inventory's cluster."""
    return api.write_kubeconfig(state_dir / "clusters" / load(inventory).name / "admin.conf")


@contextmanager
def api_double(folder: Path, state_dir: Path, inventory: Path, **options) -> Iterator[ApiServerDouble]:
    options.setdefault("nodes", [NodeSpec("cp1", control_plane=True), NodeSpec("w1", gpus=1), NodeSpec("w2", gpus=1)])
    with ApiServerDouble(folder, **options) as api:
        install_kubeconfig(api, state_dir, inventory)
        yield api
