"""`pyctl train distdgl --backend k8s --follow` end to end against the Kubernetes API double over HTTPS
(tests/doubles/fake_apiserver.py), driven only through the CLI: the real kubernetes client creates the
start-up ConfigMap, the Job and its headless Service; the double runs the pods through the kubelet
stand-in in the session's 2-host netns lab (the start-up step, the partition on pod 0 into the claim,
launch.py's servers and trainers), and `--follow` merges their logs to the finished job's accuracy.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.train.distdgl_support", "distdgl_fixtures")
from tests.doubles.fake_apiserver import ApiServerDouble, NodeSpec  # noqa: E402
from tests.train.apiserver_support import distdgl_image, install_kubeconfig  # noqa: E402
from tests.train.conftest import pyctl  # noqa: E402
from tests.train.distdgl_support import GRAPH, TRAIN, job_id_of, summary_of  # noqa: E402

pytest_plugins = ["tests.train.distdgl_support", "distdgl_fixtures"]
pytestmark = pytest.mark.lab


def test_distdgl_follow_runs_to_a_finished_job_with_merged_logs(distdgl_lab, local_summary, tmp_path):
    nodes = [NodeSpec(h.name, netns=h.namespace, address=h.address) for h in distdgl_lab.lab.hosts]
    with ApiServerDouble(
        tmp_path / "api",
        nodes=nodes,
        images={"pyctl-distdgl:cpu": distdgl_image(distdgl_lab.python)},
        claims={"pyctl-shared": distdgl_lab.share},  # the session's share: one partition cache
    ) as api:
        install_kubeconfig(api, distdgl_lab.state_dir, distdgl_lab.lab.inventory_path)
        result = pyctl(
            distdgl_lab.state_dir,
            "train", "distdgl", "-i", distdgl_lab.inventory, "--backend", "k8s", *GRAPH, *TRAIN, "--follow",
        )  # fmt: skip
        assert result.returncode == 0, result
        job_id = job_id_of(result)
        lines = result.stdout.splitlines()
        assert any(ln.startswith("[node 0] ") for ln in lines) and any(ln.startswith("[node 1] ") for ln in lines)
        summary = summary_of(result)
        assert summary["world_size"] == 2 and abs(summary["test_acc"] - local_summary["test_acc"]) <= 0.02, result
        assert f"job {job_id} succeeded: the Job completed; test accuracy {summary['test_acc']}" in result.stderr
        configmap = api.get("", "configmaps", f"{job_id}-startup")
        assert configmap is not None and configmap["metadata"]["ownerReferences"][0]["name"] == job_id
        assert api.warnings == [], "pyctl sent a field the 1.36 schema does not know"
