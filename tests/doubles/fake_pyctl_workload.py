#!/usr/bin/env python3
"""TEST DOUBLE for `pyctl doctor --workload --json` (this repository: pyctl/cli.py, pyctl/workload/verdict.py),
for the verify role's workload task: prints the report in FAKE_WORKLOAD_REPORT (a JSON file) and exits
1 when a node is not ok or the DDP run did not pass, 0 otherwise, as pyctl does. Like pyctl it refuses,
with one `pyctl: error:` line and exit 2, a call without `doctor --workload -i FILE --json`, an
inventory that does not exist, and a --backend other than k8s or ssh. Every call's argv is appended
to FAKE_WORKLOAD_CALLS when set.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def refuse(message: str) -> int:
    sys.stderr.write(f"pyctl: error: {message}\n")
    return 2


def main(argv: list[str]) -> int:
    if os.environ.get("FAKE_WORKLOAD_CALLS"):
        with Path(os.environ["FAKE_WORKLOAD_CALLS"]).open("a", encoding="utf-8") as calls:
            calls.write(json.dumps(argv) + "\n")
    if argv[:2] != ["doctor", "--workload"] or "--json" not in argv or "-i" not in argv:
        return refuse("TEST DOUBLE: only 'doctor --workload -i FILE ... --json' is implemented")
    inventory = argv[argv.index("-i") + 1]
    if not Path(inventory).is_file():
        return refuse(f"inventory {inventory} does not exist")
    backend = argv[argv.index("--backend") + 1] if "--backend" in argv else "k8s"
    if backend not in ("k8s", "ssh"):
        return refuse(f"--backend {backend!r} is not one of ssh, k8s")
    report = json.loads(Path(os.environ["FAKE_WORKLOAD_REPORT"]).read_text(encoding="utf-8"))
    print(json.dumps(report, indent=2))
    healthy = all(n["verdict"] == "ok" for n in report["nodes"].values()) and report["ddp"]["passed"]
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
