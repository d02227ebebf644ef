"""The DDP payload's checkpoints: written atomically by global rank 0 (temp file, fsync, os.replace),
with a sha256 sidecar written the same way, so a reader sees a whole file and can verify it.

train.py imports this module from its own folder. Everything in a checkpoint loads with
torch.load(weights_only=True): RNG states are kept as tensors and plain values.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so torch.load(weights_only=True) can read them back."""
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss_next"]))


def temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def checksum_path(path: Path) -> Path:
    """The sidecar holding the checkpoint's sha256, in `sha256sum` format (`sha256sum -c` reads it)."""
    return path.with_name(f"{path.name}.sha256")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """write() into a temp file beside path, fsync it, os.replace it over path; returns path."""
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: dict[str, Any], path: Path) -> str:
    """torch.save to a temp file in the same folder, fsync it, os.replace it over path; then the same for
    its sha256 sidecar (<name>.sha256), and an fsync of the folder. Returns the sha256.

    A reader that finds the two disagreeing caught the moment between the two renames: it reads again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda stream: torch.save(obj, stream))
    digest = sha256_of(path)
    line = f"{digest}  {path.name}\n".encode()
    _atomic_write(checksum_path(path), lambda stream: stream.write(line))
    folder_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return digest


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Temp files a killed rank 0 left mid-write (a SIGKILL skips every cleanup)."""
    if not path.parent.is_dir():
        return []
    prefixes = (temp_prefix(path), temp_prefix(checksum_path(path)))
    stale = sorted(leftover for prefix in prefixes for leftover in path.parent.glob(f"{prefix}*"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale
