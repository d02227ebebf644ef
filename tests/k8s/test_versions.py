"""The one version table (roles/versions, versions_kubernetes) against everything that must agree with it: each
fact has its upstream source beside it, the pause image containerd pins is the one kubeadm of that release
expects, the pinned packages, the kubeadm test double, the default Kubernetes version and the containerd pin."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pyctl.inventory import DEFAULT_SETTINGS
from pyctl.k8s import artifacts

ROOT = Path(__file__).resolve().parents[2]
TABLE_FILE = ROOT / "roles" / "versions" / "defaults" / "main.yml"
TABLE = yaml.safe_load(TABLE_FILE.read_text())["versions_kubernetes"]
FACTS = {"patch", "cri_tools", "pause", "containerd_min", "containerd_io"}

# Upstream facts read for this table (2026-12): kubeadm v1.36's PauseVersion; Kubernetes 1.35 was the last
# release for containerd 1.x. A change to the table must change these with its source.
KUBEADM_PAUSE = {"1.36": "3.10.2"}
CONTAINERD_MIN = {"1.36": "2.0.0"}


def defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def test_every_minor_has_every_fact_and_the_patch_belongs_to_it():
    assert TABLE
    for minor, facts in TABLE.items():
        assert set(facts) == FACTS, minor
        assert re.fullmatch(re.escape(minor) + r"\.\d+", facts["patch"]), facts
        assert re.fullmatch(re.escape(minor) + r"\.\d+", facts["cri_tools"]), facts
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", facts["pause"]) and re.fullmatch(
            r"\d+\.\d+\.\d+", facts["containerd_min"]
        )


def test_each_fact_has_its_upstream_source_noted_beside_it():
    lines = TABLE_FILE.read_text().splitlines()
    for index, line in enumerate(lines):
        key = re.match(r"^\s{4}(\w+):", line)
        if key and key[1] in FACTS:
            above = []
            for previous in reversed(lines[:index]):
                if not previous.strip().startswith("#"):
                    break
                above.append(previous)
            assert re.search(r"https?://|github\.com/|\w+\.go\b|\.md\b|apt-cache", " ".join(above)), (
                f"{TABLE_FILE.name}:{index + 1}: {key[1]} has no source in the comment above it"
            )


def test_the_pinned_pause_and_containerd_floor_are_upstreams():
    for minor, pause in KUBEADM_PAUSE.items():
        assert TABLE[minor]["pause"] == pause
        assert TABLE[minor]["containerd_min"] == CONTAINERD_MIN[minor]


def test_the_default_kubernetes_version_has_an_entry_in_the_table():
    assert DEFAULT_SETTINGS["kubernetes_version"] in TABLE
    assert defaults("kubernetes")["kubernetes_version"] == DEFAULT_SETTINGS["kubernetes_version"]
    for role in ("containerd", "versions"):
        text = (ROOT / "roles" / role / "vars" / "main.yml").read_text()
        assert f"kubernetes_version | default('{DEFAULT_SETTINGS['kubernetes_version']}')" in text, role


def test_containerd_pins_the_pause_image_kubeadm_expects():
    minor = DEFAULT_SETTINGS["kubernetes_version"]
    images = {a.name for a in artifacts.collect(ROOT / "roles") if a.kind == "image" and a.role == "containerd"}
    assert images == {f"registry.k8s.io/pause:{TABLE[minor]['pause']}"}
    assert images == {"registry.k8s.io/pause:3.10.2"}


def test_the_packages_come_from_the_table():
    minor = DEFAULT_SETTINGS["kubernetes_version"]
    listed = {(a.name, a.version) for a in artifacts.collect(ROOT / "roles") if a.role == "kubernetes"}
    assert ("kubeadm", f"{TABLE[minor]['patch']}-1.1") in listed
    assert ("cri-tools", f"{TABLE[minor]['cri_tools']}-1.1") in listed


def test_each_containerd_pin_is_one_its_kubernetes_supports():
    for facts in TABLE.values():
        pinned = facts["containerd_io"].split("-")[0]
        assert tuple(map(int, pinned.split("."))) >= tuple(map(int, facts["containerd_min"].split(".")))


def test_containerd_installs_the_tables_containerd_io():
    minor = DEFAULT_SETTINGS["kubernetes_version"]
    listed = {(a.name, a.version) for a in artifacts.collect(ROOT / "roles") if a.role == "containerd"}
    assert ("containerd.io", TABLE[minor]["containerd_io"]) in listed


def test_the_kubeadm_double_reports_the_pinned_patch():
    patch = "v" + TABLE[DEFAULT_SETTINGS["kubernetes_version"]]["patch"]
    assert f'.get("version", "{patch}")' in (ROOT / "tests" / "doubles" / "fake_kubeadm.py").read_text()
    assert f'version: str = "{patch}"' in (ROOT / "tests" / "doubles" / "install.py").read_text()
