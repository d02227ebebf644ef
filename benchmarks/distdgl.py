"""Benchmark of the DistDGL payload: partitioning, 1 vs 2 machines, server memory. Prints; asserts nothing.

    sudo .venv/bin/python benchmarks/distdgl.py [--nodes 20000] [--epochs 5] [--no-cli]

Measures, on a synthetic SBM graph (graphs.py):
- partition time for 1 and 2 parts (METIS), and the cached second call;
- the same GraphSAGE job (train.py, identical flags) in one local process, on 1 machine (one network
  namespace) and on 2 machines (two namespaces, as in tests/payloads/test_distdgl_launch.py): mean
  epoch time, test accuracy, the job's wall time from launch to exit;
- peak resident memory (VmHWM, partition pages in /dev/shm included) of every DGL server process;
- the same 2-machine job through the CLI (`pyctl train distdgl --backend ssh --follow` on a 2-host
  netns lab, a fresh shared folder): partition time as the start-up step reports it, epoch time and
  accuracy, the job's wall time from `pyctl` starting to its exit (preflight, supervisor, partition and
  launch included), and its servers' peak memory. `--no-cli` skips it.
Needs root (network namespaces) and the DistDGL environment (.venv-distdgl or PYCTL_DISTDGL_PYTHON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "payloads"))
from distdgl_fixtures import (
    NetnsMachines,
    distdgl_interpreter,
    lab_unavailable_reason,
    launcher_argv,
    parse_summary,
    run_payload,
)


def partition(python: Path, graph_args: list[str], parts: int, out: Path) -> dict:
    result = run_payload(python, "partition.py", *graph_args, "--num-parts", str(parts), "--output", str(out))
    if result.returncode != 0:
        raise SystemExit(f"partition.py failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def server_peaks(lab: NetnsMachines, peaks: dict[str, int]) -> None:
    """Record VmHWM (kB) of every DGL server process in the lab's namespaces."""
    for i in range(lab.count):
        for pid in lab.pids(i):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if b"DGL_ROLE=server" not in environ:
                continue
            server = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"DGL_SERVER_ID=")), "?")
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    kb = int(line.split()[1])
                    peaks[server] = max(peaks.get(server, 0), kb)


def run_machines(python, count: int, part_config: str, train_args: list[str], work: Path) -> dict:
    lab = NetnsMachines(count).up()
    peaks: dict[str, int] = {}
    try:
        started = time.monotonic()
        procs = []
        for i in range(count):
            argv = launcher_argv(
                python,
                lab.ips,
                i,
                part_config,
                "--run-dir",
                str(work / f"run{count}-{i}"),
                train_args=train_args,
            )
            procs.append(lab.start(i, argv, work / f"machines{count}-m{i}.log"))
        while any(p.poll() is None for p in procs) and time.monotonic() - started < 1200:
            server_peaks(lab, peaks)
            time.sleep(0.5)
        wall = time.monotonic() - started
        codes = [p.wait(timeout=30) for p in procs]
    finally:
        lab.down()
    log = (work / f"machines{count}-m0.log").read_text()
    summary = parse_summary(log) or {}
    if any(codes) or not summary:
        print(f"  {count} machine(s): exit codes {codes}; see {work}", file=sys.stderr)
    return {
        "summary": summary,
        "wall": wall,
        "codes": codes,
        "server_peak_mib": {k: v / 1024 for k, v in peaks.items()},
    }


