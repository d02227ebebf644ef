"""`pyctl train setup` refuses an interpreter older than the payload's pins need: the role's minimum
(`_train_env_python_min`) is the oldest Python every pin of payloads/ddp/requirements.txt accepts,
read from the pins' own Requires-Python (their metadata in the DDP environment, .venv-ddp, made from
that file). Ubuntu 22.04's python3 (3.10) is below it; Debian 12 (3.11), Ubuntu 24.04 (3.12) and
Debian 13 (3.13) are not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.train.conftest import DDP_PYTHON, need_ddp_python

REPO = Path(__file__).resolve().parents[2]
SUPPORTED_PYTHONS = {"Ubuntu 22.04": "3.10", "Debian 12": "3.11", "Ubuntu 24.04": "3.12", "Debian 13": "3.13"}
PROBE = """
import json, sys
from importlib.metadata import distribution
out = {}
for name in sys.argv[1:]:
    d = distribution(name)
    out[name] = [d.version, d.metadata.get("Requires-Python") or ""]
print(json.dumps(out))
"""


def _pins() -> dict[str, str]:
    pins = {}
    for raw in (REPO / "payloads" / "ddp" / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def _role_minimum() -> str:
    data = yaml.safe_load((REPO / "roles" / "train_env" / "vars" / "main.yml").read_text())
    return str(data["_train_env_python_min"])


def test_the_roles_minimum_python_is_the_oldest_every_pin_accepts():
    need_ddp_python()
    pins = _pins()
    result = subprocess.run(
        [str(DDP_PYTHON), "-c", PROBE, *pins], capture_output=True, text=True, check=True, timeout=120
    )
    installed = json.loads(result.stdout)
    for name, version in pins.items():
        have = Version(installed[name][0]).public  # torch's local part (+cpu) names the build, not the release
        assert have == Version(version).public, f"{DDP_PYTHON} has {name} {installed[name][0]}, the pin is {version}"
    specs = [SpecifierSet(requires) for _, requires in installed.values()]
    candidates = [Version(f"3.{minor}") for minor in range(8, 20)]
    oldest = next(v for v in candidates if all(v in spec for spec in specs))
    assert _role_minimum() == str(oldest), (
        f"the pins accept Python {oldest} and newer, the role's preflight checks {_role_minimum()}"
    )


def test_the_preflight_refuses_ubuntu_2204s_python_and_accepts_the_others():
    minimum = Version(_role_minimum())
    refused = sorted(os for os, python in SUPPORTED_PYTHONS.items() if Version(python) < minimum)
    assert refused == ["Ubuntu 22.04"], refused
    preflight = (REPO / "roles" / "train_env" / "tasks" / "preflight.yml").read_text()
    assert "version(_train_env_python_min, '>=')" in preflight, "the check uses the one minimum"
    assert "Ubuntu 22.04: apt install python3.11" in preflight and "set train_env_python" in preflight
