"""Rules the test suite holds itself to, so that a test cannot pass without having checked anything:
golden tests compare and never rewrite; a root-only test fails, not skips, where CI is set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest
from tests.tools import render_goldens
from tests.train import test_distdgl_manifests, test_manifests

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("module", "case"), [(test_manifests, "indexed-job"), (test_distdgl_manifests, "distdgl-samplers-k8s-1.30")]
)
def test_a_golden_test_fails_on_a_stale_golden_even_with_the_old_update_switch_set(module, case, tmp_path, monkeypatch):
    golden = tmp_path / "golden"
    (golden / case).mkdir(parents=True)
    stale = golden / case / "job.yaml"
    stale.write_text("stale: true\n")
    monkeypatch.setattr(module, "GOLDEN", golden)
    monkeypatch.setenv("PYCTL_UPDATE_GOLDEN", "1")
    with pytest.raises(AssertionError, match="differ from the golden files"):
        module.test_manifests_match_golden_files(tmp_path, case)
    assert stale.read_text() == "stale: true\n"
    assert sorted(p.name for p in (golden / case).iterdir()) == ["job.yaml"]


def test_the_golden_tool_refuses_to_rewrite_where_ci_is_set(monkeypatch, capsys):
    monkeypatch.setenv("CI", "1")
    monkeypatch.setattr(sys, "argv", ["render_goldens.py"])
    monkeypatch.setattr(render_goldens, "render", lambda *a: pytest.fail("rendered although it must refuse"))
    assert render_goldens.main() == 2
    assert "refusing to rewrite golden files where CI is set" in capsys.readouterr().err


def test_the_golden_tool_renders_the_train_cases_the_tests_compare(tmp_path):
    out = render_goldens.render_train("indexed-job", tmp_path / "indexed-job")
    golden = ROOT / "tests" / "golden" / "train" / "indexed-job"
    assert {p.name: p.read_text() for p in out.iterdir()} == {p.name: p.read_text() for p in golden.iterdir()}


def test_a_ci_run_with_the_update_switch_set_fails_before_any_test(tmp_path):
    env = dict(os.environ, CI="1", PYCTL_UPDATE_GOLDEN="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", "tests/unit/test_redact.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "PYCTL_UPDATE_GOLDEN is set in CI" in result.stdout + result.stderr


def test_a_root_only_test_fails_instead_of_skipping_where_ci_is_set(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must not skip it"):
        conftest.require_root()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest.require_root()


def test_no_test_skips_for_root_except_through_require_root():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if (path.name == "conftest.py" and path.parent.name == "tests") or "doubles" in path.parts:
            continue
        text = path.read_text()
        for match in re.finditer(r"geteuid\(\)[^\n]*\n(?:[^\n]*\n)?[^\n]*pytest\.skip|skipif\([^)]*geteuid", text):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)[:60]!r}")
    assert offenders == [], "use tests.conftest.require_root, which fails under CI"
