"""`pyctl bootstrap --list-artifacts`: every package, image and manifest a bootstrap pulls."""

from __future__ import annotations

import json
from pathlib import Path

from pyctl import console, inventory
from pyctl.config import load_settings
from pyctl.errors import ExitCode
from pyctl.k8s import artifacts


def run(inventory_path: Path | None, as_json: bool = False) -> int:
    settings = load_settings()
    variables: dict = {}
    source = "role defaults"
    if inventory_path is not None:
        cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
        variables = dict(cluster.control_plane.vars)
        source = str(cluster.path)
    if as_json:
        listing = artifacts.listing(settings.project_dir / "roles", variables, settings_from=source)
        console.out().print_json(json.dumps(listing))
        return ExitCode.OK
    found = artifacts.collect(settings.project_dir / "roles", variables)
    out = console.out()
    out.print(f"# everything pyctl bootstrap pulls ({len(found)} artifacts; settings from {source})", markup=False)
    for line in artifacts.lines(found):
        out.print(line, markup=False, soft_wrap=True)
    if any(variables.get(name) for name in artifacts.MIRROR_VARS):
        listing = artifacts.listing(settings.project_dir / "roles", variables, settings_from=source)
        for repository in listing["apt_repositories"]:
            if repository["mirrored"]:
                line = f"{repository['name']}: {repository['uri']} (upstream {repository['upstream']['uri']})"
                out.print(f"{'mirror':<15} {line}", markup=False, soft_wrap=True)
        registries = {i["registry"]: i["mirror"]["url"] for i in listing["images"] if i["mirror"]}
        for registry, url in sorted(registries.items()):
            out.print(f"{'mirror':<15} {registry}: {url} (containerd hosts.toml)", markup=False, soft_wrap=True)
    return ExitCode.OK
