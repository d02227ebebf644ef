"""Record a real run's ansible-runner events as a fixture for the fake runner.

    python tests/tools/record_events.py INVENTORY PLAYBOOK OUT.jsonl [--extra key=value ...]

Runs PLAYBOOK on INVENTORY through pyctl's runner (so events are scrubbed exactly as in production)
and writes one event per line. Volatile fields (uuids, pids, times) are kept: the fake runner
replays what ansible-runner really produced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyctl import inventory, runner
from pyctl.config import load_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inventory", type=Path)
    parser.add_argument("playbook", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="extra var key=value")
    args = parser.parse_args()
    extravars = dict(item.split("=", 1) for item in args.extra)
    hosts = inventory.check(args.inventory).cluster
    count = len(hosts.hosts) if hosts else 1
    request = runner.RunRequest("record", args.playbook, args.inventory, count, extravars=extravars)
    events: list[dict] = []
    outcome = runner.run_playbook(load_settings(), request, events.append)
    with args.out.open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event, sort_keys=True) + "\n")
    print(f"{len(events)} events, status {outcome.status}, rc {outcome.rc} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
