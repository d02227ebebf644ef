"""Where a DDP step's time goes, for benchmarks/ddp_scaling.py: run under torchrun (2 ranks, gloo, CPU).

Builds the payload's SmallCNN on Fashion-MNIST-shaped random batches and times, interleaved so that
outside load hits each alike, --repeats times each:
- compute only: forward, backward, optimizer step under no_sync() (no all-reduce at all): what two
  independent processes do, started together;
- DDP with torch's defaults (a 1 MiB first bucket, then 25 MiB);
- DDP as the payload builds it (payloads/ddp/train.py wrap_ddp);
- the payload's DDP on a gloo group with 1 thread instead of gloo's default 2;
- the payload's DDP with the fp16 compression comm hook (measured only; the payload does not use it).
For each: the wall time per step (median of the steps; then median and range over the repeats), its
phases (forward, backward with the all-reduce, optimizer), the CPU time per step of each thread of the
process (the main thread, gloo's run-loop threads, gloo's TCP loop), the involuntary context switches
per step (this rank preempted: outside load or our own threads), the main thread's step split into
on a CPU, runnable but waiting for a CPU, and asleep (waiting for the other rank, gloo or the network),
and the first step ever (DDP's first
iteration: static-graph recording, bucket rebuild). Then the payload's own loaders (loaders.py) on
data of the same shape: the Python data-loading time per step; the thread settings; an all-reduce of
a gradient-sized tensor alone, for the bandwidth per link. Rank 0 prints one line `DDP_PROBE {json}`;
everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "payloads" / "ddp"))

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import train as payload  # the payload's train.py: SmallCNN and wrap_ddp, exactly as it trains
from loaders import make_loaders, make_splits
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

WARMUP = 3
COMPUTE = "compute only (no_sync)"
PAYLOAD = "DDP, the payload's"
PINNED = "DDP, the payload's, rank r on CPU r"


def thread_times() -> dict[str, list[float]]:
    """Per thread group (main, gloo run loop, gloo TCP loop, other): [CPU s, involuntary switches, runqueue s]."""
    groups: dict[str, list[float]] = {}
    main = str(os.getpid())
    for task in Path("/proc/self/task").iterdir():
        tid = task.name
        try:
            comm = (task / "comm").read_text().strip()
            on_cpu_ns, runqueue_ns = (int(v) for v in (task / "schedstat").read_text().split()[:2])
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        switches = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        name = "main" if tid == main else comm if comm.startswith(("pt_gloo", "gloo")) else "other"
        group = groups.setdefault(name, [0.0, 0, 0.0])
        group[0] += on_cpu_ns / 1e9  # schedstat: ns on a CPU (stat's utime/stime count 10 ms ticks)
        group[1] += switches
        group[2] += runqueue_ns / 1e9  # runnable but waiting for a CPU
    return groups


def timed_steps(model: DistributedDataParallel, optimizer, batch, steps: int, sync: bool) -> dict:
    """One timed stretch: per-step medians of wall and phases, per-step CPU of each thread group."""
    images, labels = batch
    walls, phases = [], []
    before = {}
    cpu0 = 0.0
    for step in range(WARMUP + steps):
        if step == WARMUP:
            dist.barrier()
            before, cpu0 = thread_times(), time.process_time()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with model.no_sync() if not sync else _nothing():
            out = model(images)
            forward = time.perf_counter()
            F.cross_entropy(out, labels).backward()
        backward = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        walls.append(end - start)
        phases.append((forward - start, backward - forward, end - backward))
    cpu = (time.process_time() - cpu0) / steps
    after = thread_times()
    dist.barrier()
    threads = {
        name: round((after[name][0] - before.get(name, [0.0, 0])[0]) / steps * 1e3, 3)
        for name in after
        if after[name][0] - before.get(name, [0.0, 0])[0] > 0
    }
    switches = sum(after[n][1] - before.get(n, [0.0, 0])[1] for n in after) / steps
    runqueue = (after["main"][2] - before["main"][2]) / steps
    timed = phases[WARMUP:]
    return {
        "step_ms": statistics.median(walls[WARMUP:]) * 1e3,
        "mean_step_ms": statistics.fmean(walls[WARMUP:]) * 1e3,  # what the per-step CPU figures divide
        "first_step_ms": walls[0] * 1e3,
        "cpu_ms": cpu * 1e3,
        "thread_cpu_ms": threads,
        "preemptions_per_step": switches,
        "main_runqueue_ms": runqueue * 1e3,
        "phases_ms": [statistics.median(p[i] for p in timed) * 1e3 for i in range(3)],
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def pin_threads(cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of this process (gloo's too, not only the caller's)."""
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:  # the thread ended meanwhile
            continue


