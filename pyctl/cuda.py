"""Which NVIDIA driver runs the payload image's CUDA build: the one table preflight, the roles and the docs use.

Upstream sources (read 2026-12):
- NVIDIA, "CUDA Compatibility", Minor Version Compatibility, Table 1 (docs.nvidia.com/deploy/cuda-compatibility):
  CUDA 13.x needs driver >= 580, CUDA 12.x >= 525, CUDA 11.x >= 450. Within a major version an
  application built with a newer minor toolkit runs on the oldest driver of that major (minor version
  compatibility), so the floor is per major version.
- PyTorch RELEASE.md, Release Compatibility Matrix, row 2.13: stable CUDA 12.6 and 13.0; the wheel on PyPI
  (and download.pytorch.org/whl/cu130) is the CUDA 13.0 build.
- nvidia-smi(1): the summary header says "Driver Version: X" and "CUDA Version: Y", Y being the newest
  CUDA version the installed driver supports; `--query-gpu=driver_version --format=csv,noheader` prints
  the driver version once per GPU.
"""

from __future__ import annotations

import re

# CUDA major version -> the oldest driver branch (the driver's major version) that runs its builds.
MIN_DRIVER_BRANCH: dict[int, int] = {11: 450, 12: 525, 13: 580}

# The CUDA build of torch in the payload image (payloads/ddp/Dockerfile, ARG TORCH_CUDA=cu130).
PAYLOAD_TORCH = "2.13.0"
PAYLOAD_CUDA = "13.0"

_DRIVER = re.compile(r"Driver Version:\s*([0-9]+(?:\.[0-9]+)*)")
_CUDA = re.compile(r"CUDA Version:\s*([0-9]+\.[0-9]+)")


def wheel_tag(cuda: str) -> str:
    """ "13.0" -> "cu130", the suffix of PyTorch's wheel index for that CUDA build."""
    major, minor = _major_minor(cuda)
    return f"cu{major}{minor}"


def min_driver_branch(cuda: str) -> int:
    """The oldest driver branch that runs a build for CUDA `cuda` ("13.0" -> 580)."""
    major, _ = _major_minor(cuda)
    if major not in MIN_DRIVER_BRANCH:
        raise ValueError(f"no driver floor is known for CUDA {cuda}: known majors {sorted(MIN_DRIVER_BRANCH)}")
    return MIN_DRIVER_BRANCH[major]


def read_summary(text: str) -> tuple[str, str]:
    """(driver version, CUDA version) from the header of plain `nvidia-smi`; '' for what is missing."""
    driver = _DRIVER.search(text)
    cuda = _CUDA.search(text)
    return (driver.group(1) if driver else "", cuda.group(1) if cuda else "")


def driver_problem(host: str, summary: str, payload_cuda: str = PAYLOAD_CUDA) -> str:
    """Why `host`'s driver cannot run a CUDA `payload_cuda` build, or '' when it can.

    `summary` is the output of plain `nvidia-smi`. Both readings must clear the floor: the driver branch,
    and the CUDA version the driver reports (its major version, by minor version compatibility).
    """
    driver, cuda = read_summary(summary)
    floor = min_driver_branch(payload_cuda)
    need = (
        f"the payload image's torch {PAYLOAD_TORCH} is a CUDA {payload_cuda} build, which needs driver branch "
        f"{floor} or newer"
    )
    if not driver or not cuda:
        return (
            f"{host}: nvidia-smi does not report a driver and CUDA version (read {driver or 'no driver'}, "
            f"{cuda or 'no CUDA version'}): {need}; check the driver with nvidia-smi"
        )
    branch = int(driver.split(".")[0])
    if branch >= floor and _major_minor(cuda)[0] >= _major_minor(payload_cuda)[0]:
        return ""
    return (
        f"{host} has NVIDIA driver {driver} (CUDA {cuda}), but {need}: install driver {floor} or newer "
        f"(Ubuntu: nvidia-headless-{floor}-server; Debian: NVIDIA's CUDA repository) and reboot, or set gpu=false"
    )


def _major_minor(cuda: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*([0-9]+)\.([0-9]+)(?:\.[0-9]+)?\s*", str(cuda))
    if not match:
        raise ValueError(f"not a CUDA version: {cuda!r} (want MAJOR.MINOR, such as 13.0)")
    return int(match.group(1)), int(match.group(2))
