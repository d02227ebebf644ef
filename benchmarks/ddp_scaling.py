#!/usr/bin/env python3
"""DDP scaling of payloads/ddp/train.py on this machine: prints figures, asserts nothing.

1. Throughput: samples/s with 1 rank (t1) and with 2 ranks (t2), both under torchrun --standalone,
   gloo, one thread per rank, the same per-rank batch and the same steps per epoch; scaling
   efficiency = t2 / (2 * t1) (target >= 0.85). The data is Fashion-MNIST-shaped random data (28x28
   uint8 images, random labels) written as IDX files to a temp folder: it goes through the real IDX
   loader and costs what Fashion-MNIST costs per step. samples/s is the payload's own timing of its
   training loop (start-up and evaluation excluded); the first epoch is warm-up and left out.
   As a yardstick, two independent 1-rank jobs run at once (no communication at all): what this
   machine gives two busy processes. t2 against that ceiling is the DDP overhead proper. The two
   jobs start their timed epochs seconds apart (start-up), so each counts only the epochs it timed
   while the other was timing its own (the benchmark stamps their log lines as they appear); counted
   otherwise, one job's epochs beside the other's start-up or exit raised the ceiling. Each kind runs
   --repeats times, interleaved; the figures are the median and the range (min-max) of the repeats,
   ratios taken per repeat. In each repeat, after those runs, the lockstep ceiling
   (benchmarks/_lockstep.py): two processes without torch run fixed chunks of CPU work as long as
   that repeat's 1-rank step, free and then waiting for each other after every chunk; lockstep /
   free is the most any synchronous data-parallel job reaches against two independent jobs on this
   machine, and DDP is also given against it. Beside each run: its wall time, the CPU-seconds of
   each process tree (torchrun and its workers, from wait4's rusage, start-up included) and the
   CPU-bound floor (all CPU-seconds spent during the run, ours and the outside load's, over the
   cores), and the first (warm-up) epoch against a steady one.
2. Where a 2-rank step goes (benchmarks/_ddp_probe.py under torchrun): the step with no all-reduce
   at all (no_sync), with DDP's defaults, as the payload builds DDP, on a 1-thread gloo group and
   with the fp16 compression hook; wall time per step and its phases; CPU time per step of each
   thread (main, gloo's run loops, gloo's TCP loop) and the times this rank was preempted; the first
   step; the share of a step spent in communication (1 - compute-only / DDP step, wall and CPU);
   the gradient against the buckets; an all-reduce of the gradient's size alone and the bandwidth per
   link it gives; torch's intra-op and inter-op threads and gloo's threads against the cores; the
   payload's data loader per step. From the CPU per step: the most DDP can reach against the
   ceiling when both cores are busy (compute-only CPU / DDP CPU).
3. Time to 0.90 test accuracy on scikit-learn's digits with 2 ranks (the tests' configuration).

The CPUs may be shared with other work this process cannot see. Each run reports the outside load
(CPU busy time in /proc/stat less the CPU time of our own processes, in cores), and before each run
the benchmark waits up to --quiet-wait seconds for the machine to go quiet. Figures taken under
outside load are not a property of the payload.

Run it with any Python 3.11; the payload runs in PYCTL_DDP_PYTHON (default .venv-ddp/bin/python):
    python3 benchmarks/ddp_scaling.py [--steps 40] [--batch-size 64] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _lockstep

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "payloads" / "ddp" / "train.py"
PROBE = Path(__file__).resolve().parent / "_ddp_probe.py"
COMPUTE, PAYLOAD = "compute only (no_sync)", "DDP, the payload's"  # _ddp_probe.py's names
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
    cpu_s: list[float]  # rusage of each job's process tree (torchrun and its workers), whole job
    warmup_s: float  # the first epoch's training time (the first job's)
    steady_epoch_s: float  # the mean of the later epochs'
    overlap: float  # share of the jobs' timed epochs that ran at the same time (1.0 for one job)
    concurrent_epochs: list[int] | None  # per job, the epochs counted (timed while the other job was too)

    @property
    def floor_s(self) -> float:
        """The least wall time the CPU-seconds spent during the run allow on this machine's cores."""
        return (sum(self.cpu_s) + self.outside_cores * self.wall_s) / (os.cpu_count() or 1)


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


