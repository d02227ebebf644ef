"""Regenerate the golden files: every template of pyctl's Kubernetes roles, rendered through Ansible's own
templating (a local playbook run with the roles' template tasks) for each golden scenario, and every
manifest `pyctl train ddp|distdgl --backend k8s` renders for the cases of tests/train/test_*manifests.py.

    python tests/tools/render_goldens.py          # rewrite tests/golden/ (review the diff!)
    python tests/tools/render_goldens.py --check  # exit 1 when a golden file is stale
    python tests/tools/render_goldens.py --train  # only the `pyctl train` renders (no root needed)

This is the only thing that writes golden files: the tests compare and never rewrite, and this tool
refuses to rewrite where CI is set (a CI run must compare what was committed).

Scenarios are inventories in tests/fixtures/inventories/golden-<scenario>.yml; the playbook is
tests/fixtures/playbooks/render_templates.yml. Rendering the roles needs root (the templates set owner root).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
INVENTORIES = ROOT / "tests" / "fixtures" / "inventories"
PLAYBOOK = ROOT / "tests" / "fixtures" / "playbooks" / "render_templates.yml"


def scenarios() -> list[str]:
    return sorted(p.stem.removeprefix("golden-") for p in INVENTORIES.glob("golden-*.yml"))


def render(scenario: str, out: Path) -> Path:
    """Render one scenario into `out` (created); raise with Ansible's output when the run fails."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(out.parent / ".ansible-tmp"),
        ANSIBLE_STDOUT_CALLBACK="default",
    )
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(INVENTORIES / f"golden-{scenario}.yml"),
            str(PLAYBOOK),
            "-e",
            f"golden_out={out}",
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rendering {scenario} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return out


def render_train(case: str, out: Path) -> Path:
    """Render one `pyctl train` golden case (tests/train/test_*manifests.py CASES) into `out`."""
    from tests.train import test_distdgl_manifests, test_manifests, test_trainjob_manifests

    work = out.parent / f".{case}-inputs"
    work.mkdir(parents=True, exist_ok=True)
    if case in test_trainjob_manifests.CASES:
        documents = test_trainjob_manifests.render_case(work, case)
    else:
        module = test_manifests if case in test_manifests.CASES else test_distdgl_manifests
        _, documents = module._render(work, case)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (out / f"{name}.yaml").write_text(text)
    return out


def train_cases() -> list[str]:
    from tests.train import test_distdgl_manifests, test_manifests, test_trainjob_manifests

    return sorted({*test_manifests.CASES, *test_distdgl_manifests.CASES, *test_trainjob_manifests.CASES})


def main() -> int:
    check = "--check" in sys.argv[1:]
    if not check and os.environ.get("CI"):
        print("render_goldens: refusing to rewrite golden files where CI is set: use --check in CI", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        roles = [] if "--train" in sys.argv[1:] else scenarios()
        jobs = [(s, GOLDEN / s, lambda s=s: render(s, Path(tmp) / s)) for s in roles]
        jobs += [(c, GOLDEN / "train" / c, lambda c=c: render_train(c, Path(tmp) / "train" / c)) for c in train_cases()]
        for scenario, golden, make in jobs:
            out = make()
            names = sorted(p.name for p in out.iterdir() if p.is_file())
            old = sorted(p.name for p in golden.iterdir()) if golden.is_dir() else []
            same = names == old and all(filecmp.cmp(out / n, golden / n, shallow=False) for n in names)
            if not same:
                stale.append(scenario)
                if not check:
                    shutil.rmtree(golden, ignore_errors=True)
                    golden.mkdir(parents=True)
                    for name in names:
                        shutil.copyfile(out / name, golden / name)
    if stale:
        verb = "stale" if check else "rewritten"
        print(f"golden renders {verb}: {', '.join(stale)}")
        return 1 if check else 0
    print("golden renders up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
