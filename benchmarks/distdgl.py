"""Benchmark of the DistDGL payload: partitioning, 1 vs 2 machines, server memory. Prints; asserts nothing.

    sudo .venv/bin/python benchmarks/distdgl.py [--nodes 20000] [--epochs 5]

Measures, on a synthetic SBM graph (graphs.py):
- partition time for 1 and 2 parts (METIS), and the cached second call;
- the same GraphSAGE job (train.py, identical flags) in one local process, on 1 machine (one network
  namespace) and on 2 machines (two namespaces, as in tests/payloads/test_distdgl_launch.py): mean
  epoch time, test accuracy, the job's wall time from launch to exit;
- peak resident memory (VmHWM, partition pages in /dev/shm included) of every DGL server process.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="keep partitions and logs here (default: a temp dir)")
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

    print()
    print(f"{'run':<14} {'test acc':>8} {'epoch s':>8} {'job s':>7}  server peak RSS (MiB)")
    for name, res in results.items():
        summary = res["summary"]
        acc = summary.get("test_acc")
        epoch = summary.get("mean_epoch_seconds")
        wall = res["wall"]
        peaks = ", ".join(f"server {k}: {v:.0f}" for k, v in sorted(res["server_peak_mib"].items())) or "-"
        print(
            f"{name:<14} {acc if acc is not None else '-':>8} {epoch if epoch is not None else '-':>8} "
            f"{f'{wall:.1f}' if wall is not None else '-':>7}  {peaks}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
