"""The CLI in-process: help, version, errors as one line, exit codes, --traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyctl import cli
from pyctl.errors import ExitCode, PyctlError


def test_help_lists_only_working_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "bootstrap" in out and "inventory" in out
    registered = {c.name or c.callback.__name__ for c in cli.app.registered_commands} | {
        g.name for g in cli.app.registered_groups
    }
    for name in registered:
        assert name in out


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from pyctl import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('ansible', 'ansible_runner', 'fabric', 'kubernetes', 'jinja2', 'rich.live') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pyctl ")


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["frobnicate"]) == ExitCode.USAGE
    assert "No such command" in capsys.readouterr().err


def test_missing_inventory_option(capsys):
    assert cli.main(["bootstrap"]) == ExitCode.USAGE
    assert "--inventory" in capsys.readouterr().err


def test_inventory_check_ok_and_bad(tmp_path, capsys):
    good = tmp_path / "good.ini"
    good.write_text("[control_plane]\ncp1 ansible_host=10.0.0.1 gpu=true\n")
    assert cli.main(["inventory", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "cp1" in out and "10.0.0.1" in out and "control_plane" in out and "yes" in out
    bad = tmp_path / "bad.ini"
    bad.write_text("[control_plane]\ncp1 ansible_host=10.0.0.1\n[workers]\nw1 ansible_host=10.0.0.1 gpu=maybe\n")
    assert cli.main(["inventory", "check", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}:4: host w1: gpu: 'maybe' is not a boolean (use gpu=true or gpu=false)" in err
    assert any(line.startswith(f"{bad}: host w1: ansible_host: address 10.0.0.1 is also used") for line in err)


def test_inventory_check_json(tmp_path, capsys):
    import json

    bad = tmp_path / "bad.yml"
    bad.write_text("- not\n- an inventory\n")
    assert cli.main(["inventory", "check", "--json", str(bad)]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False and data["problems"][0]["field"] == "file"


def test_pyctl_errors_are_one_line_with_a_hint_and_traceback_on_request(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise PyctlError("the thing is broken", hint="fix the thing")

    monkeypatch.setattr("pyctl.commands.inventory.run_check", boom)
    assert cli.main(["inventory", "check", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "pyctl: error: the thing is broken\npyctl: hint: fix the thing\n"
    assert cli.main(["--traceback", "inventory", "check", "x"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_unexpected_errors_do_not_show_a_traceback(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr("pyctl.commands.inventory.run_check", boom)
    assert cli.main(["inventory", "check", "x"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--traceback" in err


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pyctl.commands.inventory.run_check", interrupted)
    assert cli.main(["inventory", "check", "x"]) == 130


@pytest.mark.parametrize("argv", [["bootstrap", "--help"], ["inventory", "check", "--help"]])
def test_subcommand_help(argv, capsys):
    assert cli.main(argv) == 0
    assert "Usage:" in capsys.readouterr().out


def test_console_script_runs(tmp_path):
    good = tmp_path / "good.ini"
    good.write_text("[control_plane]\ncp1 ansible_host=10.0.0.1\n")
    result = subprocess.run([sys.executable, "-m", "pyctl", "inventory", "check", str(good)], capture_output=True)
    assert result.returncode == 0, result.stderr


def test_console_script_exit_codes_and_flushed_output(tmp_path):
    """The console script leaves without interpreter teardown: its exit code and every byte written to
    a pipe must still arrive."""
    hosts = "".join(f"w{i} ansible_host=10.0.1.{i}\n" for i in range(1, 200))
    good = tmp_path / "good.ini"
    good.write_text(f"[control_plane]\ncp1 ansible_host=10.0.0.1\n[workers]\n{hosts}")
    result = subprocess.run(
        [sys.executable, "-m", "pyctl", "inventory", "check", str(good), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["hosts"]) == 200
    bad = tmp_path / "bad.ini"
    bad.write_text("[workers]\nw1 ansible_host=10.0.1.1\n")
    result = subprocess.run([sys.executable, "-m", "pyctl", "inventory", "check", str(bad)], capture_output=True)
    assert result.returncode == 2
    assert b"control_plane" in result.stdout + result.stderr
