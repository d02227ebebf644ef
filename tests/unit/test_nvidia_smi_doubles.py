"""The nvidia-smi doubles refuse what the real nvidia-smi refuses and report a driver and CUDA version in the
form pyctl's preflight reads (pyctl.cuda), so a change that calls nvidia-smi wrongly fails here first."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyctl import cuda
from pyctl.k8s import gpus
from tests.doubles import fake_nvidia_smi

SHELL_DOUBLE = Path(__file__).resolve().parents[1] / "doubles" / "fake_nvidia_smi"


def python_double(argv: list[str], **settings) -> tuple[int, str, str]:
    return fake_nvidia_smi.answer(argv, {"gpus": 2, **settings})


def shell_double(argv: list[str], **env: str) -> tuple[int, str, str]:
    done = subprocess.run(
        ["sh", str(SHELL_DOUBLE), *argv], capture_output=True, text=True, env={**os.environ, **env}, timeout=30
    )
    return done.returncode, done.stdout, done.stderr


DOUBLES = [python_double, shell_double]


@pytest.mark.parametrize("double", DOUBLES)
def test_the_summary_reports_the_driver_and_cuda_version_preflight_reads(double):
    code, out, _ = double([])
    assert code == 0
    assert cuda.read_summary(out) == ("580.95.05", "13.0")
    assert cuda.driver_problem("gpu1", out) == ""


def test_a_host_configured_with_driver_570_is_refused_by_preflights_reading():
    code, out, _ = python_double([], driver_version="570.195.03", cuda_version="12.8")
    assert code == 0
    assert cuda.driver_problem("gpu1", out).startswith("gpu1 has NVIDIA driver 570.195.03 (CUDA 12.8)")
    _, out, _ = shell_double([], FAKE_DRIVER_VERSION="535.247.01", FAKE_CUDA_VERSION="12.2")
    assert "driver branch 580 or newer" in cuda.driver_problem("gpu1", out)


@pytest.mark.parametrize("double", DOUBLES)
def test_a_query_without_format_and_an_unknown_option_are_refused_with_exit_2(double):
    code, out, err = double(["--query-gpu=driver_version"])
    assert (code, out) == (2, "")
    assert "Invalid combination of input arguments" in err
    code, _, err = double(["--no-such-option"])
    assert code == 2 and "ERROR: Option --no-such-option is not recognized" in err
    code, _, err = double(["--query-gpu=no_such_field", "--format=csv"])
    assert code == 2 and 'Field "no_such_field" is not a valid field to query.' in err


@pytest.mark.parametrize("double", DOUBLES)
def test_a_query_with_csv_format_prints_one_row_per_gpu(double):
    assert double(["--query-gpu=driver_version", "--format=csv,noheader"]) == (0, "580.95.05\n580.95.05\n", "")
    code, out, _ = double(["--query-gpu=driver_version", "--format=csv"])
    assert code == 0 and out.splitlines()[0] == "driver_version"


@pytest.mark.parametrize("double", DOUBLES)
def test_the_gpu_list_is_what_pyctl_counts(double):
    code, out, _ = double(["-L"])
    assert code == 0 and gpus.count(out) == 2


def test_a_host_without_a_loaded_driver_fails_every_call_with_exit_9():
    code, out, err = python_double(["-L"], nvidia_smi_error="NVIDIA-SMI has failed")
    assert (code, out) == (9, "") and "NVIDIA-SMI has failed" in err
