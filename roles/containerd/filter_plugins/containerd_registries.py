"""containerd_registry_hosts: the hosts.toml files of the registry mirrors, from pyctl.mirrors (one source).

{{ containerd_registry_mirrors | containerd_registry_hosts(containerd_registry_config_path) }}
    {path of a hosts.toml under config_path: its content}
"""

from __future__ import annotations

import json
from typing import Any

from ansible.errors import AnsibleFilterError


def containerd_registry_hosts(registry_mirrors: Any, config_path: Any) -> dict[str, str]:
    from pyctl import mirrors

    plain = json.loads(json.dumps(registry_mirrors or {}, default=str))
    try:
        return mirrors.hosts_toml_files(plain, str(config_path))
    except ValueError as exc:
        raise AnsibleFilterError(f"containerd_registry_mirrors: {exc} (pyctl inventory check names each)") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"containerd_registry_hosts": containerd_registry_hosts}
