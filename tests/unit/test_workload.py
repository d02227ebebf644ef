"""`pyctl doctor --workload` in-process: the probe's schedule and figures, the verdict per node, bad
input as one line and exit 2, and the Kubernetes renders against the pinned API schema."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pyctl import cli
from pyctl.workload import verdict
from tests.train.test_cli import INVENTORY

REPO = Path(__file__).resolve().parents[2]
PASSED = {"loss": 0.2, "passed": True, "reason": None}


def _probe_module():
    """payloads/allreduce/probe.py imports torch only when it runs, so its helpers load here."""
    spec = importlib.util.spec_from_file_location("allreduce_probe", REPO / "payloads" / "allreduce" / "probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("count", range(1, 10))
def test_round_robin_meets_every_pair_once_in_disjoint_rounds(count):
    rounds = _probe_module().round_robin(count)
    met = [pair for pairs in rounds for pair in pairs]
    assert sorted(met) == list(itertools.combinations(range(count), 2))
    for pairs in rounds:
        nodes = [n for pair in pairs for n in pair]
        assert len(nodes) == len(set(nodes)), f"a node plays twice in one round: {pairs}"
    assert len(rounds) == (0 if count < 2 else count - 1 if count % 2 == 0 else count)


def test_bus_bandwidth_of_a_pair_is_its_algorithm_bandwidth_in_gigabits():
    probe = _probe_module()
    # 125 MB in 1 s is 1 Gbit/s; for 2 ranks nccl-tests' busbw factor 2(n-1)/n is 1, for 4 it is 1.5.
    assert probe.bus_gbps(125_000_000, 1.0) == pytest.approx(1.0)
    assert probe.bus_gbps(125_000_000, 1.0, ranks=4) == pytest.approx(1.5)


def _pair(a: str, b: str, gbps: float | None, error: str | None = None) -> dict:
    return {"a": a, "b": b, "gbps": gbps, "error": error}


def test_the_node_whose_every_link_is_slow_is_named_slow():
    pairs = [_pair("n1", "n2", 4.6), _pair("n1", "n3", 0.05), _pair("n2", "n3", 0.05)]
    report = verdict.judge(["n1", "n2", "n3"], pairs, {}, PASSED)
    assert {n: v["verdict"] for n, v in report["nodes"].items()} == {"n1": "ok", "n2": "ok", "n3": "slow"}
    assert "0.01x the median of the other nodes' best links" in report["nodes"]["n3"]["reason"]
    assert report["nodes"]["n3"]["allreduce_gbps"] == 0.05
    assert report["nodes"]["n1"] == {"verdict": "ok", "reason": None, "allreduce_gbps": 4.6}
    assert not any(link["slow"] for link in report["links"]), "a slow node explains its own links"
    assert not verdict.passed(report)


def test_the_report_has_the_documented_shape():
    report = verdict.judge(["n1", "n2"], [_pair("n1", "n2", 3.0)], {}, PASSED)
    assert set(report) >= {"nodes", "ddp"}
    assert all(set(node) == {"verdict", "reason", "allreduce_gbps"} for node in report["nodes"].values())
    assert {"loss", "passed"} <= set(report["ddp"])
    assert verdict.passed(report)


def test_two_nodes_share_one_link_so_only_an_absolute_floor_calls_them_slow():
    pairs = [_pair("n1", "n2", 0.05)]
    assert {v["verdict"] for v in verdict.judge(["n1", "n2"], pairs, {}, PASSED)["nodes"].values()} == {"ok"}
    floored = verdict.judge(["n1", "n2"], pairs, {}, PASSED, min_gbps=1.0)
    assert {v["verdict"] for v in floored["nodes"].values()} == {"slow"}
    assert "below --min-gbps 1" in floored["nodes"]["n1"]["reason"]


def test_a_slow_link_between_two_good_nodes_is_named_and_the_nodes_stay_ok():
    names = ["n1", "n2", "n3", "n4"]
    pairs = [_pair(a, b, 0.1 if {a, b} == {"n1", "n2"} else 5.0) for a, b in itertools.combinations(names, 2)]
    report = verdict.judge(names, pairs, {}, PASSED)
    assert {v["verdict"] for v in report["nodes"].values()} == {"ok"}
    slow = [(link["a"], link["b"]) for link in report["links"] if link["slow"]]
    assert slow == [("n1", "n2")]
    assert "the link to n2 is slow" in report["nodes"]["n1"]["reason"]
    assert report["nodes"]["n3"]["reason"] is None


def test_failures_carry_their_reason_and_a_failed_all_reduce_fails_both_ends():
    pairs = [_pair("n1", "n2", None, "RuntimeError: Connection reset by peer"), _pair("n1", "n3", 2.0)]
    report = verdict.judge(["n1", "n2", "n3", "n4"], pairs, {"n4": "unreachable: timed out"}, PASSED)
    nodes = report["nodes"]
    assert nodes["n4"] == {"verdict": "failed", "reason": "unreachable: timed out", "allreduce_gbps": None}
    assert nodes["n2"]["verdict"] == "failed" and "with n1 failed: RuntimeError" in nodes["n2"]["reason"]
    assert nodes["n1"]["verdict"] == "failed" and "with n2 failed" in nodes["n1"]["reason"]
    assert nodes["n3"]["verdict"] == "ok"


def test_a_node_left_without_figures_is_failed_unless_it_is_alone():
    assert verdict.judge(["n1", "n2"], [], {}, PASSED)["nodes"]["n1"]["verdict"] == "failed"
    alone = verdict.judge(["n1", "n2"], [], {"n2": "no torch"}, PASSED)["nodes"]["n1"]
    assert alone["verdict"] == "ok" and alone["reason"] == "no other node to measure against"


def test_a_failed_ddp_run_fails_the_check():
    report = verdict.judge(["n1", "n2"], [_pair("n1", "n2", 3.0)], {}, {"loss": 2.3, "passed": False, "reason": "x"})
    assert not verdict.passed(report)


# --- the CLI --------------------------------------------------------------------------------------------


@pytest.fixture
def inventory(tmp_path, state_dir) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return path


def _fails(capsys, *args: str) -> str:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert lines and lines[0].startswith("pyctl: error: "), captured.err
    assert all(ln.startswith(("pyctl: error: ", "pyctl: hint: ")) for ln in lines), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workload", "--backend", "slurm"], "--backend 'slurm' is not one of ssh, k8s"),
        (["--workload", "--allreduce-mib", "0"], "--allreduce-mib 0: must be a positive number"),
        (["--workload", "--backend", "ssh", "--render", "/tmp/x"], "--image and --render are for --backend k8s"),
        (["--workload", "--ssh-user", "root"], "--ssh-user, --ssh-key and --python are for --backend ssh"),
        (["--backend", "ssh"], "are options of --workload"),
        (["--workload", "--backend", "ssh", "--ssh-key", "/nonexistent/key"], "--ssh-key /nonexistent/key: no such"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, inventory, args, expected):
    assert expected in _fails(capsys, "doctor", "-i", str(inventory), *args)


def test_k8s_render_is_one_pod_per_node_and_valid_against_the_api_schema(capsys, inventory, tmp_path):
    out = tmp_path / "render"
    assert cli.main(["doctor", "-i", str(inventory), "--workload", "--render", str(out)]) == 0
    files = sorted(out.iterdir())
    probe_jobs = [p for p in files if p.name.startswith("allreduce-") and p.name.endswith("-job.yaml")]
    ddp_jobs = [p for p in files if p.name.startswith("ddp-") and p.name.endswith("-job.yaml")]
    assert len(probe_jobs) == 1 and len(ddp_jobs) == 1, files
    for path in files:
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.36.0", strict=True)
    for path in (*probe_jobs, *ddp_jobs):
        job = yaml.safe_load(path.read_text())
        job_id = job["metadata"]["name"]
        assert job["spec"]["completions"] == 3 and job["spec"]["activeDeadlineSeconds"] > 0
        pod = job["spec"]["template"]["spec"]
        assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
            {"labelSelector": {"matchLabels": {"pyctl/job-id": job_id}}, "topologyKey": "kubernetes.io/hostname"}
        ]
        assert job["spec"]["template"]["metadata"]["labels"]["pyctl/job-id"] == job_id
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["PYCTL_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    probe = yaml.safe_load(probe_jobs[0].read_text())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "/opt/pyctl/user/probe.py" in probe and "--size-mib" in probe
    configmap = next(p for p in files if p.name.endswith("-configmap.yaml"))
    script = yaml.safe_load(configmap.read_text())["data"]["probe.py"]
    assert script == (REPO / "payloads" / "allreduce" / "probe.py").read_text()


# --- the SSH steps, with the jobs replaced ----------------------------------------------------------------


class _FakeJobs:
    """Stands in for `ssh._run_job`: scripted outcomes for the probe attempts and the DDP run, in order."""

    def __init__(self, tmp_path: Path, outcomes: list[dict]) -> None:
        self.tmp_path, self.outcomes, self.calls = tmp_path, outcomes, []

    def __call__(self, ctx, request, workload, timeout_s):
        from pyctl.train.jobs import JobRecord

        self.calls.append((workload, list(request.hosts)))
        outcome = self.outcomes[len(self.calls) - 1]
        job_dir = self.tmp_path / f"job{len(self.calls)}"
        job_dir.mkdir()
        (job_dir / "output.log").write_text("".join(line + "\n" for line in outcome.get("output", [])))
        record = JobRecord(
            id=f"{workload}-{len(self.calls)}",
            workload=workload,
            backend="ssh",
            created=0.0,
            state=outcome["state"],
            message=outcome.get("message", ""),
            summary=outcome.get("summary"),
        )
        return record, outcome.get("timed_out", False), job_dir


def _ssh_check(monkeypatch, tmp_path, inventory, outcomes: list[dict], preflight: dict | None = None):
    from pyctl.workload import check, ssh

    fake = _FakeJobs(tmp_path, outcomes)
    monkeypatch.setattr(ssh, "_run_job", fake)
    monkeypatch.setattr(ssh, "_preflight", lambda ctx, hosts: dict(preflight or {}))
    request = check.WorkloadRequest(inventory=inventory, backend="ssh", ssh_user="root")
    return check.run(request, lambda message: None), fake.calls


def _probe_summary(*pairs: tuple[str, str, float]) -> dict:
    return {"event": "allreduce", "pairs": [_pair(a, b, gbps) for a, b, gbps in pairs]}


def test_a_node_whose_probe_process_fails_is_named_and_the_others_are_measured_again(monkeypatch, tmp_path, inventory):
    outcomes = [
        {
            "state": "failed",
            "message": "host w1 failed with exit code 3 (all-reduce probe: RuntimeError: boom); the other hosts were stopped",
            "output": ["[w1] PYCTL_ERROR all-reduce probe: RuntimeError: boom", "[cp1] probe[0] cp1: joined as cp1"],
        },
        {"state": "succeeded", "summary": _probe_summary(("cp1", "w2", 3.0))},
        {"state": "succeeded", "summary": {"loss": 0.2}},
    ]
    report, calls = _ssh_check(monkeypatch, tmp_path, inventory, outcomes)
    assert calls == [("allreduce", ["cp1", "w1", "w2"]), ("allreduce", ["cp1", "w2"]), ("ddp", ["cp1", "w2"])]
    nodes = report["nodes"]
    assert nodes["w1"] == {
        "verdict": "failed",
        "reason": "the all-reduce probe failed: all-reduce probe: RuntimeError: boom",
        "allreduce_gbps": None,
    }
    assert nodes["cp1"]["verdict"] == nodes["w2"]["verdict"] == "ok"
    assert report["ddp"] == {"loss": 0.2, "passed": True, "reason": None}


def test_a_node_that_never_joins_before_the_deadline_is_named(monkeypatch, tmp_path, inventory):
    joined = [
        "[cp1] probe[0] cp1: joined as cp1 (gloo, 3 nodes, 16 MiB per all-reduce)",
        "[w2] probe[1] w2: joined as w2",
    ]
    outcomes = [
        {"state": "failed", "timed_out": True, "message": "x", "output": joined},
        {"state": "succeeded", "summary": _probe_summary(("cp1", "w2", 3.0))},
        {"state": "succeeded", "summary": {"loss": 0.9}},
    ]
    report, calls = _ssh_check(monkeypatch, tmp_path, inventory, outcomes)
    assert calls[1] == ("allreduce", ["cp1", "w2"])
    assert report["nodes"]["w1"]["reason"] == "did not join the all-reduce probe within 300 s"
    assert report["ddp"]["passed"] is False and "loss 0.9 after 3 epochs is above 0.6" in report["ddp"]["reason"]


def test_a_node_failing_the_preflight_takes_no_further_part(monkeypatch, tmp_path, inventory):
    outcomes = [
        {"state": "succeeded", "summary": _probe_summary(("cp1", "w2", 3.0))},
        {"state": "failed", "message": "host w2 failed with exit code 1; the other hosts were stopped"},
    ]
    report, calls = _ssh_check(monkeypatch, tmp_path, inventory, outcomes, {"w1": "unreachable: timed out"})
    assert calls == [("allreduce", ["cp1", "w2"]), ("ddp", ["cp1", "w2"])]
    assert report["nodes"]["w1"] == {"verdict": "failed", "reason": "unreachable: timed out", "allreduce_gbps": None}
    assert report["ddp"]["passed"] is False
    assert (
        report["ddp"]["reason"] == "the DDP run failed: host w2 failed with exit code 1; the other hosts were stopped"
    )


def test_the_cli_prints_a_verdict_per_node_and_exits_1_when_one_is_not_ok(monkeypatch, tmp_path, inventory, capsys):
    from pyctl.workload import ssh

    outcomes = [
        {"state": "succeeded", "summary": _probe_summary(("cp1", "w1", 4.0), ("cp1", "w2", 0.1), ("w1", "w2", 0.1))},
        {"state": "succeeded", "summary": {"loss": 0.2}},
    ] * 2
    monkeypatch.setattr(ssh, "_run_job", _FakeJobs(tmp_path, outcomes))
    monkeypatch.setattr(ssh, "_preflight", lambda ctx, hosts: {})
    args = ["doctor", "-i", str(inventory), "--workload", "--backend", "ssh", "--ssh-user", "root"]
    assert cli.main([*args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {name: node["verdict"] for name, node in report["nodes"].items()} == {"cp1": "ok", "w1": "ok", "w2": "slow"}
    assert cli.main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("w2") and " slow " in out[2] and "0.1 Gbit/s" in out[2], out
    assert out[-2:] == ["ddp: loss 0.2, passed", "healthy: no"]


def test_when_one_of_two_nodes_fails_the_probe_the_other_still_trains_alone(monkeypatch, tmp_path, inventory):
    from pyctl.workload import check, ssh

    outcomes = [
        {"state": "failed", "message": "host w1 failed with exit code 1; the other hosts were stopped"},
        {"state": "succeeded", "summary": {"loss": 0.3}},
    ]
    fake = _FakeJobs(tmp_path, outcomes)
    monkeypatch.setattr(ssh, "_run_job", fake)
    monkeypatch.setattr(ssh, "_preflight", lambda ctx, hosts: {"w2": "unreachable"})
    request = check.WorkloadRequest(inventory=inventory, backend="ssh", ssh_user="root")
    report = check.run(request, lambda message: None)
    assert fake.calls == [("allreduce", ["cp1", "w1"]), ("ddp", ["cp1"])]
    assert report["nodes"]["w1"]["verdict"] == "failed"
    assert report["nodes"]["w1"]["reason"].startswith("the all-reduce probe failed: failed with exit code 1")
    assert report["nodes"]["cp1"] == {
        "verdict": "ok",
        "reason": "no other node to measure against",
        "allreduce_gbps": None,
    }
