"""`pyctl bootstrap` driven in-process by a fake runner replaying real recorded event streams."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from pyctl import cli, phases, runner
from pyctl.progress import LiveView, RunState, failure_lines, phase_of, recap_table
from tests.fakes import FakeRunner, load_events

INVENTORY = (
    "[control_plane]\ncp1 ansible_host=10.0.0.1\n[workers]\nw1 ansible_host=10.0.0.2\nghost ansible_host=10.0.0.3\n"
)


@pytest.fixture
def inv(tmp_path, state_dir):
    path = tmp_path / "hosts.ini"
    path.write_text(INVENTORY, encoding="utf-8")
    return path


def replay(monkeypatch, recording: str, **kwargs) -> FakeRunner:
    fake = FakeRunner(recording, **kwargs)
    monkeypatch.setattr(runner, "run_playbook", fake)
    return fake


def result_events(name: str) -> list[dict]:
    kinds = {"runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"}
    return [e for e in load_events(name) if e["event"] in kinds]


def test_success_prints_one_line_per_task_result_then_the_recap(monkeypatch, capsys, inv, state_dir):
    fake = replay(monkeypatch, "preflight_ok.jsonl")
    assert cli.main(["bootstrap", "-i", str(inv)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln[:5].count(":") == 1 and ln[2] == ":"]
    assert len(lines) == len(result_events("preflight_ok.jsonl"))
    assert "== phase preflight" in out
    assert any("ok" in ln and "cp1" in ln and "Gather the facts the checks need" in ln for ln in lines)
    assert "recap" in out and "bootstrap finished" in out
    request = fake.requests[0]
    assert request.playbook.name == "site.yml" and request.host_count == 3
    assert request.inventory == inv.resolve()
    assert request.extravars == {"pyctl_cluster_name": "cp1", "pyctl_cluster_dir": str(state_dir / "clusters" / "cp1")}
    assert oct((state_dir / "clusters" / "cp1").stat().st_mode & 0o777) == "0o700"
    runs = list((state_dir / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-bootstrap")


def test_a_failed_host_exits_1_naming_host_task_message_hint_and_log(monkeypatch, capsys, inv):
    replay(monkeypatch, "preflight_failed.jsonl")
    assert cli.main(["bootstrap", "-i", str(inv)]) == 1
    captured = capsys.readouterr()
    assert "w1: failed: [preflight] Fail when the host has too little memory: w1 has" in captured.err
    assert "full log: " in captured.err and "pyctl.log" in captured.err
    assert "pyctl: error: failed on: w1" in captured.err
    assert "Traceback" not in captured.err


def test_an_unreachable_host_exits_3_with_a_hint(monkeypatch, capsys, inv):
    replay(monkeypatch, "preflight_failed_unreachable.jsonl")
    assert cli.main(["bootstrap", "-i", str(inv)]) == 3
    err = capsys.readouterr().err
    assert "ghost: unreachable: [preflight]" in err and "Connection refused" in err
    assert "hint: the host does not answer on SSH" in err
    assert "w1: failed:" in err


def test_ctrl_c_exits_130_and_says_where_the_log_is(monkeypatch, capsys, inv):
    replay(monkeypatch, "preflight_ok.jsonl", interrupt_after=10)
    assert cli.main(["bootstrap", "-i", str(inv)]) == 130
    assert "bootstrap cancelled" in capsys.readouterr().err


def test_invalid_inventory_exits_2_before_any_run(monkeypatch, capsys, tmp_path, state_dir):
    fake = replay(monkeypatch, "preflight_ok.jsonl")
    bad = tmp_path / "bad.ini"
    bad.write_text("[worker]\nw1 ansible_host=10.0.0.2 gpu=maybe\n", encoding="utf-8")
    assert cli.main(["bootstrap", "-i", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pyctl: error: inventory" in err and "problems" in err
    assert fake.requests == []
    assert not (state_dir / "runs").exists()


def test_unknown_phase_and_limit_exit_2(monkeypatch, capsys, inv):
    fake = replay(monkeypatch, "preflight_ok.jsonl")
    assert cli.main(["bootstrap", "-i", str(inv), "--phases", "prefligth"]) == 2
    assert "unknown phase(s): prefligth" in capsys.readouterr().err
    assert cli.main(["bootstrap", "-i", str(inv), "--limit", "w9"]) == 2
    assert "neither a host nor a group" in capsys.readouterr().err
    assert fake.requests == []


def test_limit_and_check_reach_the_request(monkeypatch, inv):
    fake = replay(monkeypatch, "preflight_ok.jsonl")
    assert cli.main(["bootstrap", "-i", str(inv), "--limit", "workers,cp1", "--check", "-vv"]) == 0
    request = fake.requests[0]
    assert (request.limit, request.check, request.verbosity) == ("workers,cp1", True, 2)


def test_live_view_shows_phase_hosts_counts_and_current_task():
    state = RunState()
    view = LiveView(Console(record=True, width=160, force_terminal=True), state)
    events = load_events("preflight_failed_unreachable.jsonl")
    for event in events[:25]:
        view.update(state, state.apply(event))
    console = Console(record=True, width=160)
    console.print(view._render())
    text = console.export_text()
    assert "phase: preflight" in text and "elapsed:" in text
    for host in ("cp1", "w1", "ghost"):
        assert host in text
    current = state.hosts["cp1"].task
    assert current and current[:40] in text


def test_recap_matches_the_stats_event():
    state = RunState()
    for event in load_events("preflight_failed_unreachable.jsonl"):
        state.apply(event)
    stats = next(e for e in load_events("preflight_failed_unreachable.jsonl") if e["event"] == "playbook_on_stats")
    data = stats["event_data"]
    console = Console(record=True, width=160)
    console.print(recap_table(state))
    text = console.export_text()
    assert state.hosts["cp1"].ok == data["ok"]["cp1"]
    assert state.hosts["ghost"].unreachable == data["dark"]["ghost"] == 1
    assert state.hosts["w1"].failed == data["failures"]["w1"] == 1
    assert state.failed_hosts == ["w1"] and state.unreachable_hosts == ["ghost"]
    assert "recap" in text and "ghost" in text


def test_failure_lines_trim_long_messages_and_end_with_the_log(tmp_path):
    state = RunState()
    state.apply({"event": "playbook_on_play_start", "event_data": {"play": "Prepare nodes | Load modules"}})
    state.apply(
        {
            "event": "runner_on_failed",
            "event_data": {
                "host": "w1",
                "task": "Install containerd",
                "res": {"msg": "E: Could not get lock " + "x" * 900},
            },
        }
    )
    lines = failure_lines(state, tmp_path / "pyctl.log")
    assert lines[0].startswith("w1: failed: [prepare_nodes] Install containerd: E: Could not get lock")
    assert len(lines[0]) < 500 and lines[0].endswith("...")
    assert lines[1].startswith("  hint: another apt/dpkg process holds the lock")
    assert lines[-1] == f"full log: {tmp_path / 'pyctl.log'}"


def test_ignored_failures_are_not_failures():
    state = RunState()
    outcome = state.apply(
        {"event": "runner_on_failed", "event_data": {"host": "a", "task": "t", "ignore_errors": True, "res": {}}}
    )
    assert outcome[0] == "ignored" and state.failures == [] and state.hosts["a"].ignored == 1


def test_phase_comes_from_the_play_name():
    assert phase_of("Prepare nodes | Load kernel modules") == "prepare_nodes"
    assert phase_of("no phase here") == ""


def test_phase_selection_and_the_generated_playbook(tmp_path):
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "site.yml").write_text(
        "---\n"
        + "".join(
            f"- name: {p}\n  ansible.builtin.import_playbook: {p}.yml\n"
            for p in ("preflight", "prepare_nodes", "storage")
        )
    )
    known = phases.discover(books)
    assert known == ["preflight", "prepare_nodes", "storage"]
    assert phases.select(known, "storage,preflight") == ["preflight", "storage"]
    assert phases.playbook_for(books, known, known, tmp_path) == books / "site.yml"
    generated = phases.playbook_for(books, ["preflight", "storage"], known, tmp_path)
    text = generated.read_text()
    assert f"import_playbook: {books / 'preflight.yml'}" in text
    assert f"import_playbook: {books / 'storage.yml'}" in text and "prepare_nodes" not in text.split("\n", 2)[2]


def test_every_play_name_carries_its_phase():
    root = Path(__file__).resolve().parents[2] / "playbooks"
    import yaml

    for phase in phases.discover(root):
        for play in yaml.safe_load((root / f"{phase}.yml").read_text()):
            assert phase_of(play["name"]) == phase, (phase, play["name"])


def test_a_censored_no_log_result_that_changed_counts_as_changed():
    state = RunState()
    censored = {"censored": "the output has been hidden due to the fact that 'no_log: true' was specified"}
    outcome = state.apply(
        {
            "event": "runner_on_ok",
            "stdout": "changed: [cp1]",
            "event_data": {"host": "cp1", "task": "Mint a join token", "res": censored},
        }
    )
    assert outcome[0] == "changed" and state.hosts["cp1"].changed == 1
    outcome = state.apply(
        {"event": "runner_on_ok", "stdout": "ok: [cp1]", "event_data": {"host": "cp1", "task": "t", "res": censored}}
    )
    assert outcome[0] == "ok" and state.hosts["cp1"].changed == 1
