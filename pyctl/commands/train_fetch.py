"""`pyctl train fetch JOB DIR`: parse, call pyctl.train.fetch, present."""

from __future__ import annotations

import sys
from pathlib import Path

from pyctl import console
from pyctl.config import load_settings
from pyctl.errors import ExitCode, UsageError
from pyctl.train.jobs import JobStore


def run_fetch(name: str, dest: Path) -> int:
    from pyctl.train import fetch

    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder", hint="name a folder (it is made when missing)")
    store = JobStore(load_settings())
    record = store.load(store.resolve(name))
    done = fetch.fetch_job(record, dest)
    names = ", ".join(sorted(done.files))
    console.err().print(
        f"pyctl train: job {record.id} ({record.state}): {names} from {done.where} into {dest} "
        f"(checkpoint sha256 {done.sha256[:16]}... verified)",
        markup=False,
    )
    for path in done.files.values():
        sys.stdout.write(f"{path}\n")
    return ExitCode.OK
