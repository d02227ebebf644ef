"""All-reduce bandwidth between every pair of nodes: the first half of `pyctl doctor --workload`.

Run with torchrun, one process per node (`--nproc-per-node 1`): NCCL when CUDA is available, gloo
otherwise. The nodes are paired in rounds of disjoint pairs (the circle method of a round-robin
tournament: N nodes take N-1 rounds when N is even, N when odd, and every pair meets once). In each
round every pair runs at once, in a process group of its own: `--warmup` all-reduces of a
`--size-mib` float32 tensor, then timed ones until `--iters` are done or `--pair-seconds` have passed
(the two ranks agree on when to stop, so a throttled link ends early instead of hanging the round).

The figure per pair is the bus bandwidth as nccl-tests defines it (doc/PERFORMANCE.md in
NVIDIA/nccl-tests): algbw = bytes / time, busbw = algbw * 2 (n - 1) / n for an all-reduce over n
ranks, so busbw = algbw for a pair; it is printed in Gbit/s. The time of an all-reduce is the slower
of the two ranks' mean.

Global rank 0 ends with one line `PYCTL_SUMMARY {"event": "allreduce", "nodes": [...], "pairs":
[{"a", "b", "gbps", "seconds", "iterations", "error"}], ...}`; an exception is reported as
`PYCTL_ERROR <one line>` and exit code 3. Node names: `--names` (comma-separated, in the launcher's
host order, indexed by PYCTL_NODE_RANK or JOB_COMPLETION_INDEX), else PYCTL_NODE_NAME, else the host
name.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import timedelta
from typing import Any

SUMMARY_PREFIX = "PYCTL_SUMMARY"
ERROR_PREFIX = "PYCTL_ERROR"


def round_robin(count: int) -> list[list[tuple[int, int]]]:
    """Rounds of disjoint pairs of 0..count-1 in which every pair meets exactly once (circle method)."""
    players: list[int | None] = list(range(count))
    if count % 2:
        players.append(None)  # a bye: whoever meets it sits the round out
    size = len(players)
    rounds = []
    for _ in range(size - 1):
        pairs = []
        for i in range(size // 2):
            a, b = players[i], players[size - 1 - i]
            if a is not None and b is not None:
                pairs.append((min(a, b), max(a, b)))
        if pairs:
            rounds.append(sorted(pairs))
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def bus_gbps(size_bytes: int, seconds: float, ranks: int = 2) -> float:
    """nccl-tests' busbw of an all-reduce (algbw * 2(n-1)/n), in Gbit/s."""
    algbw = size_bytes / seconds
    return algbw * 2 * (ranks - 1) / ranks * 8 / 1e9


def node_name(names: list[str]) -> str:
    index = os.environ.get("PYCTL_NODE_RANK") or os.environ.get("JOB_COMPLETION_INDEX")
    if names and index is not None and index.isdigit() and int(index) < len(names):
        return names[int(index)]
    return os.environ.get("PYCTL_NODE_NAME") or socket.gethostname()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--names", default="", help="Node names, comma-separated, in host order.")
    parser.add_argument("--size-mib", type=float, default=16.0, help="Tensor size per all-reduce (MiB).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed all-reduces per pair.")
    parser.add_argument("--iters", type=int, default=5, help="Timed all-reduces per pair (at most).")
    parser.add_argument("--pair-seconds", type=float, default=20.0, help="Stop timing a pair after this.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds any collective may take.")
    parser.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto")
    args = parser.parse_args(argv)
    if args.size_mib <= 0 or args.iters < 1 or args.warmup < 0 or args.pair_seconds <= 0:
        parser.error("--size-mib, --iters and --pair-seconds must be positive, --warmup 0 or more")
    return args


def log(rank: int, message: str) -> None:
    print(f"probe[{rank}] {socket.gethostname()}: {message}", flush=True)


def measure(torch: Any, dist: Any, group: Any, device: Any, args: argparse.Namespace) -> tuple[float, int]:
    """Mean seconds per all-reduce over this pair (the slower rank's), and the timed iterations."""
    numel = max(1, int(args.size_mib * 1024 * 1024) // 4)
    tensor = torch.zeros(numel, dtype=torch.float32, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        dist.all_reduce(tensor, group=group)
    sync()
    times: list[float] = []
    while True:
        dist.barrier(group=group)
        started = time.perf_counter()
        dist.all_reduce(tensor, group=group)
        sync()
        times.append(time.perf_counter() - started)
        done = len(times) >= args.iters or sum(times) >= args.pair_seconds
        flag = torch.tensor([1.0 if done else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        if flag.item() > 0:
            break
    mean = torch.tensor([sum(times) / len(times)], dtype=torch.float64, device=device)
    dist.all_reduce(mean, op=dist.ReduceOp.MAX, group=group)
    return float(mean.item()), len(times)


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist

    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=args.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    names: list[Any] = [None] * world
    dist.all_gather_object(names, node_name([n for n in args.names.split(",") if n]))
    log(rank, f"joined as {names[rank]} ({backend}, {world} nodes, {args.size_mib:g} MiB per all-reduce)")
    size_bytes = max(1, int(args.size_mib * 1024 * 1024) // 4) * 4
    mine: list[dict[str, Any]] = []
    for number, pairs in enumerate(round_robin(world), 1):
        groups = {pair: dist.new_group(list(pair)) for pair in pairs}  # every rank creates every group
        for (a, b), group in groups.items():
            if rank not in (a, b):
                continue
            entry: dict[str, Any] = {"a": names[a], "b": names[b], "round": number}
            try:
                seconds, iterations = measure(torch, dist, group, device, args)
            except Exception as exc:  # a broken link: name it and go on with the next round
                entry.update(gbps=None, seconds=None, iterations=0, error=f"{type(exc).__name__}: {exc}"[:300])
            else:
                gbps = round(bus_gbps(size_bytes, seconds), 4)
                entry.update(gbps=gbps, seconds=round(seconds, 6), iterations=iterations, error=None)
            log(rank, f"round {number}: {names[a]} <-> {names[b]}: {entry['gbps']} Gbit/s {entry['error'] or ''}")
            if rank == a:
                mine.append(entry)
        dist.barrier()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return None
    pairs_done = sorted((e for part in gathered for e in part), key=lambda e: (e["round"], e["a"]))
    return {
        "event": "allreduce",
        "backend": backend,
        "nodes": names,
        "size_mib": args.size_mib,
        "pairs": pairs_done,
        "rounds": len(round_robin(world)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        print(f"{ERROR_PREFIX} all-reduce probe: {type(exc).__name__}: {first}", flush=True)
        return 3
    if summary is not None:
        print(f"{SUMMARY_PREFIX} {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    status = main()
    # Leave without the runtime's teardown, as payloads/ddp/train.py does: gloo's threads may outlive
    # destroy_process_group and abort a finished process at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