def steady_samples_per_s(records: list[dict], keep: list[bool] | None = None) -> tuple[float, int]:
    """Samples/s over every epoch after the first (warm-up), or over the kept ones; the samples per epoch."""
    epochs = [r for r in records if r["event"] == "epoch"]
    steady = [r for r, kept in zip(epochs, keep, strict=True) if kept] if keep and any(keep) else epochs[1:]
    steady = steady or epochs
    samples = sum(r["samples"] for r in steady)
    seconds = sum(r["train_seconds"] for r in steady)
    return samples / seconds, epochs[-1]["samples"]


def timed_window(stamps: list[float], records: list[dict]) -> tuple[float, float]:
    """When a job's timed epochs ran: from the first epoch's line (warm-up done) to the last epoch's."""
    epochs = [stamp for stamp, r in zip(stamps, records, strict=False) if r["event"] == "epoch"]
    return (epochs[0], epochs[-1]) if len(epochs) > 1 else (0.0, 0.0)


def concurrent_epochs(stamps: list[float], records: list[dict], others: list[tuple[float, float]]) -> list[bool]:
    """For each epoch of a job: was it timed while every other job was inside its own timed epochs?

    An epoch's line is written when it ends (after a short evaluation), so it ran from about its stamp
    less its train_seconds to its stamp. The first epoch (warm-up) is never kept.
    """
    lines = [(stamp, r) for stamp, r in zip(stamps, records, strict=False) if r["event"] == "epoch"]
    return [
        index > 0 and all(start <= stamp - r["train_seconds"] and stamp <= end for start, end in others)
        for index, (stamp, r) in enumerate(lines)
    ]


def overlap_share(windows: list[tuple[float, float]]) -> float:
    """The share of the shortest timed window during which every job was in its timed epochs."""
    if len(windows) < 2:
        return 1.0
    start, end = max(w[0] for w in windows), min(w[1] for w in windows)
    shortest = min(w[1] - w[0] for w in windows)
    return max(end - start, 0.0) / shortest if shortest > 0 else 0.0


