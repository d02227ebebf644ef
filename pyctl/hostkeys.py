"""The ssh_trust role's record of every cluster host's names and SSH host keys, on the controller.

`<cluster dir>/ssh/host_keys.json` (0600, beside the cluster's key): {host: {"names": [...], "keys": [...]}}, written
by each ssh_trust run (roles/ssh_trust/tasks/record.yml) and read by a later run limited to other hosts (`pyctl
node add`). A record that is not such a mapping would stop the role in a template error; `check_record` refuses it
first, naming the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyctl.errors import UsageError

RECORD = Path("ssh") / "host_keys.json"


def record_path(cluster_dir: Path) -> Path:
    return cluster_dir / RECORD


def check_record(cluster_dir: Path, inventory_path: Path | str) -> None:
    """Raise UsageError when the record exists but is not {host: {"names": [str], "keys": [str]}}."""
    path = record_path(cluster_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        wrong = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            wrong = f"is not valid JSON ({exc})"
        else:
            wrong = _shape_problem(data)
    if wrong:
        raise UsageError(
            f"{path}, pyctl's record of the cluster hosts' SSH host keys, {wrong}",
            hint=f"delete it and re-run 'pyctl bootstrap -i {inventory_path} --phases ssh_trust' on all hosts "
            "(no --limit): that run writes it again from every host's keys",
        )


def _shape_problem(data: object) -> str:
    if not isinstance(data, dict):
        return "is not a mapping of host to its names and keys"
    for host, entry in data.items():
        if not isinstance(entry, dict):
            return f"has no names and keys for {host}"
        for key in ("names", "keys"):
            value = entry.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return f"has a {key} entry for {host} that is not a list of strings"
    return ""
