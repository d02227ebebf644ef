"""The kubelet stand-in's cluster DNS, in-process: `<job>-<i>.<svc>` exists only once pod i has started,
as the EndpointSlice controller and CoreDNS publish it (tests/doubles/kubelet_standin.py), so the pods'
start-up code meets the name-not-yet-resolving race. No processes or namespaces: Popen is replaced."""

from __future__ import annotations

import pytest

from tests.doubles import kubelet_standin
from tests.doubles.kubelet_standin import KubeletStandin

JOB = {
    "kind": "Job",
    "metadata": {"name": "j"},
    "spec": {
        "completionMode": "Indexed",
        "completions": 2,
        "template": {"spec": {"subdomain": "j", "containers": [{"name": "c", "command": ["true"]}]}},
    },
}


class _Running:
    pid = 0
    returncode = None

    def poll(self):
        return None


@pytest.fixture
def standin(tmp_path, monkeypatch):
    monkeypatch.setattr(kubelet_standin.subprocess, "Popen", lambda *a, **k: _Running())

    def make(**extra) -> KubeletStandin:
        return KubeletStandin(
            JOB,
            [("ns0", "10.9.0.1"), ("ns1", "10.9.0.2")],
            image_paths={},
            image_path_env="/usr/bin:/bin",
            claims={},
            workdir=tmp_path,
            **extra,
        )

    return make


def test_a_pods_name_resolves_only_once_that_pod_has_started(standin):
    runner = standin()
    pod0, pod1 = runner.pods
    assert runner.published() == set()
    runner.start(pod1)
    hosts1 = pod1.workdir / "hosts"
    assert runner.published() == {1}
    assert "j-1.j" in hosts1.read_text() and "j-0.j" not in hosts1.read_text()
    runner.start(pod0)
    assert runner.published() == {0, 1}
    assert "10.9.0.1\tj-0.j.default.svc.cluster.local\tj-0.j" in hosts1.read_text()  # rewritten in place


def test_a_dns_delay_holds_a_started_pods_record_back(standin, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(kubelet_standin.time, "monotonic", lambda: clock[0])
    runner = standin(dns_delays={0: 5.0, 1: None})
    pod0, pod1 = runner.pods
    runner.start(pod1)
    runner.start(pod0)
    runner._publish_due_records()
    assert runner.published() == set()
    clock[0] += 5.0
    runner._publish_due_records()
    assert runner.published() == {0}  # pod 1's record never appears (None)
    assert "j-0.j" in (pod1.workdir / "hosts").read_text()
