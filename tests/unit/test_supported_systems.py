"""The supported systems, said once per place and the same everywhere: preflight's list (what a bootstrap
accepts), every role's platforms in meta/main.yml and the README. As of 2026-12: Ubuntu 22.04, 24.04 and 26.04
LTS, Debian 12 and 13 (Debian 13 "trixie" stable since August 2025)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "main.yml").is_file())
CODENAMES = {
    ("Ubuntu", "22"): "jammy",
    ("Ubuntu", "24"): "noble",
    ("Ubuntu", "26"): "resolute",
    ("Debian", "12"): "bookworm",
    ("Debian", "13"): "trixie",
}
SUPPORTED = yaml.safe_load((ROOT / "roles" / "preflight" / "defaults" / "main.yml").read_text())[
    "preflight_supported_os"
]


def test_preflight_accepts_todays_releases():
    assert SUPPORTED == {"Ubuntu": ["22", "24", "26"], "Debian": ["12", "13"]}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_role_names_the_systems_preflight_accepts(role):
    platforms = yaml.safe_load((role / "meta" / "main.yml").read_text())["galaxy_info"]["platforms"]
    named = {(p["name"], v) for p in platforms for v in p["versions"]}
    assert named == {(os, CODENAMES[os, major]) for os, majors in SUPPORTED.items() for major in majors}, role.name


def test_the_readme_names_them():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("Ubuntu 22.04/24.04/26.04, Debian 12/13") >= 2
    assert "Ubuntu 22.04/24.04, Debian 12)" not in readme
