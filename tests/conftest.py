"""Fixtures shared by every test directory."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Golden files are compared, never rewritten by a test run; a CI run that sets the old update switch
    (PYCTL_UPDATE_GOLDEN) is refused before any test runs, so it cannot believe it regenerated anything."""
    if os.environ.get("CI") and os.environ.get("PYCTL_UPDATE_GOLDEN"):
        raise pytest.UsageError(
            "PYCTL_UPDATE_GOLDEN is set in CI: tests never rewrite golden files; unset it, and regenerate them "
            "with python tests/tools/render_goldens.py outside CI"
        )


# --- the lab pass in two processes ------------------------------------------------------------------
# scripts/test runs the lab tests as two pytest processes side by side, `--lab-group vm` and `--lab-group hosts`,
# each in collection order. "vm" holds the tests whose time goes mostly to one QEMU VM under TCG (one core, while
# their controller waits): the whole-bootstrap module and the roles' Molecule and container-host tests (they share
# tests/roles' session labs). "hosts" holds the rest (netns and container hosts, the controller's Ansible, the
# payloads), which keep the other core busy. A session lab is only shared inside one group. (pytest-xdist's
# `--dist loadgroup` would do this in one command, but xdist 3.8 renames tests through an attribute pytest 9.2 no
# longer reads, so its groups are ignored and a module's tests, with their module fixtures, land on both workers.)
VM_GROUP_PATHS = (
    "tests/k8s/test_full_bootstrap.py",
    "tests/roles/test_molecule.py",
    "tests/roles/test_container_hosts.py",
)
LAB_GROUPS = ("vm", "hosts")


def lab_group(nodeid: str) -> str:
    return "vm" if nodeid.split("::", 1)[0] in VM_GROUP_PATHS else "hosts"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lab-group",
        choices=LAB_GROUPS,
        default=None,
        help="only the tests of this group (tests/conftest.py, lab_group): scripts/test runs the two side by side",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    group = config.getoption("--lab-group")
    if group is None:
        return
    keep = [item for item in items if lab_group(item.nodeid) == group]
    dropped = [item for item in items if lab_group(item.nodeid) != group]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """A private pyctl state dir (runs, labs) for one test."""
    path = tmp_path / "state"
    monkeypatch.setenv("PYCTL_STATE_DIR", str(path))
    monkeypatch.delenv("PYCTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return path


# --- labs --------------------------------------------------------------------------------------------
# Shared fixtures. `lab` and `session_lab` give tests real multi-host labs (see pyctl.lab).
#
#     def test_something(lab):
#         my_lab = lab(nodes=2, kind="netns")          # a pyctl.lab.Lab, taken down after the test
#         my_lab.ssh("node2", "hostname").stdout
#
#     def test_role(session_lab):
#         vms = session_lab(nodes=2, kind="vm")        # one lab per shape, shared by the whole session
#         mixed = session_lab(nodes=3, kind="mixed", os="debian-13")  # node1 a VM, node2..3 container hosts
#
# Both need root (mark such tests `@pytest.mark.lab`, and VM ones also `slow`). Lab names are unique per
# test run, so parallel runs and other engineers' labs on the same machine do not collide; the image cache
# (settings.state_dir/cache) is shared, so the root filesystem is built once.

_counter = itertools.count(1)


def unique_lab_name(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}-{next(_counter)}"


def require_root(reason: str = "lab tests need root (network namespaces)") -> None:
    """Skip a test that needs root when not root; where CI is set, fail instead: a CI run that skips the lab
    tests would pass without having run them. Every root-only test goes through here."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, but this CI run is not root: run the suite as root (CI must not skip it)")
        pytest.skip(reason)


class _Labs:
    """Creates labs and remembers every name it tried, so teardown removes even half-made ones."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []

    def make(self, nodes: int = 2, kind: str = "netns", gpu_nodes: int = 0, name: str | None = None, **extra):
        from pyctl.lab import LabSpec, up

        require_root()
        name = name or unique_lab_name(self.prefix)
        self.names.append(name)
        return up(LabSpec(name=name, nodes=nodes, kind=kind, gpu_nodes=gpu_nodes, **extra)).lab

    def close(self) -> None:
        """Take every lab down, then check that nothing of it is left (so every test is a leak test)."""
        from pyctl.lab import down

        leaks = []
        for name in reversed(self.names):
            down(name)
            leaks += lab_leftovers(name)
        assert not leaks, f"lab teardown left: {leaks}"


def lab_leftovers(name: str) -> list[str]:
    """What of lab `name` still exists, whatever kinds its hosts were: namespaces, processes naming its
    directory, mounts under it, container hosts' cgroups and nspawn propagation directories."""
    from pathlib import Path

    from pyctl.config import load_settings
    from pyctl.lab import cgroups, container, network, processes

    directory = load_settings().labs_dir / name
    found = [f"namespace {ns}" for ns in network.lab_namespaces(name)]
    found += [f"cgroup {path}" for path in cgroups.lab_paths(name) if path.exists()]
    if container.PROPAGATE_DIR.is_dir():
        found += [f"nspawn {p}" for p in container.PROPAGATE_DIR.glob(f"pyctl-{name}-node*")]
    found += [f"process {pid}" for pid in processes.pids_mentioning(str(directory))]
    mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    found += [f"mount under {directory}" for line in mounts.splitlines() if f" {directory}/" in line]
    if directory.exists():
        found.append(f"directory {directory}")
    return found


@pytest.fixture
def lab_name() -> Callable[[str], str]:
    """unique_lab_name(prefix): a lab name no other test or run uses, for tests that manage labs."""
    return unique_lab_name


@pytest.fixture
def lab() -> Iterator[Callable[..., object]]:
    """Factory: lab(nodes=2, kind="netns", gpu_nodes=0) -> pyctl.lab.Lab, each taken down afterwards."""
    labs = _Labs("t")
    try:
        yield labs.make
    finally:
        labs.close()


@pytest.fixture(scope="session")
def session_lab() -> Iterator[Callable[..., object]]:
    """Factory shared by the session: one lab per shape (kind, nodes, gpu_nodes, os...), made on first use."""
    labs = _Labs("s")
    made: dict[tuple, object] = {}

    def get(nodes: int = 2, kind: str = "vm", gpu_nodes: int = 0, **extra):
        key = (kind, nodes, gpu_nodes, *sorted(extra.items()))
        if key not in made:
            try:
                made[key] = labs.make(nodes=nodes, kind=kind, gpu_nodes=gpu_nodes, **extra)
            except Exception as exc:  # remembered: the next test sharing this lab fails at once, not slowly
                made[key] = exc
                raise
        if isinstance(made[key], Exception):
            pytest.fail(f"the shared {kind} lab could not be made: {made[key]}")
        return made[key]

    try:
        yield get
    finally:
        labs.close()


def recap(output: str) -> dict[str, list[int]]:
    """The recap table of `pyctl bootstrap`'s output: host -> [ok, changed, failed, unreachable, skipped, rescued,
    ignored]."""
    import re

    rows = {}
    for line in output.split("recap", 1)[1].splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 8 and cells[1].isdigit():
            rows[cells[0]] = [int(c) for c in cells[1:]]
    return rows


def wait_for(condition, seconds: float = 30, interval: float = 0.2) -> bool:
    """Poll `condition()` until it is truthy or `seconds` pass; the last answer (tests assert on it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
