"""What `nvidia-smi -L` says about a host: one line per GPU ("GPU 0: NVIDIA H100 (UUID: GPU-...)")."""

from __future__ import annotations

import re

_GPU_LINE = re.compile(r"^GPU \d+: ")


def count(nvidia_smi_l: str) -> int:
    """The number of GPUs `nvidia-smi -L` lists. MIG devices (indented "MIG ..." lines) are not GPUs."""
    return sum(1 for line in nvidia_smi_l.splitlines() if _GPU_LINE.match(line))
