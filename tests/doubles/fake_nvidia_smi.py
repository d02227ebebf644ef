#!/usr/bin/env python3
"""TEST DOUBLE for nvidia-smi (lab GPU hosts only), holding pyctl to the contract of the real one (upstream: nvidia-smi of
NVIDIA driver branch 580 (580.95.05), as its manual (docs.nvidia.com/deploy/nvidia-smi, nvidia-smi(1)) describes):

- `nvidia-smi -L` lists one "GPU i: NAME (UUID: ...)" line per GPU;
- plain `nvidia-smi` prints the summary whose header says "Driver Version: X" and "CUDA Version: Y" (Y: the
  newest CUDA version the driver supports), which pyctl's preflight reads;
- `--query-gpu=FIELDS` needs `--format=csv[,noheader][,nounits]` ("csv - comma separated values (MANDATORY)");
  an unknown field, an unknown option or a query without `--format` is refused with exit code 2 ("A supplied
  argument or flag is invalid"); with the driver not loaded every call fails with exit code 9.

The host's settings (tests/doubles/install.py): gpus, driver_version, cuda_version, nvidia_smi_error.
"""

from __future__ import annotations

import sys
from typing import Any

DRIVER_VERSION = "580.95.05"
CUDA_VERSION = "13.0"
NAME = "NVIDIA H100 80GB HBM3"
INVALID = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest"
    " NVIDIA driver is installed and running."
)
FORMATS = {"csv", "noheader", "nounits"}


def answer(argv: list[str], settings: dict[str, Any]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nvidia-smi ARGV` on a host with these settings."""
    if settings.get("nvidia_smi_error"):
        return 9, "", f"{settings['nvidia_smi_error']}\n"
    gpus = int(settings.get("gpus", 0))
    driver = str(settings.get("driver_version", DRIVER_VERSION))
    cuda = str(settings.get("cuda_version", CUDA_VERSION))
    uuids = [f"GPU-pyctl-test-double-{i}" for i in range(gpus)]
    if argv in (["-L"], ["--list-gpus"]):
        return 0, "".join(f"GPU {i}: {NAME} (UUID: {u})\n" for i, u in enumerate(uuids)), ""
    if not argv:
        return 0, summary(driver, cuda, gpus), ""
    options = dict(a.split("=", 1) if "=" in a else (a, "") for a in argv)
    unknown = [o for o in options if o not in ("--query-gpu", "--format")]
    if unknown:
        return 2, "", f"ERROR: Option {unknown[0]} is not recognized. Please run 'nvidia-smi -h' for help.\n"
    if "--query-gpu" not in options or "--format" not in options:
        return 2, "", INVALID + "\n"
    fmt = options["--format"].split(",")
    if "csv" not in fmt or not set(fmt) <= FORMATS:
        return 2, "", INVALID + "\n"
    fields = options["--query-gpu"].split(",")
    values = {"driver_version": [driver] * gpus, "name": [NAME] * gpus, "uuid": uuids, "count": [str(gpus)] * gpus}
    values["index"] = [str(i) for i in range(gpus)]
    bad = [f for f in fields if f not in values]
    if bad:
        return 2, "", f'Field "{bad[0]}" is not a valid field to query.\n'
    rows = [", ".join(values[f][i] for f in fields) for i in range(gpus)]
    header = [] if "noheader" in fmt else [", ".join(fields)]
    return 0, "".join(f"{line}\n" for line in header + rows), ""


def summary(driver: str, cuda: str, gpus: int) -> str:
    """The summary table of driver 580's nvidia-smi, header and one row per GPU (processes left out)."""
    rule = "+-----------------------------------------+------------------------+----------------------+"
    lines = [
        "+-----------------------------------------------------------------------------------------+",
        f"| NVIDIA-SMI {driver:<22}Driver Version: {driver:<15}CUDA Version: {cuda:<9}|",
        rule,
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
        "|=========================================+========================+======================|",
    ]
    for i in range(gpus):
        lines.append(f"|   {i}  {NAME:<26}     On |   00000000:{i + 1:02X}:00.0 Off |                    0 |")
        lines.append("| N/A   30C    P0             70W /  700W |       0MiB /  81559MiB |      0%      Default |")
        lines.append(rule)
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.path.insert(0, "/opt/pyctl-test-doubles")
    import fake_common

    fake_common.record("nvidia-smi", sys.argv[1:])
    code, out, err = answer(sys.argv[1:], fake_common.config())
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())
