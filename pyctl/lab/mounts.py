"""Mounts under lab and image directories: find them, unmount them, and only then delete the tree.

debootstrap mounts /proc and /sys inside the tree it builds; a build killed half-way leaves them there.
Deleting such a tree without unmounting first would walk into this machine's /proc and /sys.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pyctl.lab.errors import LabSetupFailed
from pyctl.lab.processes import run


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory` in this mount namespace, deepest first."""
    root = str(directory).rstrip("/")
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) > 4:
            point = _unescape(parts[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_under(directory: Path) -> int:
    """Lazily unmount everything at or below `directory` (stacked mounts too); returns how many."""
    count = 0
    for _ in range(20):
        points = mounts_under(directory)
        if not points:
            break
        for point in points:
            if run(["umount", "-l", point], check=False, timeout=60).returncode == 0:
                count += 1
    return count


def remove_tree(directory: Path) -> None:
    """Delete `directory` after unmounting what is mounted inside it; refuse if something stays mounted."""
    if not directory.exists():
        return
    unmount_under(directory)
    left = mounts_under(directory)
    if left:
        raise LabSetupFailed(
            f"{left[0]} is still mounted: not deleting {directory}",
            hint=f"unmount it ('umount -l {left[0]}')",
        )
    shutil.rmtree(directory, ignore_errors=True)
