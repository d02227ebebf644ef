#!/usr/bin/env python3
"""DDP scaling of payloads/ddp/train.py on this machine: prints figures, asserts nothing.

1. Throughput: samples/s with 1 rank (t1) and with 2 ranks (t2), both under torchrun --standalone,
   gloo, one thread per rank, the same per-rank batch and the same steps per epoch; scaling
   efficiency = t2 / (2 * t1) (target >= 0.85). The data is Fashion-MNIST-shaped random data (28x28
   uint8 images, random labels) written as IDX files to a temp folder: it goes through the real IDX
   loader and costs what Fashion-MNIST costs per step. samples/s is the payload's own timing of its
   training loop (start-up and evaluation excluded); the first epoch is warm-up and left out.
   As a yardstick, two independent 1-rank jobs run at once (no communication at all): what this
   machine gives two busy processes. t2 against that ceiling is the DDP overhead proper.
2. Where a 2-rank step goes (benchmarks/_ddp_probe.py under torchrun): the step with no all-reduce
   at all (no_sync), with DDP's defaults and as the payload builds DDP; wall and CPU time per step
   (the CPU beyond the main thread is gloo's and the reducer's threads); the share of a step spent in
   communication (1 - compute-only / DDP step); the gradient against the buckets; an all-reduce of
   the gradient's size alone and the bandwidth per link it gives; gloo's threads against the cores.
3. Time to 0.90 test accuracy on scikit-learn's digits with 2 ranks (the tests' configuration).

The CPUs may be shared with other work this process cannot see. Each run reports the outside load
(CPU busy time in /proc/stat less the CPU time of our own processes, in cores), and before each run
the benchmark waits up to --quiet-wait seconds for the machine to go quiet. Figures taken under
outside load are not a property of the payload.

Run it with any Python 3.11; the payload runs in PYCTL_DDP_PYTHON (default .venv-ddp/bin/python):
    python3 benchmarks/ddp_scaling.py [--steps 40] [--batch-size 64] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "payloads" / "ddp" / "train.py"
PROBE = Path(__file__).resolve().parent / "_ddp_probe.py"
TARGET_EFFICIENCY = 0.85
TARGET_ACCURACY = 0.90
QUIET_CORES = 0.25
DIGITS_FLAGS = ["--dataset", "digits", "--epochs", "10", "--batch-size", "32", "--lr", "0.05", "--seed", "0"]


def payload_python() -> Path:
    python = Path(os.environ.get("PYCTL_DDP_PYTHON", REPO / ".venv-ddp" / "bin" / "python"))
    if not python.exists():
        sys.exit(
            f"ddp_scaling: {python} is absent: python3 -m venv .venv-ddp && "
            ".venv-ddp/bin/pip install -r payloads/ddp/requirements.txt (or set PYCTL_DDP_PYTHON)"
        )
    return python


def write_random_fmnist(folder: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Fashion-MNIST-shaped IDX files (28x28 uint8 images, labels 0..9) filled with random values."""
    rng = random.Random(seed)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = struct.pack(">IIII", 0x0803, count, 28, 28) + rng.randbytes(count * 28 * 28)
        labels = struct.pack(">II", 0x0801, count) + bytes(rng.randrange(10) for _ in range(count))
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)