def run_cli(python: Path, nodes: int, train_args: list[str], work: Path) -> dict:
    """The 2-machine job through `pyctl train distdgl --backend ssh` on a 2-host netns lab."""
    import os
    import subprocess
    import threading

    repo = Path(__file__).resolve().parents[1]
    state, share = work / "cli-state", work / "cli-share"
    share.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCTL_")}
    env.update({"PYCTL_STATE_DIR": str(state), "PYCTL_CONFIG": str(state / "none.toml")})
    pyctl = [sys.executable, "-m", "pyctl"]
    name = f"bench{os.getpid()}"
    up = subprocess.run([*pyctl, "lab", "up", "--kind", "netns", "--nodes", "2", "--name", name], env=env,
                        capture_output=True, text=True, check=False, cwd=repo)  # fmt: skip
    if up.returncode != 0:
        print(f"  CLI: lab up failed: {up.stderr.strip()[-500:]}", file=sys.stderr)
        return {"summary": {}, "wall": None, "server_peak_mib": {}, "partition_s": None}
    inventory = up.stdout.strip().splitlines()[-1]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
    namespaces = sorted(ns for ns in listed if ns.startswith(f"pyctl-{name}."))  # the hosts' namespaces
    peaks: dict[str, int] = {}
    stop = threading.Event()

    class _Lab:  # what server_peaks reads: the namespaces' pids
        count = len(namespaces)

        @staticmethod
        def pids(i: int) -> list[int]:
            out = subprocess.run(["ip", "netns", "pids", namespaces[i]], capture_output=True, text=True, check=False)
            return [int(p) for p in out.stdout.split()]

    def sample() -> None:
        while not stop.is_set():
            server_peaks(_Lab, peaks)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        run = subprocess.run(
            [*pyctl, "train", "distdgl", "-i", inventory, "--backend", "ssh", "--ssh-user", "root",
             "--python", str(python), "--shared-path", str(share), "--graph", "synthetic",
             "--synthetic-nodes", str(nodes), "--follow", *train_args],
            env=env, capture_output=True, text=True, check=False, cwd=repo, timeout=1800,
        )  # fmt: skip
        wall = time.monotonic() - started
    finally:
        stop.set()
        sampler.join(timeout=5)
        subprocess.run([*pyctl, "lab", "down", "--name", name], env=env, capture_output=True, check=False, cwd=repo)
    (work / "cli.log").write_text(run.stdout + run.stderr)
    lines = [ln.split("] ", 1)[1] for ln in run.stdout.splitlines() if "] PYCTL_SUMMARY " in ln]
    summary = parse_summary("\n".join(lines)) or {}
    partition_s = None
    for path in share.glob("pyctl/jobs/*/partition.json"):
        partition_s = json.loads(path.read_text()).get("seconds")
    if run.returncode != 0 or not summary:
        print(f"  CLI: pyctl exited with {run.returncode}; see {work / 'cli.log'}", file=sys.stderr)
    return {
        "summary": summary,
        "wall": wall,
        "server_peak_mib": {k: v / 1024 for k, v in peaks.items()},
        "partition_s": partition_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="keep partitions and logs here (default: a temp dir)")
    parser.add_argument("--no-cli", action="store_true", help="skip the job through pyctl train distdgl")
    args = parser.parse_args()
    python = distdgl_interpreter()
    if python is None:
        print("DistDGL environment missing (.venv-distdgl or PYCTL_DISTDGL_PYTHON)", file=sys.stderr)
        return 2
    reason = lab_unavailable_reason()
    if reason:
        print(f"cannot run the namespace machines: {reason}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="distdgl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    graph_args = ["--graph", "synthetic", "--nodes", str(args.nodes)]
    train_args = ["--epochs", str(args.epochs), "--eval-fanouts=-1,-1"]
    print(f"DistDGL benchmark: synthetic SBM, {args.nodes} nodes, {args.epochs} epochs; work dir {work}")

    parts = {}
    for count in (1, 2):
        fresh = partition(python, graph_args, count, work / f"parts{count}")
        cached = partition(python, graph_args, count, work / f"parts{count}")
        parts[count] = fresh["part_config"]
        print(
            f"  partition into {count}: {fresh['seconds']:.2f} s (graph generation + METIS, as partition.py "
            f"reports it), cached call {cached['seconds']:.3f} s"
        )

    local = run_payload(python, "train.py", "--mode", "local", *graph_args, *train_args, timeout=1200)
    results = {"local": {"summary": parse_summary(local.stdout) or {}, "wall": None, "server_peak_mib": {}}}
    for count in (1, 2):
        results[f"{count} machine(s)"] = run_machines(python, count, parts[count], train_args, work)

    if not args.no_cli:
        # train.py flags after '--': the CLI passes --epochs itself, the rest as the runs above.
        cli = run_cli(python, args.nodes, ["--epochs", str(args.epochs), "--", *train_args[2:]], work)
        results["2 hosts (pyctl)"] = cli
        if cli["partition_s"] is not None:
            print(f"  partition into 2 through pyctl (machine 0's start-up step): {cli['partition_s']:.2f} s")

    print()
    print(f"{'run':<16} {'test acc':>8} {'epoch s':>8} {'job s':>7}  server peak RSS (MiB)")
    for name, res in results.items():
        summary = res["summary"]
        acc = summary.get("test_acc")
        epoch = summary.get("mean_epoch_seconds")
        wall = res["wall"]
        peaks = ", ".join(f"server {k}: {v:.0f}" for k, v in sorted(res["server_peak_mib"].items())) or "-"
        print(
            f"{name:<16} {acc if acc is not None else '-':>8} {epoch if epoch is not None else '-':>8} "
            f"{f'{wall:.1f}' if wall is not None else '-':>7}  {peaks}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
