"""Test doubles. FakeRunner replays a recorded ansible-runner event stream instead of running Ansible."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from pyctl import runner
from pyctl.config import Settings

EVENTS = Path(__file__).resolve().parent / "fixtures" / "events"


def load_events(name: str) -> list[dict[str, Any]]:
    with (EVENTS / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class FakeRunner:
    """Stands in for `pyctl.runner.run_playbook`: feeds a recording to the callback, records the request."""

    def __init__(self, recording: str, *, interrupt_after: int | None = None) -> None:
        self.events = load_events(recording)
        self.interrupt_after = interrupt_after
        self.requests: list[runner.RunRequest] = []

    def __call__(
        self,
        settings: Settings,
        request: runner.RunRequest,
        on_event: runner.EventCallback,
        cancel: threading.Event | None = None,
        run_dir: Path | None = None,
    ) -> runner.RunOutcome:
        self.requests.append(request)
        run_dir = run_dir or runner.new_run_dir(settings, request.verb)
        log = run_dir / "pyctl.log"
        status, rc, count = "successful", 0, 0
        stats = None
        for count, event in enumerate(self.events, start=1):
            if self.interrupt_after is not None and count > self.interrupt_after:
                status, rc = "canceled", 254
                break
            on_event(dict(event))
            if event.get("event") == "playbook_on_stats":
                data = event["event_data"]
                stats = {"failures": data.get("failures"), "dark": data.get("dark")}
                if data.get("failures") or data.get("dark"):
                    status, rc = "failed", 4
        log.write_text("".join(e.get("stdout", "") + "\n" for e in self.events), encoding="utf-8")
        return runner.RunOutcome(run_dir, log, status, rc, count, stats)
