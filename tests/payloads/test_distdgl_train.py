"""DistDGL payload: GraphSAGE in single-process (local) mode on the test graph."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("distdgl_fixtures")
from distdgl_fixtures import GRAPH_ARGS, run_payload  # noqa: E402 (after register_assert_rewrite)

pytest_plugins = ["distdgl_fixtures"]  # the distdgl_* fixtures


def test_local_graphsage_is_clearly_above_chance(local_summary):
    """4 balanced classes: chance is 0.25; the model must learn the graph and the features."""
    assert local_summary["mode"] == "local"
    assert local_summary["world_size"] == 1
    assert local_summary["epochs_run"] == 20
    assert local_summary["num_train"] == 1200 and local_summary["num_test"] == 2000
    assert local_summary["test_acc"] > 0.85, local_summary


def test_local_training_prints_one_json_line_per_epoch_and_resumes(distdgl_python, tmp_path):
    snapshot = tmp_path / "snap.pt"
    args = ["--mode", "local", *GRAPH_ARGS, "--nodes", "500", "--checkpoint", str(snapshot)]
    first = run_payload(distdgl_python, "train.py", *args, "--epochs", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    epochs = [line for line in first.stdout.splitlines() if line.startswith('{"event": "epoch"')]
    assert len(epochs) == 2
    assert snapshot.exists()
    resumed = run_payload(distdgl_python, "train.py", *args, "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    epochs = [line for line in resumed.stdout.splitlines() if line.startswith('{"event": "epoch"')]
    assert len(epochs) == 1 and '"epoch": 2' in epochs[0]
