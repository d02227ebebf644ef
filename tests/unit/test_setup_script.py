"""scripts/setup's environment step: pip's own exit status decides, and a failure stops the set-up.

A failed download once left `.venv-distdgl` without torch or dgl while setup carried on (pip's status hid
behind a filter's under `|| true`), and only the DistDGL tests noticed, with tracebacks. These tests run the
script's `venv` function with a stand-in pip in a throw-away directory.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def venv_function() -> str:
    text = (REPO / "scripts" / "setup").read_text(encoding="utf-8")
    start = text.index("venv() {")
    return text[start : text.index("\n}\n", start) + 3]


def run_venv(tmp_path: Path, pip_body: str) -> subprocess.CompletedProcess:
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    pip = env_dir / "bin" / "pip"
    pip.write_text("#!/bin/sh\n" + textwrap.dedent(pip_body), encoding="utf-8")
    pip.chmod(0o755)
    (env_dir / "bin" / "python").symlink_to("/bin/true")
    (tmp_path / "req.txt").write_text("somepackage==1.0\n", encoding="utf-8")
    script = f"set -euo pipefail\nsleep() {{ :; }}\n{venv_function()}\nvenv env python3 req.txt\necho SETUP-WENT-ON\n"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "COUNT": str(tmp_path / "count")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_pip_that_keeps_failing_stops_setup_with_one_clear_line_and_no_stamp(tmp_path):
    result = run_venv(tmp_path, 'echo x >> "$COUNT"; echo "ERROR: No space left on device"; exit 1\n')
    assert result.returncode == 1
    assert "SETUP-WENT-ON" not in result.stdout
    assert (tmp_path / "count").read_text().count("x") == 3  # three tries
    last = result.stderr.strip().splitlines()[-1]
    assert "pip failed 3 times installing into env" in last and "run scripts/setup again" in last
    assert "No space left on device" in result.stderr  # what pip said is shown
    assert not list((tmp_path / "env").glob(".pyctl-installed/*"))  # the next run installs again
    assert (tmp_path / "env" / "pyctl-pip.log").is_file()


def test_a_pip_that_fails_once_is_tried_again_and_the_environment_is_stamped(tmp_path):
    body = """\
        echo x >> "$COUNT"
        [ "$(wc -l < "$COUNT")" -ge 2 ] && exit 0
        echo "ERROR: Read timed out"; exit 1
        """
    result = run_venv(tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert "SETUP-WENT-ON" in result.stdout
    assert "try 1 of 3" in result.stderr
    assert len(list((tmp_path / "env").glob(".pyctl-installed/req.txt-*"))) == 1
    assert not (tmp_path / "env" / "pyctl-pip.log").exists()
