"""The node phases at scale: 1 to 50 fresh container hosts, first run and no-op re-run, then `pyctl node add`.

    sudo .venv/bin/python benchmarks/scale.py [--hosts 1,10,25,50] [--json FILE] [--png FILE] [--no-node-add]

For each size N (a fresh container lab each, no NFS server: containers cannot serve NFS), `pyctl bootstrap
--phases prepare_nodes,container_runtime,storage,ssh_trust` twice: the first run installs containerd and the NFS
client on every host, the second must change nothing. For each run it prints the wall time, the controller's
CPU-seconds (pyctl, ansible-playbook and its forks, ssh and the ProxyCommand socats: the run is started in a
cgroup of its own, whose cpu.stat counts every process in it, ControlPersist masters included, which are
stopped when the run ends), the hosts' CPU-seconds (each container host's own cgroup, see pyctl/lab/cgroups.py),
the remote module runs per host (task results that ran a module on the host: not skipped, not an assert or
set_fact, not delegated to the controller) and the run's CPU-bound floor: (controller + hosts CPU-seconds) /
cores, the least wall time the work needs on this machine's cores. What else the machine ran meanwhile (other
users) is printed as `other load`: busy CPU-seconds of the whole machine minus this run's.

Then, on the largest size, `pyctl node add` of one more host (host N+1, in the same lab from the start but
left out of the runs above): today its node phases (the Kubernetes join needs pkgs.k8s.io: the lab has no
Kubernetes packages yet). node add refuses a cluster without a fetched kubeconfig, so the benchmark's private
state directory gets a placeholder one, which the node phases never read. It prints the wall time against the
1-host first run (target <= 1.5x) and, from the run's events, every other host on which a task reported a
change (target: none).

--json FILE writes {"hosts": {"50": {"first_s", "noop_s", "floor_first_s", "floor_noop_s",
"controller_cpu_s_noop", "host_cpu_s_noop", "remote_runs_per_host_noop", ...}, ...}, "node_add": {"s",
"other_hosts_changed"}}; --png FILE a chart of wall time and floor against host count (first run, no-op).
Needs root (labs). Prints figures and asserts nothing; labs are taken down at the end (--keep keeps them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyctl import inventory as inventory_module  # noqa: E402
from pyctl.lab import cgroups, get  # noqa: E402
from pyctl.lab.processes import kill_now  # noqa: E402

PHASES = "prepare_nodes,container_runtime,storage,ssh_trust"
TARGET_NOOP_S = 60.0  # at 50 hosts
TARGET_CONTROLLER_PER_HOST = 1.0
TARGET_FIRST_OVER_FLOOR = 1.25
TARGET_NODE_ADD = 1.5  # x the 1-host first run
# Task actions that run on the controller only (no module on the host).
LOCAL_ACTIONS = {
    "assert",
    "set_fact",
    "debug",
    "fail",
    "meta",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "include_vars",
    "add_host",
    "group_by",
}
CORES = os.cpu_count() or 1


def pyctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyctl", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )


def busy_seconds() -> float:
    """CPU-seconds this machine spent busy since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def unified_root() -> Path:
    for root in cgroups.hierarchies():
        if (root / "cgroup.controllers").exists():  # cgroup v2
            return root
    raise SystemExit("benchmarks/scale.py needs a cgroup v2 (unified) hierarchy to count the controller's CPU")


