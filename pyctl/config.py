"""Settings: flags > PYCTL_* environment > config file > defaults, resolved once into a frozen object."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pyctl.errors import UsageError

# The source tree pyctl runs from: it holds playbooks/, roles/ and payloads/.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


@dataclass(frozen=True)
class Settings:
    """Everything pyctl reads from its environment, in one place."""

    project_dir: Path
    state_dir: Path
    keep_runs: int = 20
    traceback: bool = False

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def labs_dir(self) -> Path:
        return self.state_dir / "labs"

    @property
    def playbooks_dir(self) -> Path:
        return self.project_dir / "playbooks"

    @property
    def clusters_dir(self) -> Path:
        return self.state_dir / "clusters"

    def kubeconfig(self, cluster_name: str) -> Path:
        """Where bootstrap puts the cluster's admin kubeconfig (0600), and where train and doctor read it."""
        return self.clusters_dir / cluster_name / "admin.conf"


_ENV = {"project_dir": "PYCTL_PROJECT_DIR", "state_dir": "PYCTL_STATE_DIR", "keep_runs": "PYCTL_KEEP_RUNS"}


def config_file() -> Path:
    return Path(os.environ.get("PYCTL_CONFIG") or _xdg("XDG_CONFIG_HOME", ".config") / "pyctl" / "config.toml")


def _from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise UsageError(f"config file {path} cannot be read: {exc}", hint="fix or remove it") from exc
    known = {f.name for f in fields(Settings)} - {"traceback"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"config file {path} has unknown setting(s): {', '.join(unknown)}",
            hint=f"known settings are {', '.join(sorted(known))}",
        )
    return data


def _coerce(name: str, value: Any, origin: str) -> Any:
    if name in ("project_dir", "state_dir"):
        return Path(str(value)).expanduser().resolve()
    if name == "keep_runs":
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < 1:
            raise UsageError(f"{origin}: keep_runs must be a whole number >= 1, not {value!r}")
        return number
    return value


def load_settings(**flags: Any) -> Settings:
    """Resolve settings. `flags` are command-line values; None means 'not given'."""
    values: dict[str, Any] = {
        "project_dir": _SOURCE_ROOT,
        "state_dir": _xdg("XDG_STATE_HOME", ".local/state") / "pyctl",
    }
    path = config_file()
    for name, value in _from_file(path).items():
        values[name] = _coerce(name, value, str(path))
    for name, var in _ENV.items():
        if os.environ.get(var):
            values[name] = _coerce(name, os.environ[var], var)
    for name, value in flags.items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    settings = Settings(**values)
    if not (settings.playbooks_dir / "site.yml").is_file():
        raise UsageError(
            f"pyctl's playbooks are not under {settings.project_dir}",
            hint="install pyctl from its source tree (pip install -e .) or set PYCTL_PROJECT_DIR",
        )
    return settings
