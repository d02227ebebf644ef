"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """A private pyctl state dir (runs, labs) for one test."""
    path = tmp_path / "state"
    monkeypatch.setenv("PYCTL_STATE_DIR", str(path))
    monkeypatch.delenv("PYCTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return path
