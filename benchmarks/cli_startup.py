"""`pyctl --help` time divided by `ansible-playbook --version` time, measured in the same run.

    .venv/bin/python benchmarks/cli_startup.py [--runs 15]

Target: ratio <= 0.5 (pyctl's help must be instant: heavy modules are imported lazily).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, interleaved

TARGET = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    times = interleaved(
        {
            "pyctl --help": [str(bin_dir / "pyctl"), "--help"],
            "ansible-playbook --version": [str(bin_dir / "ansible-playbook"), "--version"],
        },
        args.runs,
    )
    for name, samples in times.items():
        print(describe(name, samples))
    ratio = statistics.median(times["pyctl --help"]) / statistics.median(times["ansible-playbook --version"])
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"ratio pyctl --help / ansible-playbook --version = {ratio:.3f} (target <= {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
