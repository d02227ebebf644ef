"""The lockstep ceiling of this machine, for benchmarks/ddp_scaling.py: no torch, no data, no gradient.

Two processes (unpinned, as torchrun's workers are) each run the same fixed chunks of pure-Python CPU work, one chunk
per training step, its length that of one measured DDP step. Run twice, interleaved:
- free: the two never wait for each other (what two independent 1-rank jobs do);
- lockstep: after each chunk they exchange one byte over a loopback TCP connection and wait for the other's, as
  DDP's all-reduce makes every rank wait for the slowest each step (with nothing to transfer).
lockstep rate / free rate is the most any synchronous data-parallel job reaches against the two-independent-jobs
ceiling on this machine at that step length: what is lost there is lost to the lockstep itself (one process idles
until the other arrives; on a VM an idle vCPU also gives up its physical core), not to DDP, gloo or the model.
Stdlib only, so it runs in the benchmark's own Python.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

CALIBRATION_UNITS = 100_000


def work(units: int) -> int:
    total = 0
    for i in range(units):
        total += i * i
    return total


def units_per_second() -> float:
    """Work units per second of one CPU, the best of 5 short samples (outside load only slows a sample)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        work(CALIBRATION_UNITS)
        best = min(best, time.perf_counter() - start)
    return CALIBRATION_UNITS / best


@dataclass
class PairRun:
    steps_per_s: float  # both processes' steps per second, summed
    wall_s: float  # the slower process's
    cpu_s: list[float]  # each process's, from wait4's rusage


def _connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    for sock in (client, accepted):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, accepted


def run_pair(units: int, steps: int, lockstep: bool) -> PairRun:
    """Fork two processes that each run `steps` chunks of `units`; each reports its own wall time."""
    ends = _connected_pair()
    read_fd, write_fd = os.pipe()
    pids = []
    for rank, end in enumerate(ends):
        pid = os.fork()
        if pid == 0:  # the child: run, report "rank wall", exit without Python's clean-up
            try:
                os.close(read_fd)
                start = time.perf_counter()
                for _ in range(steps):
                    work(units)
                    if lockstep:
                        end.sendall(b"x")
                        if end.recv(1) != b"x":
                            os._exit(3)
                os.write(write_fd, f"{rank} {time.perf_counter() - start}\n".encode())
                os._exit(0)
            except BaseException:
                os._exit(2)
        pids.append(pid)
    os.close(write_fd)
    cpu_s = []
    for pid in pids:
        _, status, usage = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"lockstep probe: a process exited with {os.waitstatus_to_exitcode(status)}")
        cpu_s.append(usage.ru_utime + usage.ru_stime)
    with os.fdopen(read_fd) as report:
        walls = {int(rank): float(wall) for rank, wall in (line.split() for line in report.read().splitlines())}
    for end in ends:
        end.close()
    # Free: each process's own rate (as the independent jobs' samples/s add up); lockstep: both at the slower's.
    rate = sum(steps / wall for wall in walls.values()) if not lockstep else 2 * steps / max(walls.values())
    return PairRun(steps_per_s=rate, wall_s=max(walls.values()), cpu_s=cpu_s)
