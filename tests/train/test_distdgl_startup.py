"""The DistDGL start-up step (pyctl/train/workloads/templates/distdgl_startup.py) on its own, without DGL or a lab:
its checks name the cause, peer names that never resolve fail within the bound, the partition hand-over
between machine 0 and the others fails cleanly, and a signal stops it. Run with this interpreter (the
step is standard library only)."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyctl.train.workloads.distdgl import STARTUP

_spec = importlib.util.spec_from_file_location("distdgl_startup", STARTUP)
startup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(startup)


def _spec_body(tmp_path: Path, **changes) -> dict:
    body = {
        "job": "distdgl-unit",
        "num_parts": 2,
        "addresses": ["192.0.2.1", "127.0.0.1"],
        "num_servers": 1,
        "num_trainers": 1,
        "num_samplers": 0,
        "num_clients": 2,
        "port": 30050,
        "python": sys.executable,
        "share": str(tmp_path / "share"),
        "partition": {"args": ["--graph", "synthetic"], "output": str(tmp_path / "parts"), "timeout_s": 30},
        "launch_args": [],
        "train_args": [],
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("changes", "index", "message"),
    [
        ({"num_parts": 3}, 0, "num_parts mismatch: the graph is cut into 3 partition(s) but the job runs 2 machine(s)"),
        ({"num_clients": 4}, 1, "wrong client count: the job expects DGL_NUM_CLIENT=4 but trainers x (1 + samplers)"),
        ({"num_samplers": 1}, 0, "= 1 x (1 + 1) x 2 = 4"),
        ({}, 2, "machine index 2 is outside the job's machines 0..1"),
    ],
)
def test_checks_name_the_cause(tmp_path, changes, index, message):
    with pytest.raises(startup.StartupError, match=re.escape(message)) as caught:
        startup.check_spec(_spec_body(tmp_path, **changes), index)
    assert caught.value.code == 2


def test_pod_count_must_match_the_machines_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCTL_MACHINES", "3")
    with pytest.raises(startup.StartupError, match=r"the Job runs 3 pod\(s\) \(completions\) but the job lists 2"):
        startup.check_spec(_spec_body(tmp_path), 0)


def test_addresses_own_ip_and_literal_ipv4():
    startup.check_addresses(["192.0.2.1", "127.0.0.1"], 1, None, "test")  # lo carries 127.0.0.1
    with pytest.raises(startup.StartupError, match=re.escape("own IP missing: machine 0 is 192.0.2.1 in ip_config")):
        startup.check_addresses(["192.0.2.1", "127.0.0.1"], 0, None, "test")
    with pytest.raises(
        startup.StartupError, match=re.escape("own IP missing: this machine's IP is 10.9.9.9 but machine 1")
    ):
        startup.check_addresses(["192.0.2.1", "127.0.0.1"], 1, "10.9.9.9", "test")
    with pytest.raises(startup.StartupError, match="'node-a' is not a literal IPv4 address"):
        startup.check_addresses(["node-a", "127.0.0.1"], 1, None, "test")
    with pytest.raises(startup.StartupError, match=re.escape("two machines have the same address 127.0.0.1")):
        startup.check_addresses(["127.0.0.1", "127.0.0.1"], 1, None, "test")


def test_peer_names_resolve_or_fail_within_the_timeout():
    assert startup.resolve_peers(["localhost"], timeout=5) == ["127.0.0.1"]
    started = time.monotonic()
    with pytest.raises(startup.StartupError, match=r"peer DNS: 1 of 2 machine name\(s\) did not resolve") as caught:
        startup.resolve_peers(["localhost", "pyctl-missing-0.invalid"], timeout=2)
    assert caught.value.code == 3 and "pyctl-missing-0.invalid" in str(caught.value)
    assert time.monotonic() - started < 30


def _run(tmp_path: Path, body: dict, index: int, timeout: float = 60) -> subprocess.CompletedProcess:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    payload = Path(__file__).resolve().parents[2] / "payloads" / "distdgl"
    argv = [sys.executable, str(STARTUP), "--spec", str(path), "--payload", str(payload), "--index", str(index)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_machine_0_publishes_a_failed_partition_and_the_others_stop(tmp_path):
    body = _spec_body(tmp_path, num_parts=1, addresses=["127.0.0.1"], num_clients=1)
    body["partition"]["args"] = ["--graph-path", str(tmp_path / "missing.bin")]
    result = _run(tmp_path, body, 0)
    assert result.returncode == 5, result.stdout + result.stderr
    errors = [ln for ln in result.stdout.splitlines() if ln.startswith("PYCTL_ERROR ")]
    assert len(errors) == 1 and "the partition step failed: partition.py exited with code" in errors[0], result.stdout
    failed = json.loads((tmp_path / "share" / "partition.failed").read_text())
    assert failed["cause"].startswith("the partition step failed")
    # A machine waiting for machine 0's partition sees the failure at once and names it.
    body = _spec_body(tmp_path)
    result = _run(tmp_path, body, 1)
    assert result.returncode == 4, result.stdout
    assert "another machine failed: machine 0: the partition step failed" in result.stdout


def test_waiting_for_the_partition_is_bounded(tmp_path):
    body = _spec_body(tmp_path)
    body["partition"]["timeout_s"] = 1.5
    result = _run(tmp_path, body, 1)
    assert result.returncode == 5, result.stdout
    assert "machine 0's partition did not appear in" in result.stdout and "within 1.5 s" in result.stdout
    assert (tmp_path / "share" / "machine-1" / "ip_config.txt").read_text() == "192.0.2.1 30050\n127.0.0.1 30050\n"


def test_sigterm_while_waiting_stops_it(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_spec_body(tmp_path)))
    argv = [sys.executable, str(STARTUP), "--spec", str(path), "--payload", str(tmp_path), "--index", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "share" / "machine-1" / "ip_config.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, out
    assert "received SIGTERM: stopping" in out and "PYCTL_ERROR" not in out
