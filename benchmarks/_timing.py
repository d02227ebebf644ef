"""Shared by the benchmarks: time whole commands, interleaved, and summarise."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence


def time_command(argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        output = result.stdout.decode() + result.stderr.decode()
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{output}")
    return elapsed


def interleaved(
    commands: dict[str, Sequence[str]], runs: int, env: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Run each command `runs` times, alternating, after one untimed warm-up each."""
    env = dict(os.environ if env is None else env)
    for argv in commands.values():
        time_command(argv, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(time_command(argv, env))
    return times


def paired(first: Sequence[str], second: Sequence[str], runs: int, env: dict[str, str] | None = None):
    """Time `first` and `second` back to back `runs` times, alternating which goes first, after one
    untimed warm-up each. Returns both lists of times, index i of each from the same pair, so that a
    ratio per pair cancels load that comes and goes across the whole benchmark."""
    env = dict(os.environ if env is None else env)
    time_command(first, env)
    time_command(second, env)
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            a.append(time_command(first, env))
            b.append(time_command(second, env))
        else:
            b.append(time_command(second, env))
            a.append(time_command(first, env))
    return a, b


def rotated(commands: dict[str, Sequence[str]], runs: int, env: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Like `paired` for any number of commands: round i runs them all back to back, the order rotated
    by i, after one untimed warm-up each. Index i of every list comes from the same round."""
    env = dict(os.environ if env is None else env)
    for argv in commands.values():
        time_command(argv, env)
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_command(commands[name], env))
    return times


def describe(name: str, samples: list[float]) -> str:
    return (
        f"{name:<28} median {statistics.median(samples):7.3f} s   min {min(samples):7.3f} s   "
        f"max {max(samples):7.3f} s   (n={len(samples)})"
    )
