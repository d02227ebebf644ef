"""`pyctl train ddp --kind trainjob / --queue / --runtime / --with-runtime` and `distdgl --queue` in-process:
bad input is one line and exit 2 before anything starts; `--render` writes what would be submitted."""

from __future__ import annotations

import pytest
import yaml

from pyctl import cli
from tests.train.test_cli import INVENTORY, _fails


@pytest.fixture
def inventory(tmp_path, state_dir):
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--kind", "trainjob", "--backend", "ssh"], "--kind trainjob needs --backend k8s"),
        (["--queue", "Team_A"], "--queue 'Team_A' is not a LocalQueue name"),
        (["--queue", "q", "--kind", "pytorchjob"], "--queue with --kind pytorchjob is not supported"),
        (["--queue", "q", "--backend", "ssh"], "--queue is for --backend k8s"),
        (["--runtime", "mine"], "--runtime and --with-runtime are for --kind trainjob"),
        (["--with-runtime"], "--runtime and --with-runtime are for --kind trainjob"),
        (
            ["--kind", "trainjob", "--with-runtime", "--runtime", "torch-distributed"],
            "--with-runtime would replace Kubeflow Trainer's own torch-distributed runtime",
        ),
        (["--kind", "trainjob", "--master-port", "30000"], "Kubeflow Trainer always uses port 29500"),
        (
            ["--kind", "trainjob", "--nodes", "2", "--max-restarts", "1"],
            "--max-restarts with --kind trainjob on more than one node is not supported",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, inventory, state_dir, args, expected):
    line = _fails(capsys, "train", "ddp", "-i", str(inventory), *args)
    assert expected in line
    assert not (state_dir / "jobs").exists(), "nothing was recorded"


def test_distdgl_queue_needs_kubernetes(capsys, inventory):
    line = _fails(capsys, "train", "distdgl", "-i", str(inventory), "--backend", "ssh", "--queue", "q")
    assert "--queue is for --backend k8s" in line


def test_render_of_a_trainjob_with_pyctls_runtime_through_a_queue(capsys, inventory, tmp_path):
    out = tmp_path / "render"
    args = ["--kind", "trainjob", "--with-runtime", "--queue", "team-a", "--nodes", "2", "--render", str(out)]
    assert cli.main(["train", "ddp", "-i", str(inventory), *args]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clustertrainingruntime.yaml", "trainjob.yaml"]
    trainjob = yaml.safe_load((out / "trainjob.yaml").read_text())
    assert trainjob["spec"]["runtimeRef"]["name"] == "pyctl-torch"
    assert trainjob["spec"]["suspend"] is True
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_render_of_distdgl_through_a_queue(capsys, inventory, tmp_path):
    out = tmp_path / "render"
    assert cli.main(["train", "distdgl", "-i", str(inventory), "--queue", "team-a", "--render", str(out)]) == 0
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert "Gang scheduling" in (out / "job.yaml").read_text()
