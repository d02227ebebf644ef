"""The same playbook on the same hosts: `pyctl bootstrap` time / raw `ansible-playbook` time.

    .venv/bin/python benchmarks/runner_overhead.py [--runs 11] [--nodes 3] [--inventory FILE]

Without --inventory it brings up a netns lab (`pyctl lab up --kind netns`, needs root) and takes it
down at the end. Both sides get the same Ansible settings (ansible.cfg, pipelining, ControlPersist,
forks = host count); pyctl adds inventory validation, ansible-runner's event stream, redaction, the
progress view and its own log. A third arm, the playbook through ansible-runner alone (_bare_runner.py,
pyctl's runner settings, an event handler that does nothing), tells pyctl's own cost from ansible-runner's.
Each round runs the three back to back, the order rotated from round to round; the figure is the median
of the per-round ratios (one run of a playbook on a 2-core machine varies by 10 % or more from the next,
far more than the overhead measured). Target: pyctl / ansible-playbook <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, rotated

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.05
PLAYBOOK = ROOT / "playbooks" / "preflight.yml"
BARE_RUNNER = Path(__file__).resolve().parent / "_bare_runner.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--inventory", type=Path)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    lab_name = None
    inventory = args.inventory
    if inventory is None:
        lab_name = f"bench-overhead-{os.getpid()}"
        up = subprocess.run(
            [str(bin_dir / "pyctl"), "lab", "up", "--kind", "netns", "--nodes", str(args.nodes), "--name", lab_name],
            capture_output=True,
            text=True,
            check=True,
        )
        inventory = Path(up.stdout.strip().splitlines()[-1])
    try:
        from pyctl import inventory as inv

        hosts = len(inv.load(inventory).hosts)
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
            ANSIBLE_PIPELINING="True",
            ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=15",
        )
        times = rotated(
            {
                "pyctl": [str(bin_dir / "pyctl"), "bootstrap", "-i", str(inventory), "--phases", "preflight"],
                "runner": [sys.executable, str(BARE_RUNNER), str(inventory), str(PLAYBOOK), str(hosts)],
                "raw": [str(bin_dir / "ansible-playbook"), "-i", str(inventory), "--forks", str(hosts), str(PLAYBOOK)],
            },
            args.runs,
            env=env,
        )
    finally:
        if lab_name:
            down = [str(bin_dir / "pyctl"), "lab", "down", "--name", lab_name]
            subprocess.run(down, capture_output=True, check=False)
    print(f"playbook: playbooks/preflight.yml on {hosts} host(s) ({inventory})")
    print(describe("pyctl bootstrap", times["pyctl"]))
    print(describe("ansible-runner alone", times["runner"]))
    print(describe("ansible-playbook", times["raw"]))

    def per_round(top: str, bottom: str) -> list[float]:
        return sorted(a / b for a, b in zip(times[top], times[bottom], strict=True))

    ratios = per_round("pyctl", "raw")
    ratio = statistics.median(ratios)
    print(f"per-round ratios pyctl / ansible-playbook: {' '.join(f'{x:.3f}' for x in ratios)}")
    print(f"ratio of medians: {statistics.median(times['pyctl']) / statistics.median(times['raw']):.3f}")
    own = statistics.median(per_round("pyctl", "runner"))
    runner_cost = statistics.median(per_round("runner", "raw"))
    print(f"where it goes (median per round): pyctl / ansible-runner alone {own:.3f},", end=" ")
    print(f"ansible-runner alone / ansible-playbook {runner_cost:.3f}")
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"ratio pyctl bootstrap / ansible-playbook (median per round) = {ratio:.3f} (target <= {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
