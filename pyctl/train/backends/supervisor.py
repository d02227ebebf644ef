"""The detached supervisor of an SSH job: `python -m pyctl.train.backends.supervisor JOB_DIR`.

`pyctl train ddp --backend ssh` starts it in its own session (so it outlives the shell and the
terminal's Ctrl-C does not reach it) and returns, or follows its log. SIGTERM (from `pyctl train
cancel`) stops every host. Its own messages go to JOB_DIR/supervisor.log; the job's lines go to
JOB_DIR/output.log. Its argv holds only the job directory: nothing secret is ever on a command line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m pyctl.train.backends.supervisor JOB_DIR\n")
        return 2
    job_dir = Path(argv[1])
    from pyctl.config import Settings
    from pyctl.train.backends.sshjob import Supervisor
    from pyctl.train.jobs import JobStore

    store = JobStore(Settings(project_dir=Path(), state_dir=job_dir.parent.parent))
    job_id = job_dir.name

    def say(message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"{stamp} {job_id}: {message}\n")
        sys.stdout.flush()

    supervisor = Supervisor(store, job_id, say)
    supervisor.install_signals()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