# --- Machine load -----------------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    busy = sum(fields) - fields[3] - fields[4]  # less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU-seconds used by this process and its finished children (torchrun waits for its workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadMeter:
    """Outside load over a stretch of time, in cores: machine busy time less our own CPU time."""

    def __enter__(self) -> LoadMeter:
        self.wall, self.busy, self.own = time.perf_counter(), machine_busy_s(), own_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        outside = (machine_busy_s() - self.busy) - (own_cpu_s() - self.own)
        self.outside_cores = max(outside, 0.0) / wall if wall > 0 else 0.0
        self.seconds = wall


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to max_wait s) for 2 s in a row with less than QUIET_CORES of outside load."""
    deadline = time.monotonic() + max_wait
    while True:
        with LoadMeter() as meter:
            time.sleep(2)
        if meter.outside_cores < QUIET_CORES or time.monotonic() >= deadline:
            return meter.outside_cores


# --- Runs -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    samples_per_s: float
    samples_per_epoch: int
    wall_s: float
    outside_cores: float
    quiet_before: float


def torchrun_argv(python: Path, nproc: int, flags: list[str], log_path: Path) -> list[str]:
    launcher = [str(python), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    fixed = ["--num-threads", "1", "--backend", "gloo", "--log-path", str(log_path)]
    return [*launcher, str(TRAIN), *flags, *fixed]


def payload_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "PYCTL_DDP_FAIL_AT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def read_log(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def steady_samples_per_s(records: list[dict]) -> tuple[float, int]:
    """Samples/s over every epoch after the first (warm-up), and the samples per epoch."""
    epochs = [r for r in records if r["event"] == "epoch"]
    steady = epochs[1:] or epochs
    samples = sum(r["samples"] for r in steady)
    seconds = sum(r["train_seconds"] for r in steady)
    return samples / seconds, epochs[-1]["samples"]


def run_jobs(python: Path, jobs: list[tuple[int, list[str], Path]], max_wait: float) -> tuple[list[dict], Run]:
    """Start the jobs (nproc, flags, log) at once, wait for all; return the first log and the figures."""
    quiet_before = wait_for_quiet(max_wait)
    with LoadMeter() as meter:
        procs = [
            subprocess.Popen(
                torchrun_argv(python, nproc, flags, log),
                env=payload_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for nproc, flags, log in jobs
        ]
        errors = [proc.communicate()[1] for proc in procs]
    for proc, stderr in zip(procs, errors, strict=True):
        if proc.returncode != 0:
            sys.exit(f"ddp_scaling: a run failed (rc={proc.returncode}):\n{stderr[-3000:]}")
    logs = [read_log(log) for _, _, log in jobs]
    rates = [steady_samples_per_s(records) for records in logs]
    run = Run(
        samples_per_s=sum(rate for rate, _ in rates),
        samples_per_epoch=sum(count for _, count in rates),
        wall_s=meter.seconds,
        outside_cores=meter.outside_cores,
        quiet_before=quiet_before,
    )
    return logs[0], run


def probe_split(python: Path, batch_size: int, max_wait: float) -> dict:
    """Run _ddp_probe.py on 2 ranks; print where a step goes; return its figures."""
    quiet_before = wait_for_quiet(max_wait)
    argv = [str(python), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(PROBE)]
    with LoadMeter() as meter:
        done = subprocess.run(
            [*argv, "--batch-size", str(batch_size)], env=payload_env(), capture_output=True, text=True, check=False
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("DDP_PROBE ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"ddp_scaling: the probe failed (rc={done.returncode}):\n{done.stderr[-3000:]}")
    probe = json.loads(line.split(" ", 1)[1])
    steps = probe["steps"]
    compute = steps["compute only (no_sync)"]
    print(
        f"where a 2-rank step goes (batch {batch_size} per rank, best of 3; outside load "
        f"{meter.outside_cores:.2f} cores, {quiet_before:.2f} just before):"
    )
    for name, fig in steps.items():
        comm_wall = 1 - compute["step_ms"] / fig["step_ms"]
        comm_cpu = 1 - compute["cpu_ms"] / fig["cpu_ms"]
        buckets = probe["bucket_bytes"].get(name)
        print(
            f"  {name:>24}: step {fig['step_ms']:6.2f} ms wall, {fig['cpu_ms']:6.2f} ms CPU "
            f"({fig['cpu_ms'] - fig['main_thread_cpu_ms']:.2f} ms off the main thread)"
            + ("" if buckets is None else f"; communication {comm_wall:.1%} of the step, {comm_cpu:.1%} of its CPU")
            + ("" if buckets is None else f"; buckets {[round(b / 2**20, 2) for b in buckets]} MiB")
        )
    print(
        f"  gradient {probe['gradient_bytes'] / 2**20:.2f} MiB; all-reduce of it alone {probe['allreduce_ms']:.2f} ms "
        f"= {probe['allreduce_gbps_per_link']:.2f} GB/s per link; gloo {probe['gloo_threads_per_rank']} threads "
        f"per rank, {probe['world_size']} ranks on {probe['cpus']} CPUs"
    )
    probe["outside_cores"] = round(meter.outside_cores, 2)
    return probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch and rank (default: 40)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size per rank (default: 64)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, the first is warm-up (default: 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind, best kept (default: 2)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait for a quiet machine per run (default: 30)",
    )
    args = parser.parse_args()
    python = payload_python()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as tmp:
        work = Path(tmp)
        n_train = 2 * args.steps * args.batch_size
        write_random_fmnist(work, n_train=n_train, n_test=512)
        flags = ["--dataset", "fashion-mnist", "--data-path", str(work), "--epochs", str(args.epochs)]
        flags += ["--batch-size", str(args.batch_size), "--max-steps-per-epoch", str(args.steps)]
        print(
            f"throughput data: random Fashion-MNIST-shaped IDX, {n_train} train images 1x28x28; "
            f"{args.steps} steps x batch {args.batch_size} per rank, {args.epochs} epochs (first is warm-up)"
        )
        kinds = {
            "1 rank": lambda r: [(1, flags, work / f"one-{r}.jsonl")],
            "2 ranks": lambda r: [(2, flags, work / f"two-{r}.jsonl")],
            "2 independent 1-rank jobs": lambda r: [(1, flags, work / f"solo{i}-{r}.jsonl") for i in range(2)],
        }
        best: dict[str, Run] = {}
        for repeat in range(args.repeats):  # interleaved, so a burst of outside load hits every kind alike
            for kind, jobs in kinds.items():
                _, run = run_jobs(python, jobs(repeat), args.quiet_wait)
                print(
                    f"  {kind:>26}: {run.samples_per_s:8.1f} samples/s "
                    f"({run.samples_per_epoch} samples/epoch, wall {run.wall_s:.1f} s, "
                    f"outside load {run.outside_cores:.2f} cores, "
                    f"{run.quiet_before:.2f} just before)"
                )
                if kind not in best or run.samples_per_s > best[kind].samples_per_s:
                    best[kind] = run
        t1, t2 = best["1 rank"].samples_per_s, best["2 ranks"].samples_per_s
        ceiling = best["2 independent 1-rank jobs"].samples_per_s
        efficiency = t2 / (2 * t1)
        print(f"best of {args.repeats}: t1 = {t1:.1f}, t2 = {t2:.1f}, two independent jobs = {ceiling:.1f} samples/s")
        verdict = "met" if efficiency >= TARGET_EFFICIENCY else "NOT met"
        print(
            f"scaling efficiency t2 / (2 * t1) = {t2:.1f} / (2 * {t1:.1f}) = {efficiency:.3f} "
            f"(target >= {TARGET_EFFICIENCY}: {verdict})"
        )
        print(
            f"machine ceiling: two independent jobs / (2 * t1) = {ceiling / (2 * t1):.3f}; "
            f"DDP against that ceiling: t2 / two independent jobs = {t2 / ceiling:.3f}"
        )

        worst = max(run.outside_cores for run in best.values())
        if worst >= QUIET_CORES:
            print(
                f"warning: the kept runs saw up to {worst:.2f} cores of outside load, so these figures "
                "describe the machine's sharing, not the payload; rerun when the machine is quiet"
            )

        probe = probe_split(python, args.batch_size, args.quiet_wait)
        payload_step = probe["steps"]["DDP, the payload's"]
        compute_step = probe["steps"]["compute only (no_sync)"]
        print(
            f"all-reduce bandwidth per link {probe['allreduce_gbps_per_link']:.2f} GB/s; communication "
            f"{1 - compute_step['step_ms'] / payload_step['step_ms']:.1%} of a payload step; "
            f"efficiency {efficiency:.3f}, {t2 / ceiling:.3f} of the machine's ceiling (target >= 0.90)"
        )

        records, digits = run_jobs(python, [(2, DIGITS_FLAGS, work / "digits.jsonl")], args.quiet_wait)
        epochs = [r for r in records if r["event"] == "epoch"]
        reached = next((r for r in epochs if r["test_accuracy"] >= TARGET_ACCURACY), None)
        final = records[-1]
        to_target = None if reached is None else reached["elapsed_s"]
        if reached is None:
            print(f"digits, 2 ranks: never reached {TARGET_ACCURACY} in {len(epochs)} epochs")
        else:
            print(
                f"digits, 2 ranks: time to test accuracy >= {TARGET_ACCURACY}: {to_target:.2f} s of training "
                f"(epoch {reached['epoch']}, {reached['test_accuracy']:.3f}); "
                f"final {final['test_accuracy']:.3f} after {final['epochs']} epochs; "
                f"job wall {digits.wall_s:.1f} s with start-up"
            )

    summary = {
        "samples_per_s_1_rank": round(t1, 1),
        "samples_per_s_2_ranks": round(t2, 1),
        "samples_per_s_2_independent_jobs": round(ceiling, 1),
        "efficiency": round(efficiency, 3),
        "efficiency_target": TARGET_EFFICIENCY,
        "machine_ceiling_efficiency": round(ceiling / (2 * t1), 3),
        "ddp_vs_ceiling": round(t2 / ceiling, 3),
        "max_outside_load_cores": round(worst, 2),
        "reliable": worst < QUIET_CORES,
        "allreduce_gbps_per_link": probe["allreduce_gbps_per_link"],
        "comm_share_of_step": round(1 - compute_step["step_ms"] / payload_step["step_ms"], 3),
        "comm_share_of_step_cpu": round(1 - compute_step["cpu_ms"] / payload_step["cpu_ms"], 3),
        "probe": probe,
        "digits_seconds_to_0.90": None if to_target is None else round(to_target, 2),
        "digits_final_test_accuracy": final["test_accuracy"],
        "digits_job_wall_s": round(digits.wall_s, 1),
    }
    print(f"DDP_SCALING_SUMMARY {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
