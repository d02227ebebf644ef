"""`pyctl doctor --workload`: the request, its validation, and the steps in order; returns the report.

1. (ssh) log in to every node and check its interpreter, torch and network interface; a node that
   fails is `failed` with the reason and takes no further part.
2. The all-reduce probe (`payloads/allreduce/probe.py`) under torchrun on the remaining nodes, one
   process each: every pair of nodes, in rounds of disjoint pairs.
3. A short run of the DDP payload (digits, `epochs` epochs) on the nodes that did not fail: its final
   training loss must be at most `loss_threshold`.
4. `verdict.judge` turns it into one verdict per node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyctl import inventory
from pyctl.config import load_settings
from pyctl.errors import UsageError

BACKENDS = ("ssh", "k8s")
# The DDP step: digits, lr 0.05, a global batch of about 64 (per-node batch 64 / nodes, at least 8), so
# the run takes about the same ~65 optimizer steps whatever the node count; it reaches a training loss
# of about 0.2 after 3 epochs on 2 or 3 processes (0.53 after 2). A broken step (wrong gradients, NaN,
# a stuck rank) stays near ln(10) = 2.3, the loss of a uniform guess over 10 classes.
DDP_EPOCHS = 3
DDP_LR = 0.05
DDP_GLOBAL_BATCH = 64
LOSS_THRESHOLD = 0.6
SIZE_MIB = 16.0


def probe_path(project_dir: Path) -> Path:
    return project_dir / "payloads" / "allreduce" / "probe.py"


@dataclass(frozen=True)
class WorkloadRequest:
    inventory: Path
    backend: str = "k8s"
    hosts: tuple[str, ...] = ()
    ssh_user: str | None = None
    ssh_key: Path | None = None
    python: str | None = None
    size_mib: float = SIZE_MIB
    min_gbps: float | None = None
    loss_threshold: float = LOSS_THRESHOLD
    epochs: int = DDP_EPOCHS
    probe_timeout_s: float = 300.0
    ddp_timeout_s: float = 600.0
    image: str | None = None  # k8s
    namespace: str = "default"  # k8s
    render: Path | None = None  # k8s: write the manifests, run nothing

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not self.size_mib > 0:
            raise UsageError(f"--allreduce-mib {self.size_mib:g}: must be a positive number")
        if self.min_gbps is not None and not self.min_gbps > 0:
            raise UsageError(f"--min-gbps {self.min_gbps:g}: must be a positive number")
        if not self.loss_threshold > 0:
            raise UsageError(f"--loss-threshold {self.loss_threshold:g}: must be a positive number")
        if self.backend == "ssh" and (self.image or self.render):
            raise UsageError("--image and --render are for --backend k8s")
        if self.backend == "k8s" and (self.ssh_user or self.ssh_key or self.python):
            raise UsageError("--ssh-user, --ssh-key and --python are for --backend ssh")

    def ddp_shape(self, nodes: int) -> tuple[int, int]:
        """(epochs, batch size per node) of the DDP step on `nodes` nodes."""
        batch = max(8, DDP_GLOBAL_BATCH // max(1, nodes))
        epochs = max(self.epochs, -(-self.epochs * nodes * batch // DDP_GLOBAL_BATCH))
        return epochs, batch

    def probe_args(self, names: list[str] | None) -> tuple[str, ...]:
        args = ["--size-mib", f"{self.size_mib:g}", "--timeout", f"{self.probe_timeout_s:g}"]
        return (*args, "--names", ",".join(names)) if names else tuple(args)


def run(request: WorkloadRequest, say: Callable[[str], None]) -> dict[str, Any]:
    """The report of `verdict.judge` (plus `jobs`: the ids of the runs, when they ran over SSH)."""
    request.check()
    settings = load_settings()
    cluster = inventory.load(request.inventory, cache_dir=settings.state_dir / "cache" / "inventory")
    if request.backend == "ssh":
        from pyctl.workload import ssh

        return ssh.run(request, settings, cluster, say)
    from pyctl.workload import k8s

    return k8s.run(request, settings, cluster, say)