class Controller:
    """Runs a command in a cgroup of its own (cgroup v2 cpu.stat: every descendant, detached ones too)."""

    def __init__(self, tag: str) -> None:
        self.path = unified_root() / "pyctl-bench" / tag
        self.path.mkdir(parents=True, exist_ok=True)

    def cpu(self) -> float:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        return 0.0

    def run(self, argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, float]:
        before = self.cpu()
        start = time.perf_counter()
        wrapped = ["sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "pyctl-bench", str(self.path / "cgroup.procs")]
        # Output to files, not pipes: a detached ControlPersist master must not hold the run open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            done = subprocess.run([*wrapped, *argv], stdout=out, stderr=err, env=env, cwd=ROOT, check=False)
            wall = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())
        self.stop_leftovers()  # ControlPersist masters and their socats: the next run starts cold, as a user's would
        return result, wall, self.cpu() - before

    def stop_leftovers(self) -> None:
        pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        kill_now(pids)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.stop_leftovers()
            self.path.rmdir()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def read_events(run_dir: Path) -> list[dict]:
    """The events of a finished run, in order (ansible-runner's job_events folder)."""
    folder = run_dir / "artifacts" / "ansible" / "job_events"
    events = [json.loads(p.read_text()) for p in folder.glob("*.json") if not p.name.endswith("-partial.json")]
    return sorted(events, key=lambda e: e.get("counter", 0))


def hosts_cpu(lab, names: list[str]) -> float:
    return sum(cgroups.cpu_seconds(lab, h) or 0.0 for h in lab.hosts if h.name in names)


def last_run_dir(state: Path, verb: str) -> Path:
    return sorted((state / "runs").glob(f"*Z-{verb}"))[-1]


def _action(event_data: dict) -> str:
    return str(event_data.get("task_action", "")).rsplit(".", 1)[-1]


def _delegated_to_controller(event_data: dict) -> bool:
    delegated = (event_data.get("res") or {}).get("_ansible_delegated_vars") or {}
    return delegated.get("ansible_host") in ("localhost", "127.0.0.1") or delegated.get("ansible_delegated_host") in (
        "localhost",
    )


def remote_runs(events: list[dict]) -> dict[str, int]:
    """Module runs on each host: task and loop-item results that were not skipped, ran a module on the
    host (not an assert or set_fact) and were not delegated to the controller."""
    counts: dict[str, int] = {}
    for event in events:
        kind = event.get("event", "")
        if kind not in (
            "runner_on_ok",
            "runner_on_failed",
            "runner_on_unreachable",
            "runner_item_on_ok",
            "runner_item_on_failed",
        ):
            continue
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if kind.startswith("runner_on_") and isinstance(res.get("results"), list):
            continue  # a loop's summary: its items are counted one by one
        if _action(data) in LOCAL_ACTIONS or _delegated_to_controller(data):
            continue
        host = data.get("host", "?")
        counts[host] = counts.get(host, 0) + 1
    return counts


def changed_hosts(events: list[dict]) -> set[str]:
    """Every host on which a task reported a change (the delegated-to host for delegated tasks)."""
    found = set()
    for event in events:
        if event.get("event") not in ("runner_on_ok", "runner_item_on_ok"):
            continue
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if not res.get("changed"):
            continue
        delegated = res.get("_ansible_delegated_vars") or {}
        found.add(delegated.get("ansible_delegated_host") or data.get("host", "?"))
    return found


def write_inventory(summary_inventory: str, keep: list[str], directory: Path, name: str) -> Path:
    """The lab's inventory without the nfs_server group and without hosts not in `keep`."""
    data = yaml.safe_load(Path(summary_inventory).read_text())
    data["all"]["children"].pop("nfs_server", None)
    for host in list(data["all"].get("hosts", {})):
        if host not in keep:
            del data["all"]["hosts"][host]
    for group in data["all"]["children"].values():
        for host in list((group or {}).get("hosts") or {}):
            if host not in keep:
                del group["hosts"][host]
    path = directory / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def lab_up(name: str, nodes: int) -> tuple[dict, float]:
    start = time.perf_counter()
    result = pyctl("lab", "up", "--kind", "container", "--nodes", str(nodes), "--name", name, "--json")
    if result.returncode != 0:
        raise SystemExit(f"pyctl lab up failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout), time.perf_counter() - start


def measured_run(controller: Controller, argv: list[str], env: dict[str, str], lab, names: list[str], state: Path):
    busy, host_cpu = busy_seconds(), hosts_cpu(lab, names)
    result, wall, controller_cpu = controller.run(argv, env)
    host_cpu = hosts_cpu(lab, names) - host_cpu
    busy = busy_seconds() - busy
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr}")
    verb = "node-add" if "node" in argv else "bootstrap"
    events = read_events(last_run_dir(state, verb))
    runs = remote_runs(events)
    stats = next((e["event_data"] for e in reversed(events) if e.get("event") == "playbook_on_stats"), {})
    return {
        "results_per_host": {
            key: sum((stats.get(key) or {}).get(h, 0) for h in names) / max(1, len(names)) for key in ("ok", "skipped")
        },
        "s": wall,
        "controller_cpu_s": controller_cpu,
        "host_cpu_s": host_cpu,
        "floor_s": (controller_cpu + host_cpu) / CORES,
        "other_load_cpu_s": max(0.0, busy - controller_cpu - host_cpu),
        "machine_floor_s": busy / CORES,  # with what else ran: below it the run could not have finished
        "remote_runs_per_host": sum(runs.values()) / max(1, len(names)),
        "changed_hosts": sorted(changed_hosts(events)),
    }


