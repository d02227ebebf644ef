"""Merged job logs: many nodes' byte streams into one file, line by line, each line prefixed.

`MergedLog` is written by several reader threads at once (one per host or pod); every complete line
is written whole, so lines of different nodes never mix. `follow` tails such a file for a reader in
another process (`pyctl train logs --follow`, `pyctl train ddp --follow`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

SUMMARY_PREFIX = "PYCTL_SUMMARY "
ERROR_PREFIX = "PYCTL_ERROR "  # a node names why it failed (one line); the job's message quotes the first


class MergedLog:
    """An append-only log file shared by several sources; each source gets a `LineSplitter`."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[bytes] = path.open("ab", buffering=0)
        self._echo = echo

    def write_line(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8", errors="replace")
        with self._lock:
            self._file.write(data)
            if self._echo is not None:
                self._echo(line.rstrip("\n"))

    def source(self, prefix: str, on_line: Callable[[str], None] | None = None) -> LineSplitter:
        return LineSplitter(self, prefix, on_line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


class LineSplitter:
    """Turns chunks of bytes from one node into prefixed lines of the merged log."""

    def __init__(self, log: MergedLog, prefix: str, on_line: Callable[[str], None] | None) -> None:
        self.log = log
        self.prefix = prefix
        self.on_line = on_line
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            self._emit(raw)
        if len(self._buffer) > 65536:  # a very long line without newline: flush it in pieces
            self._emit(self._buffer)
            self._buffer = b""

    def flush(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = b""

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.log.write_line(f"{self.prefix}{text}")
        if self.on_line is not None:
            self.on_line(text)


def parse_summary(line: str) -> dict[str, Any] | None:
    """The payload's summary object from a (possibly prefixed) log line, or None."""
    index = line.find(SUMMARY_PREFIX)
    if index < 0:
        return None
    try:
        value = json.loads(line[index + len(SUMMARY_PREFIX) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def follow(path: Path, done: Callable[[], bool], poll: float = 0.25, start: int = 0) -> Iterator[str]:
    """Yield lines of `path` as they are appended, until `done()` is true and the file is read to its end."""
    position = start
    pending = b""
    while True:
        finished = done()
        try:
            with path.open("rb") as handle:
                handle.seek(position)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        if data:
            position += len(data)
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                yield raw.decode("utf-8", errors="replace")
            continue
        if finished:
            if pending:
                yield pending.decode("utf-8", errors="replace")
            return
        time.sleep(poll)
