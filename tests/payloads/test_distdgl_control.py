"""Who stops the other machines when one DistDGL launcher fails: launch.py's control connection between
two launchers on loopback, in-process (standard library only: no DGL, no lab).

Under pyctl's SSH supervisor (PYCTL_SUPERVISED=1) the supervisor alone stops the whole job: a failing
launcher tells no one and a peer's loss stops nothing here. Without it (Kubernetes, by hand) the
launchers stop each other, as before."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("distdgl_fixtures")
from distdgl_fixtures import load_payload_module  # noqa: E402 (after register_assert_rewrite)

load_payload_module("proctree")
load_payload_module("partconfig")
launch = load_payload_module("launch")

MACHINES = ["127.0.0.1", "127.0.0.2"]
FAILURE = "node2: trainers (torchrun) exited with code 1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan_for(index: int, port: int, tmp_path: Path, flags: list[str]):
    args = launch.parse_args(
        [
            "--machine-index",
            str(index),
            "--machines",
            ",".join(MACHINES),
            "--part-config",
            str(tmp_path / "graph.json"),
            "--control-port",
            str(port),
            "--peer-timeout",
            "30",
            "--run-dir",
            str(tmp_path / f"run{index}"),
            *flags,
            "--",
            "train.py",
        ]
    )
    return launch.Plan(
        args=args,
        machines=MACHINES,
        index=index,
        own_ip=MACHINES[index],
        ifname="lo",
        num_clients=2,
        part_config=tmp_path / "graph.json",
        graph_name="graph",
        part_sha256="0" * 64,
        server_ports=[args.port],
    )


def machine_1_fails(tmp_path: Path, flags: list[str]):
    """Both launchers pass the preflight, then machine 1 fails as main() handles a failure: it tells
    the peers (or not) and goes away. Returns machine 0's job and the events its control connection got."""
    port = free_port()
    control0 = launch.Control(plan_for(0, port, tmp_path, flags))
    control1 = launch.Control(plan_for(1, port, tmp_path, flags))
    coordinator = threading.Thread(target=control0.preflight, daemon=True)
    coordinator.start()
    control1.preflight()
    coordinator.join(timeout=30)
    assert not coordinator.is_alive(), "machine 0's preflight did not finish"
    control1.tell_peers_failed(FAILURE)
    # machine 1's launcher exits: its connection closes (shut down first: its reader thread is in recv)
    control1.upstream.shutdown(socket.SHUT_RDWR)
    control1.close()
    deadline = time.monotonic() + 30
    while not any(kind == "eof" for kind, *_ in control0.events):
        assert time.monotonic() < deadline, "machine 0 never saw machine 1's connection close"
        time.sleep(0.05)
    kinds = [kind for kind, *_ in control0.events]
    job0 = launch.Job(control0.plan, control0)
    return job0, kinds


def test_under_the_supervisor_a_failed_launcher_stops_no_other_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYCTL_SUPERVISED", "1")  # what pyctl's SSH supervisor sets on every host
    job0, kinds = machine_1_fails(tmp_path, [])
    assert kinds == ["eof"], "machine 1 asked the others to stop: the supervisor owns that"
    try:
        job0._check_control()  # machine 0 goes on: the supervisor stops it (and says why)
    finally:
        job0.control.close()
    out = capsys.readouterr().out
    assert ": the supervisor stops the other machines" in out  # machine 1's launcher
    assert ": machine 1: its launcher went away; left to the supervisor" in out  # machine 0's


def test_the_supervised_flag_does_the_same(tmp_path, monkeypatch):
    monkeypatch.delenv("PYCTL_SUPERVISED", raising=False)
    job0, kinds = machine_1_fails(tmp_path, ["--supervised"])
    job0.control.close()
    assert kinds == ["eof"]


def test_without_a_supervisor_a_failed_launcher_stops_the_others(tmp_path, monkeypatch):
    """Kubernetes pods and launches by hand: no one else stops the job, so the launchers do."""
    monkeypatch.delenv("PYCTL_SUPERVISED", raising=False)
    job0, kinds = machine_1_fails(tmp_path, [])
    assert kinds == ["abort", "eof"]
    try:
        with pytest.raises(launch.LaunchError) as failure:
            job0._check_control()
    finally:
        job0.control.close()
    assert failure.value.code == launch.EXIT_PEER
    assert str(failure.value) == f"machine 1 failed: {FAILURE}"
