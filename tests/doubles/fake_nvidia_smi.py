#!/usr/bin/env python3
"""TEST DOUBLE for nvidia-smi (lab GPU hosts only): `nvidia-smi -L` lists the GPUs the test configured."""

from __future__ import annotations

import sys

sys.path.insert(0, "/opt/pyctl-test-doubles")
import fake_common


def main() -> int:
    settings = fake_common.config()
    fake_common.record("nvidia-smi", sys.argv[1:])
    if settings.get("nvidia_smi_error"):
        sys.stderr.write(settings["nvidia_smi_error"] + "\n")
        return 9
    if sys.argv[1:] != ["-L"]:
        sys.stderr.write("TEST DOUBLE: only nvidia-smi -L is implemented\n")
        return 2
    for index in range(int(settings.get("gpus", 0))):
        print(f"GPU {index}: NVIDIA H100 80GB HBM3 (UUID: GPU-pyctl-test-double-{index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
