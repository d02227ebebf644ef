"""Render every template of pyctl's Kubernetes roles through Ansible's own templating (a local playbook
run with the roles' template tasks), for each golden scenario.

    python tests/tools/render_goldens.py          # rewrite tests/golden/<scenario>/ (review the diff!)
    python tests/tools/render_goldens.py --check  # exit 1 when a golden file is stale
    python tests/tools/render_goldens.py --train  # only the `pyctl train` renders of
                                                  # tests/train/test_trainjob_manifests.py (no root needed)

Scenarios are inventories in tests/fixtures/inventories/golden-<scenario>.yml; the playbook is
tests/fixtures/playbooks/render_templates.yml. Rendering needs root (the templates set owner root).
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


def write_train_goldens(check: bool) -> list[str]:
    """The cases of tests/train/test_trainjob_manifests.py into tests/golden/train/<case>/; the stale ones."""
    sys.path.insert(0, str(ROOT))
    from tests.train.test_trainjob_manifests import CASES, render_case

    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in sorted(CASES):
            documents = {f"{name}.yaml": text for name, text in render_case(Path(tmp), case).items()}
            folder = GOLDEN / "train" / case
            old = {p.name: p.read_text() for p in folder.glob("*.yaml")} if folder.is_dir() else {}
            if old != documents:
                stale.append(f"train/{case}")
                if not check:
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir(parents=True)
                    for name, text in documents.items():
                        (folder / name).write_text(text)
    return stale


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = write_train_goldens(check)
    if "--train" in sys.argv[1:]:
        scenarios_to_render: list[str] = []
    else:
        scenarios_to_render = scenarios()
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios_to_render:
            out = render(scenario, Path(tmp) / scenario)
            golden = GOLDEN / scenario
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