def one_thread_gloo_group(world: int) -> dist.ProcessGroup | None:
    """A second gloo group whose Options ask for 1 thread (init_process_group always takes 2)."""
    try:
        options = dist.ProcessGroupGloo._Options()
        options._threads = 1
        options._devices = [dist.ProcessGroupGloo.create_default_device()]
        store = dist.PrefixStore("probe-gloo-1-thread/", dist.distributed_c10d._get_default_store())
        backend = dist.ProcessGroupGloo(store, dist.get_rank(), world, options)
        group = dist.ProcessGroup(store, dist.get_rank(), world)  # as distributed_c10d builds one
        group._set_default_backend(dist.ProcessGroup.BackendType.GLOO)
        group._register_backend(torch.device("cpu"), dist.ProcessGroup.BackendType.GLOO, backend)
    except (AttributeError, RuntimeError, TypeError) as exc:
        print(f"probe: no 1-thread gloo group ({exc})", file=sys.stderr)
        return None
    return group


def loader_ms_per_step(batch_size: int, steps: int, rank: int, world: int) -> float:
    """The payload's own train loader (loaders.py) on Fashion-MNIST-shaped data: ms per batch."""
    rng = np.random.default_rng(0)
    n = world * steps * batch_size
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    splits = make_splits(images, labels, images[:64], labels[:64], scale=255.0, source="random")
    loaders = make_loaders(splits, batch_size, rank, world, seed=0, pin=False)
    loaders.sampler.set_epoch(1)
    start = time.perf_counter()
    count = sum(1 for _ in itertools.islice(loaders.train, steps))
    return (time.perf_counter() - start) / count * 1e3


