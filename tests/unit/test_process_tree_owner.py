"""One process-tree module for the training jobs (house style: a process tree has one owner that stops it).

`payloads/distdgl/proctree.py` is the only code under pyctl/train and payloads/ that walks /proc for a
process tree; pyctl's SSH host wrapper and DistDGL's launch.py both use it, and nothing uses psutil's
process API for the same job a second way. Scanned with the AST and a pattern, so the rule cannot
quietly come back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCOPE = (ROOT / "pyctl" / "train", ROOT / "payloads")
OWNER = ROOT / "payloads" / "distdgl" / "proctree.py"
USERS = (ROOT / "pyctl" / "train" / "backends" / "hostwrap.py", ROOT / "payloads" / "distdgl" / "launch.py")
# Listing /proc, or reading a process's stat/status/children: what a tree walk reads.
PROC_WALK = re.compile(
    r"""listdir\(\s*["']/proc["']\s*\)|Path\(\s*["']/proc["']\s*\)\.(iterdir|glob)|/proc/\{[^}]*\}/(stat|status|task)\b"""
)
PSUTIL_PROCESS_API = {"Process", "process_iter", "pids", "wait_procs", "pid_exists", "Popen", "STATUS_ZOMBIE"}


def sources() -> list[Path]:
    return sorted(p for folder in SCOPE for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def proc_walkers(paths: list[Path]) -> list[str]:
    return [
        f"{shown(path)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for path in paths
        for text in [path.read_text(encoding="utf-8")]
        for m in PROC_WALK.finditer(text)
    ]


def psutil_process_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "psutil":
            found += [f"{path.name}:{node.lineno}: from psutil import {a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "psutil"
            and node.attr in PSUTIL_PROCESS_API
        ):
            found.append(f"{path.name}:{node.lineno}: psutil.{node.attr}")
    return found


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_proctree_walks_proc_for_process_trees():
    walkers = proc_walkers(sources())
    others = [hit for hit in walkers if not hit.startswith(str(OWNER.relative_to(ROOT)))]
    assert not others, "process-tree code outside proctree.py (use proctree there):\n" + "\n".join(others)
    assert walkers, "the scan found nothing at all, not even proctree.py's own walk"


def test_no_job_code_reads_process_trees_through_psutil():
    found = [hit for path in sources() for hit in psutil_process_uses(path)]
    assert not found, "psutil's process API in job code (proctree.py holds the one tree reader):\n" + "\n".join(found)


def test_the_host_wrapper_and_the_distdgl_launcher_both_use_proctree():
    for path in USERS:
        assert "proctree" in imported_modules(path), f"{path.relative_to(ROOT)} does not import proctree"


def test_the_scans_find_both_old_shapes(tmp_path):
    """The scans themselves: a /proc walk (hostwrap's old reader) and psutil's children() (launch.py's)."""
    old = tmp_path / "old.py"
    old.write_text(
        "import os, psutil\n"
        "def parents():\n"
        "    for entry in os.listdir('/proc'):\n"
        "        open(f'/proc/{entry}/stat').read()\n"
        "def descendants():\n"
        "    return psutil.Process(os.getpid()).children(recursive=True)\n"
    )
    assert len(proc_walkers([old])) == 2
    assert psutil_process_uses(old) == ["old.py:6: psutil.Process"]
