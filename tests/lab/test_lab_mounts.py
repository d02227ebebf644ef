"""Deleting lab and image trees never walks into something mounted inside them."""

from __future__ import annotations

import subprocess

import pytest

from pyctl.lab.mounts import mounts_under, remove_tree
from tests.conftest import require_root

pytestmark = pytest.mark.lab


def test_remove_tree_unmounts_first(tmp_path):
    require_root()
    tree = tmp_path / "build with space" / "rootfs"
    (tree / "proc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    # What a killed debootstrap leaves: a bind mount of something that is not ours inside the tree.
    subprocess.run(["mount", "--bind", str(outside), str(tree / "proc")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "proc")], check=True)  # stacked
    assert mounts_under(tree.parent) == [str(tree / "proc")]

    try:
        remove_tree(tree.parent)
    finally:
        for _ in range(2):
            subprocess.run(["umount", "-l", str(tree / "proc")], check=False, capture_output=True)

    assert mounts_under(tmp_path) == []
    assert not tree.parent.exists()
    assert (outside / "precious").read_text() == "keep me"