def summarise(results: list[dict]) -> dict:
    """Median and range over the repeats of each figure of timed_steps."""
    steps = [r["step_ms"] for r in results]
    names = sorted({n for r in results for n in r["thread_cpu_ms"]})
    return {
        "step_ms": round(statistics.median(steps), 2),
        "step_ms_range": [round(min(steps), 2), round(max(steps), 2)],
        "step_ms_all": [round(s, 1) for s in steps],
        "first_step_ms": round(results[0]["first_step_ms"], 1),
        "cpu_ms": round(statistics.median(r["cpu_ms"] for r in results), 2),
        "cpu_ms_range": [round(min(r["cpu_ms"] for r in results), 2), round(max(r["cpu_ms"] for r in results), 2)],
        "main_thread_cpu_ms": round(statistics.median(r["thread_cpu_ms"].get("main", 0.0) for r in results), 2),
        "thread_cpu_ms": {
            n: round(statistics.median(r["thread_cpu_ms"].get(n, 0.0) for r in results), 3) for n in names
        },
        "preemptions_per_step": round(statistics.median(r["preemptions_per_step"] for r in results), 2),
        "main_runqueue_ms": round(statistics.median(r["main_runqueue_ms"] for r in results), 2),
        # the main thread's step = on a CPU + waiting for one + asleep (the other rank, gloo, the network)
        "main_asleep_ms": round(
            statistics.median(
                r["mean_step_ms"] - r["thread_cpu_ms"].get("main", 0.0) - r["main_runqueue_ms"] for r in results
            ),
            2,
        ),
        "phases_ms": [round(statistics.median(r["phases_ms"][i] for r in results), 2) for i in range(3)],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    omp_env = os.environ.get("OMP_NUM_THREADS")  # torchrun sets 1 when it starts several workers per node
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(0)
    batch = (torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,)))
    cpu = torch.device("cpu")
    models = {
        COMPUTE: DistributedDataParallel(payload.SmallCNN((1, 28, 28))),
        "DDP, torch defaults": DistributedDataParallel(payload.SmallCNN((1, 28, 28))),
        PAYLOAD: payload.wrap_ddp(payload.SmallCNN((1, 28, 28)), cpu),
    }
    group = one_thread_gloo_group(world)
    if group is not None:
        one = payload.SmallCNN((1, 28, 28))
        gradient = sum(p.numel() * p.element_size() for p in one.parameters())
        models["DDP, the payload's, 1 gloo thread"] = DistributedDataParallel(
            one,
            process_group=group,
            bucket_cap_mb=max(1, -(-gradient // 2**20)),
            gradient_as_bucket_view=True,
            static_graph=True,
        )
    hooked = payload.wrap_ddp(payload.SmallCNN((1, 28, 28)), cpu)
    hooked.register_comm_hook(None, default_hooks.fp16_compress_hook)
    models["DDP, the payload's + fp16 hook"] = hooked
    models[PINNED] = payload.wrap_ddp(payload.SmallCNN((1, 28, 28)), cpu)
    allowed = sorted(os.sched_getaffinity(0))
    own_cpu = {allowed[rank % len(allowed)]}
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, m in models.items()}
    runs: dict[str, list[dict]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            if name == PINNED:
                pin_threads(own_cpu)
            runs[name].append(timed_steps(model, optimizers[name], batch, args.steps, sync=name != COMPUTE))
            if name == PINNED:
                pin_threads(set(allowed))

    loader_ms = loader_ms_per_step(args.batch_size, args.steps, rank, world)
    gradient_bytes = sum(p.numel() * p.element_size() for p in models[PAYLOAD].parameters())
    flat = torch.randn(gradient_bytes // 4)
    reduce_times = []
    for _ in range(30):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        reduce_times.append(time.perf_counter() - start)
    reduce_s = statistics.median(reduce_times)
    figures = {name: summarise(results) for name, results in runs.items()}
    per_rank = [None] * world
    dist.all_gather_object(per_rank, {"loader_ms": loader_ms, "payload": figures[PAYLOAD]})

    if rank == 0:
        buckets = {}  # after the first steps DDP rebuilds its buckets in the order gradients became ready
        for name, model in models.items():
            if name != COMPUTE:
                data = model._get_ddp_logging_data()
                sizes = data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes") or ""
                buckets[name] = [int(b) for b in str(sizes).split(",") if b]
        probe = {
            "world_size": world,
            "cpus": os.cpu_count(),
            "gloo_threads_per_rank": dist.ProcessGroupGloo._Options()._threads,
            "torch_threads_per_rank": torch.get_num_threads(),
            "torch_threads_default": threads_before,
            "interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads_env": omp_env,
            "process_threads": sum(1 for _ in Path("/proc/self/task").iterdir()),
            "gradient_bytes": gradient_bytes,
            "bucket_bytes": buckets,
            "loader_ms_per_step": round(statistics.median(r["loader_ms"] for r in per_rank), 3),
            "allreduce_ms": round(reduce_s * 1e3, 3),
            # ring all-reduce: each link carries 2 (n-1)/n of the data (NCCL's "bus bandwidth")
            "allreduce_gbps_per_link": round(2 * (world - 1) / world * gradient_bytes / reduce_s / 1e9, 3),
            "repeats": args.repeats,
            "steps": figures,
            "payload_per_rank": [r["payload"] for r in per_rank],
        }
        print(f"DDP_PROBE {json.dumps(probe)}", flush=True)
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # see payloads/ddp/train.py: gloo's threads may abort a clean interpreter exit


if __name__ == "__main__":
    sys.exit(main())
