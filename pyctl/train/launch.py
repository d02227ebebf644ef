"""What a job starts on each node, independent of the workload (DDP or DistDGL).

A `NodeLaunch` is one process tree on one host: an argv, extra environment, and files the host needs
in the job's own directory there (the training script, the wrapper). The token `{job_dir}` in argv,
env values and cwd stands for that directory (`$HOME/.cache/pyctl/jobs/<job id>/<host>` on the host),
which the SSH backend only knows once it is logged in.

DDP makes one NodeLaunch per host running torchrun; DistDGL one per machine running the start-up step
(`distdgl_startup.py`, which ends in the payload's `launch.py`). The SSH backend runs both unchanged:
start, merged logs, stop of every process group.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

JOB_DIR = "{job_dir}"
REMOTE_ROOT = ".cache/pyctl/jobs"  # under the SSH user's home on each host


@dataclass(frozen=True)
class NodeLaunch:
    rank: int
    host: str  # inventory host name
    address: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = JOB_DIR
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # name in the job dir -> content

    def resolved(self, job_dir: str) -> dict[str, Any]:
        """The launch as the host wrapper reads it, with `{job_dir}` filled in."""

        def fill(text: str) -> str:
            return text.replace(JOB_DIR, job_dir)

        return {
            "argv": [fill(a) for a in self.argv],
            "env": {k: fill(v) for k, v in self.env.items()},
            "cwd": fill(self.cwd),
        }

    def shell(self, job_dir: str = "$HOME/" + REMOTE_ROOT + "/<job>/<host>") -> str:
        """The same launch as a shell command line, for `--render` and for people reading it."""
        launch = self.resolved(job_dir)
        env = [f"{k}={shlex.quote(v)}" for k, v in sorted(launch["env"].items())]
        words = " ".join(shlex.quote(a) if "$HOME" not in a else f'"{a}"' for a in launch["argv"])
        cwd = launch["cwd"]
        cd = f'cd "{cwd}"' if "$HOME" in cwd else f"cd {shlex.quote(cwd)}"
        return f"{cd} && env {' '.join(env)} {words}".replace("env  ", "env ")