def run_jobs(python: Path, jobs: list[tuple[int, list[str], Path]], max_wait: float) -> tuple[list[dict], Run]:
    """Start the jobs (nproc, flags, log) at once, wait for all; return the first log and the figures.

    While they run, each new line of their logs is stamped with this process's clock, so the ceiling's
    two independent jobs can be checked to have timed their epochs at the same time (one that starts
    later than the other would time some epochs alone on the machine and raise the ceiling).
    """
    quiet_before = wait_for_quiet(max_wait)
    stamps: list[list[float]] = [[] for _ in jobs]
    seen = [0] * len(jobs)
    with tempfile.TemporaryFile("w+") as stderr, LoadMeter() as meter:
        procs = [
            subprocess.Popen(
                torchrun_argv(python, nproc, flags, log),
                env=payload_env(),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            for nproc, flags, log in jobs
        ]
        cpu_s: dict[int, float] = {}
        while len(cpu_s) < len(procs):
            now = time.perf_counter()
            for i, (_, _, log) in enumerate(jobs):
                lines = log.read_text().count("\n") if log.exists() else 0
                stamps[i] += [now] * (lines - seen[i])
                seen[i] = lines
            for proc in procs:
                if proc.pid not in cpu_s:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:  # torchrun has waited for its workers: its rusage holds the whole tree
                        proc.returncode = os.waitstatus_to_exitcode(status)
                        cpu_s[proc.pid] = usage.ru_utime + usage.ru_stime
            time.sleep(0.02)
        stderr.seek(0)
        errors = stderr.read()
    for proc in procs:
        if proc.returncode != 0:
            sys.exit(f"ddp_scaling: a run failed (rc={proc.returncode}):\n{errors[-3000:]}")
    logs = [read_log(log) for _, _, log in jobs]
    windows = [timed_window(s, records) for s, records in zip(stamps, logs, strict=True)]
    # Two independent jobs start their timed epochs at different moments (start-up takes seconds): each
    # counts only the epochs it timed while the other was timing its own, so that neither job's figure
    # includes time it had the machine to itself. With one job every epoch after the first counts.
    keeps = [
        concurrent_epochs(s, records, windows[:i] + windows[i + 1 :]) if len(jobs) > 1 else None
        for i, (s, records) in enumerate(zip(stamps, logs, strict=True))
    ]
    rates = [steady_samples_per_s(records, keep) for records, keep in zip(logs, keeps, strict=True)]
    epochs = [r for r in logs[0] if r["event"] == "epoch"]
    later = [r["train_seconds"] for r in epochs[1:]] or [epochs[0]["train_seconds"]]
    run = Run(
        samples_per_s=sum(rate for rate, _ in rates),
        samples_per_epoch=sum(count for _, count in rates),
        wall_s=meter.seconds,
        outside_cores=meter.outside_cores,
        quiet_before=quiet_before,
        cpu_s=[cpu_s[proc.pid] for proc in procs],
        warmup_s=epochs[0]["train_seconds"],
        steady_epoch_s=sum(later) / len(later),
        overlap=overlap_share(windows),
        concurrent_epochs=None if len(jobs) == 1 else [sum(keep) for keep in keeps],
    )
    return logs[0], run


def lockstep_ceiling(step_s: float, args: argparse.Namespace) -> float:
    """One repeat of the lockstep probe at this step length: free pair, then lockstep pair; prints both."""
    steps = args.steps * (args.epochs - 1)  # as many steps as the timed epochs of a run
    units = max(1, round(_lockstep.units_per_second() * step_s))
    figures = {}
    for lockstep in (False, True):
        quiet_before = wait_for_quiet(args.quiet_wait)
        with LoadMeter() as meter:
            pair = _lockstep.run_pair(units, steps, lockstep)
        figures[lockstep] = pair
        floor = (sum(pair.cpu_s) + meter.outside_cores * meter.seconds) / (os.cpu_count() or 1)
        name = "lockstep pair, no torch" if lockstep else "free pair, no torch"
        print(
            f"  {name:>26}: {pair.steps_per_s:8.1f} steps/s ({steps} steps of {step_s * 1000:.1f} ms of work each; "
            f"wall {pair.wall_s:.1f} s, CPU {'+'.join(f'{c:.1f}' for c in pair.cpu_s)} s, CPU-bound floor "
            f"{floor:.1f} s; outside load {meter.outside_cores:.2f} cores, {quiet_before:.2f} just before)"
        )
    return figures[True].steps_per_s / figures[False].steps_per_s


def spread(values: list[float], digits: int = 3) -> str:
    """'median (min-max)' of a figure over the repeats."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def probe_split(python: Path, batch_size: int, repeats: int, max_wait: float) -> dict:
    """Run _ddp_probe.py on 2 ranks; print where a step goes; return its figures."""
    quiet_before = wait_for_quiet(max_wait)
    argv = [str(python), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(PROBE)]
    with LoadMeter() as meter:
        done = subprocess.run(
            [*argv, "--batch-size", str(batch_size), "--repeats", str(repeats)],
            env=payload_env(),
            capture_output=True,
            text=True,
            check=False,
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("DDP_PROBE ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"ddp_scaling: the probe failed (rc={done.returncode}):\n{done.stderr[-3000:]}")
    probe = json.loads(line.split(" ", 1)[1])
    steps = probe["steps"]
    compute = steps[COMPUTE]
    print(
        f"where a 2-rank step goes (batch {batch_size} per rank, median (range) of {repeats} repeats; outside "
        f"load {meter.outside_cores:.2f} cores, {quiet_before:.2f} just before):"
    )
    for name, fig in steps.items():
        low, high = fig["step_ms_range"]
        threads = ", ".join(f"{n} {ms:.2f}" for n, ms in sorted(fig["thread_cpu_ms"].items()))
        print(
            f"  {name:>34}: step {fig['step_ms']:6.2f} ms wall ({low:.1f}-{high:.1f}), "
            f"forward/backward/optimizer {'/'.join(f'{ms:.1f}' for ms in fig['phases_ms'])} ms; "
            f"CPU {fig['cpu_ms']:.2f} ms ({threads}); {fig['preemptions_per_step']:.1f} preemptions; "
            f"first step {fig['first_step_ms']:.0f} ms"
        )
        print(
            f"  {'':>34}  main thread: {fig['main_thread_cpu_ms']:.1f} ms on a CPU, {fig['main_runqueue_ms']:.1f} ms "
            f"waiting for one, {fig['main_asleep_ms']:.1f} ms asleep (the other rank, gloo, the network)"
        )
        if name != COMPUTE:
            buckets = probe["bucket_bytes"].get(name, [])
            print(
                f"  {'':>34}  communication {1 - compute['step_ms'] / fig['step_ms']:.1%} of the wall, "
                f"{1 - compute['cpu_ms'] / fig['cpu_ms']:.1%} of the CPU; "
                f"{len(buckets)} bucket(s) {[round(b / 2**20, 2) for b in buckets]} MiB"
            )
    rank_steps = [f"{r['step_ms']:.1f} ms / {r['cpu_ms']:.1f} ms CPU" for r in probe["payload_per_rank"]]
    print(
        f"  gradient {probe['gradient_bytes'] / 2**20:.2f} MiB; all-reduce of it alone {probe['allreduce_ms']:.2f} ms "
        f"= {probe['allreduce_gbps_per_link']:.2f} GB/s per link; the payload's step per rank: {', '.join(rank_steps)}"
    )
    print(
        f"  threads per rank: torch intra-op {probe['torch_threads_per_rank']} (OMP_NUM_THREADS="
        f"{probe['omp_num_threads_env']}), inter-op {probe['interop_threads']}, gloo {probe['gloo_threads_per_rank']} "
        f"+ its TCP loop; {probe['process_threads']} threads in all; {probe['world_size']} ranks on "
        f"{probe['cpus']} CPUs; the payload's loader {probe['loader_ms_per_step']:.2f} ms per step (Python, "
        f"{probe['loader_ms_per_step'] / compute['step_ms']:.1%} of a compute-only step)"
    )
    probe["outside_cores"] = round(meter.outside_cores, 2)
    return probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch and rank (default: 40)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size per rank (default: 64)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run, the first is warm-up (default: 5)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each kind, and probe repeats; medians kept (default: 3)"
    )
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
        runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
        lockstep_ratios: list[float] = []
        for repeat in range(args.repeats):  # interleaved, so a burst of outside load hits every kind alike
            for kind, jobs in kinds.items():
                _, run = run_jobs(python, jobs(repeat), args.quiet_wait)
                runs[kind].append(run)
                print(
                    f"  {kind:>26}: {run.samples_per_s:8.1f} samples/s "
                    f"({run.samples_per_epoch} samples/epoch; wall {run.wall_s:.1f} s, CPU "
                    f"{'+'.join(f'{c:.1f}' for c in run.cpu_s)} s, CPU-bound floor {run.floor_s:.1f} s; "
                    f"warm-up epoch {run.warmup_s:.2f} s vs {run.steady_epoch_s:.2f} s steady; "
                    + (
                        ""
                        if run.concurrent_epochs is None
                        else f"timed epochs overlapping {run.overlap:.0%}, counted {run.concurrent_epochs}; "
                    )
                    + f"outside load {run.outside_cores:.2f} cores, {run.quiet_before:.2f} just before)"
                )
            lockstep_ratios.append(lockstep_ceiling(runs["1 rank"][-1].steady_epoch_s / args.steps, args))
        rates = {kind: [run.samples_per_s for run in kind_runs] for kind, kind_runs in runs.items()}
        t1, t2 = (statistics.median(rates[kind]) for kind in ("1 rank", "2 ranks"))
        ceiling = statistics.median(rates["2 independent 1-rank jobs"])
        # Ratios per repeat (each repeat ran its kinds back to back), then their median and range.
        efficiencies = [b / (2 * a) for a, b in zip(rates["1 rank"], rates["2 ranks"], strict=True)]
        ceilings = [c / (2 * a) for a, c in zip(rates["1 rank"], rates["2 independent 1-rank jobs"], strict=True)]
        against = [b / c for b, c in zip(rates["2 ranks"], rates["2 independent 1-rank jobs"], strict=True)]
        efficiency = statistics.median(efficiencies)
        print(
            "median (range) of {}: t1 = {}, t2 = {}, two independent jobs = {} samples/s".format(
                args.repeats, *(spread(rates[kind], digits=1) for kind in kinds)
            )
        )
        verdict = "met" if efficiency >= TARGET_EFFICIENCY else "NOT met"
        print(f"scaling efficiency t2 / (2 * t1): {spread(efficiencies)} (target >= {TARGET_EFFICIENCY}: {verdict})")
        print(
            f"machine ceiling: two independent jobs / (2 * t1): {spread(ceilings)}; "
            f"DDP against that ceiling, t2 / two independent jobs: {spread(against)} (target >= 0.90)"
        )
        lockstep_against = [b / lock for b, lock in zip(against, lockstep_ratios, strict=True)]
        print(
            f"lockstep ceiling (no torch: a wait for the other process after every step-long chunk of CPU work), "
            f"lockstep / free: {spread(lockstep_ratios)}; DDP against two independent jobs x that ceiling: "
            f"{spread(lockstep_against)}"
        )
        worst = max(run.outside_cores for kind_runs in runs.values() for run in kind_runs)
        if worst >= QUIET_CORES:
            print(
                f"warning: the runs saw up to {worst:.2f} cores of outside load, so these figures "
                "describe the machine's sharing, not the payload; rerun when the machine is quiet"
            )

        probe = probe_split(python, args.batch_size, args.repeats, args.quiet_wait)
        payload_step = probe["steps"][PAYLOAD]
        compute_step = probe["steps"][COMPUTE]
        cpu_bound = compute_step["cpu_ms"] / payload_step["cpu_ms"]
        print(
            f"all-reduce bandwidth per link {probe['allreduce_gbps_per_link']:.2f} GB/s; communication "
            f"{1 - compute_step['step_ms'] / payload_step['step_ms']:.1%} of a payload step's wall, "
            f"{1 - cpu_bound:.1%} of its CPU; with both cores busy DDP can reach at most {cpu_bound:.3f} of the "
            f"ceiling (compute-only CPU / DDP CPU per step); measured {statistics.median(against):.3f}"
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
        "machine_ceiling_efficiency": round(statistics.median(ceilings), 3),
        "ddp_vs_ceiling": round(statistics.median(against), 3),
        "ddp_vs_ceiling_range": [round(min(against), 3), round(max(against), 3)],
        "ddp_vs_ceiling_cpu_bound": round(cpu_bound, 3),
        "lockstep_ceiling": round(statistics.median(lockstep_ratios), 3),
        "lockstep_ceiling_range": [round(min(lockstep_ratios), 3), round(max(lockstep_ratios), 3)],
        "ddp_vs_lockstep_ceiling": round(statistics.median(lockstep_against), 3),
        "repeats": args.repeats,
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
