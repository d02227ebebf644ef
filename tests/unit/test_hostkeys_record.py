"""A corrupt ssh_trust record (host_keys.json beside the cluster's key) is refused before any run, naming the file
and what to do (it used to stop the ssh_trust role in a Jinja error)."""

from __future__ import annotations

import json
import textwrap
import types

import pytest

from pyctl import cli
from pyctl.commands import playrun
from pyctl.errors import ExitCode

INVENTORY = """\
[control_plane]
cp1 ansible_host=192.168.10.11

[workers]
w1 ansible_host=192.168.10.12
"""


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """An inventory, a private state dir, and a stand-in for the Ansible run that records whether it started."""
    monkeypatch.setenv("PYCTL_STATE_DIR", str(tmp_path / "state"))
    started = []
    monkeypatch.setattr(
        playrun, "run", lambda *args, **kwargs: started.append(args) or types.SimpleNamespace(run_dir=tmp_path)
    )
    path = tmp_path / "hosts.ini"
    path.write_text(textwrap.dedent(INVENTORY), encoding="utf-8")
    record = tmp_path / "state" / "clusters" / "cp1" / "ssh" / "host_keys.json"
    record.parent.mkdir(parents=True)
    return path, record, started


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"cp1": {"names": ["cp1"], "keys": ["ssh-ed25519 AAAA"]', "is not valid JSON"),
        ("", "is not valid JSON"),
        ('["cp1"]', "is not a mapping"),
        ('{"cp1": {"names": ["cp1"], "keys": "ssh-ed25519 AAAA"}}', "keys entry for cp1"),
    ],
)
@pytest.mark.parametrize("argv", [["bootstrap", "--phases", "ssh_trust"], ["bootstrap"]])
def test_a_corrupt_record_is_one_error_line_naming_the_file_and_the_fix(cluster, capsys, text, words, argv):
    path, record, started = cluster
    record.write_text(text, encoding="utf-8")
    assert cli.main([*argv, "-i", str(path)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("pyctl: error: ") and "Traceback" not in err
    assert str(record) in err and words in err
    assert "delete it and re-run" in err and "--phases ssh_trust" in err
    assert started == []


def test_node_add_refuses_a_corrupt_record_too(cluster, capsys):
    path, record, started = cluster
    (record.parent.parent / "admin.conf").write_text("# placeholder kubeconfig\n", encoding="utf-8")
    record.write_text("{not json", encoding="utf-8")
    assert cli.main(["node", "add", "-i", str(path), "--host", "w1"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert str(record) in err and "is not valid JSON" in err and started == []


def test_a_good_record_and_phases_without_ssh_trust_are_left_alone(cluster, capsys):
    path, record, started = cluster
    record.write_text(json.dumps({"cp1": {"names": ["cp1"], "keys": ["ssh-ed25519 AAAA"]}}), encoding="utf-8")
    assert cli.main(["bootstrap", "--phases", "ssh_trust", "-i", str(path)]) == ExitCode.OK
    record.write_text("{not json", encoding="utf-8")
    assert cli.main(["bootstrap", "--phases", "prepare_nodes", "-i", str(path)]) == ExitCode.OK
    assert len(started) == 2
