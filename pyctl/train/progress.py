"""A followed job's progress, from the payloads' JSON metrics lines in its merged log.

The lines (see payloads/ddp/README.md and payloads/distdgl/train.py):
- DDP: `PYCTL_METRICS {"event": "epoch", "epoch": k, "epochs": N, "rank": r, "loss", "test_accuracy",
  "samples_per_s" (the job's), "rank_samples_per_s" (rank r's own), "elapsed_s", ...}`, every rank;
- DistDGL: `{"event": "epoch", "epoch": k (from 0), "loss", "train_acc", ["val_acc"], "seconds",
  "rank": 0, "world_size"}`, trainer 0 only, bare JSON.
A user's `--script` that prints either shape gets the same display.

`Tracker` folds them into one line (epoch k/N, samples/s, loss, accuracy, ETA); `LiveLog` shows that
line under the scrolling log on a terminal (rich Live) and prints the log alone anywhere else.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

METRICS_PREFIX = "PYCTL_METRICS "
_BARE = '{"event": "epoch"'  # how both payloads' json.dumps of an epoch record begins
ACCURACY_KEYS = ("test_accuracy", "accuracy", "test_acc", "train_acc", "val_acc")  # first present, per line


@dataclass(frozen=True)
class Epoch:
    """One epoch record of one rank, in one shape whatever the payload."""

    epoch: int  # 1-based
    rank: int
    epochs: int | None
    loss: float | None
    accuracy: float | None
    accuracy_name: str | None
    samples_per_s: float | None  # the job's
    rank_samples_per_s: float | None  # this rank's own
    seconds: float | None  # this epoch's duration, as the payload measured it
    elapsed_s: float | None  # since the payload started (DDP)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse(line: str, workload: str = "ddp") -> Epoch | None:
    """The epoch record in a log line, whatever prefixes the merged log, launchers or torchrun put
    before it ("[host] ", "[node i] ", "[default0]:"), or None."""
    index = line.find(METRICS_PREFIX)
    if index >= 0:
        text = line[index + len(METRICS_PREFIX) :]
    else:
        index = line.find(_BARE)
        if index < 0:
            return None
        text = line[index:]
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event") != "epoch" or not isinstance(record.get("epoch"), int):
        return None
    accuracy_name = next((k for k in ACCURACY_KEYS if _number(record.get(k)) is not None), None)
    epochs = record.get("epochs")
    seconds = _number(record.get("seconds"))
    if seconds is None:
        seconds = _number(record.get("train_seconds"))
    return Epoch(
        epoch=record["epoch"] + (1 if workload == "distdgl" else 0),
        rank=int(record.get("rank") or 0),
        epochs=epochs if isinstance(epochs, int) else None,
        loss=_number(record.get("loss")),
        accuracy=_number(record.get(accuracy_name)) if accuracy_name else None,
        accuracy_name=accuracy_name,
        samples_per_s=_number(record.get("samples_per_s")),
        rank_samples_per_s=_number(record.get("rank_samples_per_s")),
        seconds=seconds,
        elapsed_s=_number(record.get("elapsed_s")),
    )


def epochs_asked(options: dict[str, Any]) -> int | None:
    """--epochs from a job record's options (the payload's arguments), when pyctl passed it."""
    found = None
    for key in ("payload_args", "train_args"):
        args = [str(a) for a in options.get(key) or []]
        for i, arg in enumerate(args):
            value = args[i + 1] if arg == "--epochs" and i + 1 < len(args) else arg.removeprefix("--epochs=")
            if (arg == "--epochs" or arg.startswith("--epochs=")) and value.isdigit():
                found = int(value)  # the last one wins, as in argparse
    return found


@dataclass
class Tracker:
    """The latest epoch of a job (rank 0's view) and what that says about the time left."""

    job_id: str
    workload: str = "ddp"
    epochs: int | None = None
    latest: Epoch | None = None
    durations: dict[int, float] = field(default_factory=dict)  # epoch -> seconds, rank 0
    _last_elapsed: float | None = None

    def feed(self, line: str) -> Epoch | None:
        epoch = parse(line, self.workload)
        if epoch is None:
            return None
        if epoch.epochs:
            self.epochs = epoch.epochs
        if epoch.rank == 0 and (self.latest is None or epoch.epoch >= self.latest.epoch):
            if epoch.elapsed_s is not None and self._last_elapsed is not None and epoch.elapsed_s > self._last_elapsed:
                self.durations[epoch.epoch] = epoch.elapsed_s - self._last_elapsed
            elif epoch.elapsed_s is not None and self._last_elapsed is None and epoch.epoch == 1:
                self.durations[epoch.epoch] = epoch.elapsed_s
            elif epoch.seconds is not None:
                self.durations[epoch.epoch] = epoch.seconds
            self._last_elapsed = epoch.elapsed_s
            self.latest = epoch
        return epoch

    def eta_s(self) -> float | None:
        if self.latest is None or not self.epochs or not self.durations:
            return None
        per_epoch = sum(self.durations.values()) / len(self.durations)
        return max(0, self.epochs - self.latest.epoch) * per_epoch

    def line(self) -> str:
        if self.latest is None:
            return f"{self.job_id}: waiting for the first epoch"
        e = self.latest
        total = f"/{self.epochs}" if self.epochs else ""
        parts = [f"{self.job_id}: epoch {e.epoch}{total}"]
        parts.append(f"{e.samples_per_s:,.0f} samples/s" if e.samples_per_s is not None else "- samples/s")
        if e.loss is not None:
            parts.append(f"loss {e.loss:.4f}")
        if e.accuracy is not None:
            parts.append(f"accuracy {e.accuracy:.4f}")
        eta = self.eta_s()
        parts.append(f"ETA {_clock(eta)}" if eta is not None else "ETA -")
        return " | ".join(parts)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LiveLog:
    """The merged log, printed line by line; on a terminal, the progress line stays below it."""

    def __init__(self, tracker: Tracker, console: Console, plain_write: Any) -> None:
        self.tracker = tracker
        self.console = console
        self.plain_write = plain_write  # how lines go out when not on a terminal (as before)
        self.live: Any = None
        self._shown = 0.0

    def __enter__(self) -> LiveLog:
        if self.console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            self.live = Live(Text(self.tracker.line()), console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self._refresh(force=True)
            self.live.stop()
            self.live = None

    def write(self, line: str) -> None:
        """One line of the merged log."""
        if self.live is None:
            self.plain_write(line)
            return
        changed = self.tracker.feed(line) is not None
        self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._refresh(force=changed)

    def _refresh(self, force: bool = False) -> None:
        from rich.text import Text

        now = time.monotonic()
        if force or now - self._shown > 0.1:
            self._shown = now
            self.live.update(Text(self.tracker.line(), style="bold"), refresh=True)
