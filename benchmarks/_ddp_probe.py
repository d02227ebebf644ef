"""Where a DDP step's time goes, for benchmarks/ddp_scaling.py: run under torchrun (2 ranks, gloo, CPU).

Builds the payload's SmallCNN on Fashion-MNIST-shaped random batches and times, interleaved so that
outside load hits each alike:
- compute only: forward, backward, optimizer step under no_sync() (no all-reduce at all);
- DDP with torch's defaults (a 1 MiB first bucket, then 25 MiB);
- DDP as the payload builds it (payloads/ddp/train.py wrap_ddp);
each as the median wall time and the CPU time per step (the whole process, and the main thread alone:
the rest is gloo's and the reducer's threads). Then an all-reduce of a gradient-sized tensor alone,
for the bandwidth per link. Rank 0 prints one line `DDP_PROBE {json}`; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "payloads" / "ddp"))

import torch
import torch.distributed as dist
import torch.nn.functional as F
import train as payload  # the payload's train.py: SmallCNN and wrap_ddp, exactly as it trains
from torch.nn.parallel import DistributedDataParallel

WARMUP = 3


def timed_steps(model: DistributedDataParallel, batch: tuple[torch.Tensor, torch.Tensor], steps: int, sync: bool):
    """(median wall s, process CPU s, main-thread CPU s) per step, warm-up left out."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = batch
    walls = []
    cpu0 = thread0 = 0.0
    for step in range(WARMUP + steps):
        if step == WARMUP:
            cpu0, thread0 = time.process_time(), time.thread_time()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if sync:
            F.cross_entropy(model(images), labels).backward()
        else:
            with model.no_sync():
                F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        walls.append(time.perf_counter() - start)
    cpu, thread = (time.process_time() - cpu0) / steps, (time.thread_time() - thread0) / steps
    dist.barrier()
    return statistics.median(walls[WARMUP:]), cpu, thread


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    torch.manual_seed(0)
    batch = (torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,)))
    cpu = torch.device("cpu")
    models = {
        "compute only (no_sync)": DistributedDataParallel(payload.SmallCNN((1, 28, 28))),
        "DDP, torch defaults": DistributedDataParallel(payload.SmallCNN((1, 28, 28))),
        "DDP, the payload's": payload.wrap_ddp(payload.SmallCNN((1, 28, 28)), cpu),
    }
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            runs[name].append(timed_steps(model, batch, args.steps, sync=not name.startswith("compute")))

    gradient_bytes = sum(p.numel() * p.element_size() for p in models["DDP, the payload's"].parameters())
    flat = torch.randn(gradient_bytes // 4)
    reduce_times = []
    for _ in range(30):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        reduce_times.append(time.perf_counter() - start)
    reduce_s = statistics.median(reduce_times)
    gloo_threads = dist.ProcessGroupGloo._Options()._threads

    if dist.get_rank() == 0:
        figures = {}
        for name, results in runs.items():
            wall = min(r[0] for r in results)  # best of the repeats: the least disturbed
            figures[name] = {
                "step_ms": round(wall * 1e3, 2),
                "cpu_ms": round(min(r[1] for r in results) * 1e3, 2),
                "main_thread_cpu_ms": round(min(r[2] for r in results) * 1e3, 2),
                "step_ms_all": [round(r[0] * 1e3, 1) for r in results],
            }
        buckets = {}  # after the first steps DDP rebuilds its buckets in the order gradients became ready
        for name, model in models.items():
            if not name.startswith("compute"):
                data = model._get_ddp_logging_data()
                sizes = data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes") or ""
                buckets[name] = [int(b) for b in str(sizes).split(",") if b]
        probe = {
            "world_size": world,
            "cpus": os.cpu_count(),
            "gloo_threads_per_rank": gloo_threads,
            "gradient_bytes": gradient_bytes,
            "bucket_bytes": buckets,
            "allreduce_ms": round(reduce_s * 1e3, 3),
            # ring all-reduce: each link carries 2 (n-1)/n of the data (NCCL's "bus bandwidth")
            "allreduce_gbps_per_link": round(2 * (world - 1) / world * gradient_bytes / reduce_s / 1e9, 3),
            "steps": figures,
        }
        print(f"DDP_PROBE {json.dumps(probe)}", flush=True)
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # see payloads/ddp/train.py: gloo's threads may abort a clean interpreter exit


if __name__ == "__main__":
    sys.exit(main())
