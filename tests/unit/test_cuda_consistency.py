"""One CUDA story: the payload image's torch build, the driver floor preflight enforces (pyctl.cuda), the driver
pyctl installs and the image the GPU smoke pods run must agree, or the acceptance gate passes while training
cannot use a GPU."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pyctl import cuda
from pyctl.train.workloads import ddp

ROOT = Path(__file__).resolve().parents[2]


def defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def test_the_payload_image_installs_the_torch_build_pyctl_cuda_names():
    dockerfile = (ROOT / "payloads" / "ddp" / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_CUDA=(\S+)$", dockerfile, re.M).group(1) == cuda.wheel_tag(cuda.PAYLOAD_CUDA)
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in dockerfile
    requirements = (ROOT / "payloads" / "ddp" / "requirements.txt").read_text()
    assert f"torch=={cuda.PAYLOAD_TORCH}" in requirements.split()


def test_preflight_checks_gpu_hosts_against_the_payloads_cuda_version():
    assert defaults("preflight")["preflight_gpu_cuda_version"] == cuda.PAYLOAD_CUDA


def test_the_driver_pyctl_installs_runs_the_payload_image():
    floor = cuda.min_driver_branch(cuda.PAYLOAD_CUDA)
    assert floor == 580
    assert int(defaults("containerd")["containerd_nvidia_driver_version"]) >= floor
    # Debian's own nvidia-driver is older, so the role refuses to install it (tasks/nvidia_driver.yml)
    debian = yaml.safe_load((ROOT / "roles" / "containerd" / "vars" / "Debian.yml").read_text())
    assert all(branch < floor for branch in debian["_containerd_nvidia_distribution_branch"].values())


def test_the_gpu_smoke_pods_run_the_payload_image_that_training_uses():
    verify = defaults("verify")
    assert verify["verify_gpu_smoke_image"] == ddp.DEFAULT_IMAGE_GPU
    script = yaml.safe_load((ROOT / "roles" / "verify" / "vars" / "main.yml").read_text())["_verify_gpu_smoke_script"]
    assert "torch.cuda.is_available()" in script and "a @ a" in script
    compile(script, "verify-gpu-smoke", "exec")
