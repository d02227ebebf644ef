"""containerd_from_toml: parse TOML text (the output of `containerd config dump`) on the controller."""

from __future__ import annotations

import tomllib

from ansible.errors import AnsibleFilterError


def containerd_from_toml(text: str) -> dict:
    try:
        return tomllib.loads(str(text))
    except tomllib.TOMLDecodeError as exc:
        raise AnsibleFilterError(f"containerd_from_toml: not valid TOML: {exc}") from exc


class FilterModule:
    def filters(self) -> dict:
        return {"containerd_from_toml": containerd_from_toml}
