"""Live progress of an Ansible run, built from ansible-runner events.

`RunState` folds events into what a user wants to know (phase, per-host counts and current task,
failures). Views render it: `LiveView` (rich, on a terminal) redraws one row per host; `PlainView`
(CI, pipes) prints one line per task result. Both end with the same recap table.
Play names follow the convention "<phase> | <what the play does>", which is how the phase is known.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pyctl.hints import hint_for

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
    "runner_on_async_failed": "failed",
    "runner_on_async_ok": "ok",
}
_MESSAGE_LIMIT = 400


@dataclass
class HostState:
    name: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    task: str = ""

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "ok"


@dataclass(frozen=True)
class Failure:
    host: str
    phase: str
    task: str
    message: str
    unreachable: bool
    hint: str | None


@dataclass
class RunState:
    """Everything the views show, folded from the event stream."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    phase: str = ""
    play: str = ""
    task: str = ""
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, dict[str, int]] | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    last_message: str = ""  # of the latest failed, unreachable or ignored result

    def host(self, name: str) -> HostState:
        if name not in self.hosts:
            self.hosts[name] = HostState(name)
        return self.hosts[name]

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def apply(self, event: dict[str, Any]) -> tuple[str, HostState, str] | None:
        """Fold one event in; return (status, host, task) when it is a task result."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play") or data.get("name") or "")
            self.phase = phase_of(self.play)
            return None
        if kind == "playbook_on_task_start":
            self.task = str(data.get("task") or data.get("name") or "")
            return None
        if kind == "runner_on_start":
            self.host(str(data.get("host"))).task = str(data.get("task") or self.task)
            return None
        if kind == "playbook_on_stats":
            self.stats = _stats(data)
            for name, counts in self.stats.items():
                host = self.host(name)
                for key, value in counts.items():
                    setattr(host, key, value)
            self.finished = time.monotonic()
            return None
        status = _RESULT_EVENTS.get(kind)
        if status is None or "host" not in data:
            return None
        host = self.host(str(data["host"]))
        task = str(data.get("task") or self.task)
        result = data.get("res") or {}
        ignored = bool(data.get("ignore_errors"))
        if status == "ok":
            host.ok += 1
            if result.get("changed") or _censored_change(event, result):
                host.changed += 1
                status = "changed"
        elif status == "skipped":
            host.skipped += 1
        elif status == "failed" and ignored:
            host.ignored += 1
            status = "ignored"
            self.last_message = failure_message(result)
        elif status == "failed":
            host.failed += 1
            self._record_failure(host.name, task, result, unreachable=False)
        elif status == "unreachable":
            host.unreachable += 1
            self._record_failure(host.name, task, result, unreachable=True)
        host.task = task
        return status, host, task

    def _record_failure(self, host: str, task: str, result: dict[str, Any], unreachable: bool) -> None:
        message = failure_message(result)
        self.last_message = message
        self.failures.append(Failure(host, self.phase, task, message, unreachable, hint_for(message)))

    @property
    def failed_hosts(self) -> list[str]:
        return sorted({f.host for f in self.failures if not f.unreachable})

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted({f.host for f in self.failures if f.unreachable})


def _censored_change(event: dict[str, Any], result: dict[str, Any]) -> bool:
    """A no_log result is censored down to one key; Ansible's own display line still says 'changed:'."""
    return "censored" in result and str(event.get("stdout", "")).lstrip().startswith("changed:")


def phase_of(play: str) -> str:
    """'Prepare nodes | Load kernel modules' -> 'prepare_nodes' (play names carry their phase)."""
    if " | " not in play:
        return ""
    return play.split(" | ", 1)[0].strip().lower().replace(" ", "_")


def _stats(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    keys = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "dark": "unreachable",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    hosts: dict[str, dict[str, int]] = {}
    for source, target in keys.items():
        for host, count in (data.get(source) or {}).items():
            hosts.setdefault(host, dict.fromkeys(keys.values(), 0))[target] = int(count)
    return hosts


def failure_message(result: dict[str, Any]) -> str:
    """The most useful single line(s) from a failed module result, trimmed."""
    parts = []
    for key in ("msg", "stderr", "module_stderr", "stdout", "module_stdout", "reason"):
        value = result.get(key)
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
        if parts and key == "stderr":
            break
    if not parts and isinstance(result.get("results"), list):
        for item in result["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return failure_message(item)
    message = " | ".join(parts) or "failed (no message)"
    message = " ".join(message.split())
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."


# --- views --------------------------------------------------------------------------------------


class PlainView:
    """One line per task result: for CI logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._phase = ""

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()

    def update(self, state: RunState, outcome: tuple[str, HostState, str] | None) -> None:
        if state.phase != self._phase:
            self._phase = state.phase
            self.stream.write(f"== phase {state.phase}\n")
        if outcome is None:
            return
        status, host, task = outcome
        line = f"{_clock(state.elapsed)} {status:<11} {host.name:<16} {task}"
        if status in ("failed", "unreachable", "ignored"):
            line += f": {state.last_message}"
        self.stream.write(line + "\n")
        self.stream.flush()


class LiveView:
    """A rich live table: phase, one row per host with counts and current task, elapsed time."""

    def __init__(self, console: Console, state: RunState) -> None:
        from rich.live import Live

        self.state = state
        self._live = Live(get_renderable=self._render, console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, state: RunState, outcome: tuple[str, HostState, str] | None) -> None:
        self.state = state

    def _render(self) -> RenderableType:
        from rich.table import Table

        state = self.state
        table = Table(
            title=f"phase: {state.phase or 'starting'}   elapsed: {_clock(state.elapsed)}",
            title_justify="left",
            expand=False,
        )
        for column in ("host", "ok", "changed", "failed", "unreachable", "task"):
            table.add_column(column, justify="right" if column not in ("host", "task") else "left")
        for host in state.hosts.values():
            style = {"failed": "red", "unreachable": "magenta"}.get(host.status, "")
            table.add_row(
                host.name,
                str(host.ok),
                str(host.changed),
                str(host.failed),
                str(host.unreachable),
                host.task[:70],
                style=style,
            )
        return table


def recap_table(state: RunState) -> RenderableType:
    from rich.table import Table

    table = Table(title=f"recap ({_clock(state.elapsed)})", title_justify="left")
    for column in ("host", "ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for host in sorted(state.hosts.values(), key=lambda h: h.name):
        table.add_row(
            host.name,
            *(
                str(getattr(host, c))
                for c in ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
            ),
            style={"failed": "red", "unreachable": "magenta"}.get(host.status, ""),
        )
    return table


def failure_lines(state: RunState, log_path: Path | None) -> list[str]:
    """For each failed or unreachable host: the task, the message, a hint; then where the full log is."""
    lines = []
    for failure in state.failures:
        what = "unreachable" if failure.unreachable else "failed"
        phase = f"[{failure.phase}] " if failure.phase else ""
        lines.append(f"{failure.host}: {what}: {phase}{failure.task}: {failure.message}")
        if failure.hint:
            lines.append(f"  hint: {failure.hint}")
    if lines and log_path is not None:
        lines.append(f"full log: {log_path}")
    return lines


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"