def line(label: str, run: dict, hosts: int) -> str:
    return (
        f"  {label:<10} {run['s']:7.1f} s  floor {run['floor_s']:6.1f} s"
        f"  controller {run['controller_cpu_s']:6.1f} CPU-s"
        f" ({run['controller_cpu_s'] / hosts:.2f}/host)  hosts {run['host_cpu_s']:6.1f} CPU-s  remote runs/host"
        f" {run['remote_runs_per_host']:5.1f}  ok/skipped per host {run['results_per_host']['ok']:.0f}"
        f"/{run['results_per_host']['skipped']:.0f}  other load {run['other_load_cpu_s']:5.1f} CPU-s"
        f" (machine floor {run['machine_floor_s']:.1f} s)"
    )


def chart(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(n) for n in figures["hosts"])
    rows = [figures["hosts"][str(n)] for n in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(sizes, [r["first_s"] for r in rows], "o-", color="tab:blue", label="first run")
    ax.plot(sizes, [r["floor_first_s"] for r in rows], "o--", color="tab:blue", alpha=0.5, label="first run: CPU floor")
    ax.plot(sizes, [r["noop_s"] for r in rows], "s-", color="tab:orange", label="no-op re-run")
    ax.plot(sizes, [r["floor_noop_s"] for r in rows], "s--", color="tab:orange", alpha=0.5, label="no-op: CPU floor")
    ax.set_xlabel("container hosts")
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"pyctl node phases ({PHASES.replace(',', ', ')}) on {CORES} cores", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,10,25,50", help="host counts, comma-separated (default 1,10,25,50)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--png", type=Path, help="write the chart to this file")
    parser.add_argument("--no-node-add", action="store_true", help="skip pyctl node add on the largest size")
    parser.add_argument("--keep", action="store_true", help="leave the labs up")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/scale.py needs root (labs)")
    signal.signal(signal.SIGTERM, _stop)  # timeout(1) and kill: labs still come down
    sizes = sorted({int(x) for x in args.hosts.split(",") if x.strip()})
    tag = str(os.getpid())
    figures: dict = {"hosts": {}, "machine": {"cores": CORES, "date": time.strftime("%Y-%m-%d")}}
    labs: list[str] = []
    controller = Controller(tag)
    print(f"node phases {PHASES} on fresh container labs of {', '.join(map(str, sizes))} host(s), {CORES} cores")
    with tempfile.TemporaryDirectory(prefix="pyctl-scale-") as tmp:
        work = Path(tmp)
        try:
            for n in sizes:
                add = not args.no_node_add and n == sizes[-1]
                name = f"bsc{n}-{tag}"
                labs.append(name)
                summary, up_s = lab_up(name, n + 1 if add else n)
                lab = get(name)
                names = [f"node{i}" for i in range(1, n + 1)]
                inventory = write_inventory(summary["inventory"], names, work, name)
                state = work / f"state-{n}"
                env = dict(os.environ, PYCTL_STATE_DIR=str(state))
                print(f"{n} host(s): lab up in {up_s:.1f} s", flush=True)
                argv = [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory), "--phases", PHASES]
                first = measured_run(controller, argv, env, lab, names, state)
                print(line("first run", first, n), flush=True)
                noop = measured_run(controller, argv, env, lab, names, state)
                print(line("no-op", noop, n), flush=True)
                if noop["changed_hosts"]:
                    print(f"  the no-op changed something on {', '.join(noop['changed_hosts'])}")
                figures["hosts"][str(n)] = {
                    "first_s": round(first["s"], 1),
                    "noop_s": round(noop["s"], 1),
                    "floor_first_s": round(first["floor_s"], 1),
                    "floor_noop_s": round(noop["floor_s"], 1),
                    "controller_cpu_s_first": round(first["controller_cpu_s"], 1),
                    "host_cpu_s_first": round(first["host_cpu_s"], 1),
                    "controller_cpu_s_noop": round(noop["controller_cpu_s"], 1),
                    "host_cpu_s_noop": round(noop["host_cpu_s"], 1),
                    "remote_runs_per_host_first": round(first["remote_runs_per_host"], 1),
                    "remote_runs_per_host_noop": round(noop["remote_runs_per_host"], 1),
                    "other_load_cpu_s_first": round(first["other_load_cpu_s"], 1),
                    "other_load_cpu_s_noop": round(noop["other_load_cpu_s"], 1),
                    "lab_up_s": round(up_s, 1),
                }
                save(figures, args)
                if add:
                    new = f"node{n + 1}"
                    full = write_inventory(summary["inventory"], [*names, new], work, f"{name}-add")
                    kubeconfig = state / "clusters" / inventory_module.load(full).name / "admin.conf"
                    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
                    kubeconfig.write_text("# placeholder: the node phases never read it (benchmarks/scale.py)\n")
                    argv = [sys.executable, "-m", "pyctl", "node", "add", "-i", str(full), "--host", new]
                    node_add = measured_run(controller, [*argv, "--phases", PHASES], env, lab, [new], state)
                    others = [h for h in node_add["changed_hosts"] if h != new]
                    figures["node_add"] = {"s": round(node_add["s"], 1), "other_hosts_changed": len(others)}
                    print(line("node add", node_add, 1), flush=True)
                    print(f"  other hosts with a changing task: {', '.join(others) or 'none'}")
                save(figures, args)  # after each size: a run stopped later keeps what it measured
                if not args.keep:
                    pyctl("lab", "down", "--name", name)
        finally:
            controller.remove()
            if not args.keep:
                for name in labs:
                    pyctl("lab", "down", "--name", name)
    summarise(figures)
    save(figures, args)
    return 0


def save(figures: dict, args: argparse.Namespace) -> None:
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.png and figures["hosts"]:
        chart(figures, args.png)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}: taking the labs down")


def summarise(figures: dict) -> None:
    hosts = figures["hosts"]
    largest = max(int(n) for n in hosts)
    big = hosts[str(largest)]
    print(f"targets (at {largest} hosts):")
    print(f"  no-op re-run               {big['noop_s']:7.1f} s      (target <= {TARGET_NOOP_S:.0f} s at 50 hosts)")
    per_host = big["controller_cpu_s_noop"] / largest
    print(f"  controller CPU per host    {per_host:7.2f} CPU-s  (target <= {TARGET_CONTROLLER_PER_HOST})")
    ratio = big["first_s"] / big["floor_first_s"] if big["floor_first_s"] else float("nan")
    print(f"  first run / CPU floor      {ratio:7.2f}        (target <= {TARGET_FIRST_OVER_FLOOR})")
    if "node_add" in figures and "1" in hosts:
        node_ratio = figures["node_add"]["s"] / hosts["1"]["first_s"]
        print(
            f"  node add / 1-host first    {node_ratio:7.2f}        (target <= {TARGET_NODE_ADD});"
            f" other hosts changed: {figures['node_add']['other_hosts_changed']} (target 0)"
        )


if __name__ == "__main__":
    sys.exit(main())
