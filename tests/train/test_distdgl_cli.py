"""`pyctl train distdgl` in-process: bad input is one clear line and exit 2 before anything starts;
`--render DIR` writes every manifest or per-host command and touches nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pyctl import cli

INVENTORY = """\
all:
  vars:
    ansible_user: ubuntu
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 10.0.0.1, ansible_port: 1}
    workers:
      hosts:
        w1: {ansible_host: 10.0.0.2, ansible_port: 1}
        w2: {ansible_host: 10.0.0.3, ansible_port: 1, train_iface: eth1}
        named: {ansible_host: w3.example.org, ansible_port: 1}
"""


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
    assert len(lines) <= 2 and all(ln.startswith(("pyctl: error: ", "pyctl: hint: ")) for ln in lines), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


SSH = ["--backend", "ssh", "--ssh-user", "u"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--graph", "reddit"], "--graph 'reddit' is not one of cora, citeseer, pubmed, ogbn-products, synthetic"),
        (["--graph", "cora", "--graph-path", "/mnt/pyctl-shared/g.bin"], "give --graph or --graph-path, not both"),
        (["--graph-path", "/data/g.bin"], "--graph-path /data/g.bin is not on the NFS share"),
        (["--graph-path", "g.bin", *SSH, "--hosts", "cp1"], "--graph-path 'g.bin' must be an absolute path"),
        (["--graph", "cora", "--synthetic-nodes", "100"], "--synthetic-nodes is for --graph synthetic"),
        # num_parts against the hosts the job uses
        (["--num-parts", "5"], "--num-parts 5 but the inventory has only 4 Kubernetes nodes"),
        (["--num-parts", "5", *SSH], "--num-parts 5 but the inventory has only 4 hosts"),
        (["--num-parts", "3", "--hosts", "cp1,w1", *SSH], "--num-parts 3 but --hosts names 2 host(s)"),
        (["--hosts", "cp1,nope", *SSH], "--hosts names nope, not in the inventory"),
        (["--hosts", "cp1,named", *SSH], "host named: its address 'w3.example.org' is not a literal IPv4 address"),
        (["--num-parts", "0"], "--num-parts 0: must be 1 or more"),
        (["--num-trainers", "0"], "--num-trainers 0: must be 1 or more"),
        (["--num-samplers", "-1"], "--num-samplers -1: must be 0 or more"),
        (["--fanouts", "10,x"], "--fanouts '10,x': give a positive integer"),
        (["--fanouts", "10,10", "--eval-fanouts=-1"], "--eval-fanouts -1 needs one value per layer"),
        (["--port", "29500"], "--port 29500: the DGL servers use ports 29500..29500"),
        (["--num-servers", "2", "--port", "30048"], "off 29500 and 30049"),
        (["--backend", "slurm"], "--backend 'slurm' is not one of k8s, ssh"),
        (["--image", "x", *SSH], "--image is for --backend k8s"),
        (["--shared-path", "/srv"], "--shared-path is for --backend ssh"),
        (["--iface", "enp3s0"], "--iface enp3s0 is for --backend ssh: pods do not have the hosts' interfaces"),
        (["--shared-path", "srv", *SSH, "--hosts", "cp1"], "--shared-path 'srv' must be an absolute path"),
        (["--env", "NOEQUALS"], "--env 'NOEQUALS' is not NAME=VALUE"),
        (["--", "--mode", "local"], "--mode after '--' is set by pyctl and launch.py"),
        ([], "no kubeconfig for cluster cp1 at "),
        (["--backend", "ssh", "--hosts", "cp1,w1"], "no key for the training user 'pyctl'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, inventory, state_dir, args, expected):
    line = _fails(capsys, "train", "distdgl", "-i", str(inventory), *args)
    assert expected in line
    assert not (state_dir / "jobs").exists(), "nothing was recorded"


def test_render_k8s_writes_the_manifests_and_touches_nothing(capsys, inventory, state_dir, tmp_path):
    out = tmp_path / "render"
    args = ["train", "distdgl", "-i", str(inventory), "--num-parts", "2", "--num-samplers", "1", "--render", str(out)]
    assert cli.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["configmap.yaml", "job.yaml", "service.yaml"]
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completions"] == 2
    spec = json.loads(yaml.safe_load((out / "configmap.yaml").read_text())["data"]["job.json"])
    assert spec["num_clients"] == 1 * (1 + 1) * 2
    assert not (state_dir / "jobs").exists(), "no job record: nothing was submitted"
    assert "nothing was started" in capsys.readouterr().err


def test_render_ssh_writes_each_machines_command(capsys, inventory, state_dir, tmp_path):
    out = tmp_path / "render"
    args = [
        "train", "distdgl", "-i", str(inventory), "--backend", "ssh", "--hosts", "w2,cp1", "--python", "/opt/dgl/bin/python",
        "--shared-path", "/srv/share", "--graph", "cora", "--epochs", "3", "--render", str(out), "--", "--hidden", "32",
    ]  # fmt: skip
    assert cli.main(args) == 0  # no key, no SSH: rendering needs neither
    assert sorted(p.name for p in out.iterdir()) == ["0-w2.sh", "1-cp1.sh", "job.json"]
    machine0 = (out / "0-w2.sh").read_text()
    assert "/opt/dgl/bin/python" in machine0 and 'distdgl_startup.py" --spec' in machine0
    assert "PYCTL_MACHINE_INDEX=0" in machine0 and "GLOO_SOCKET_IFNAME=eth1" in machine0
    assert "PYCTL_MACHINE_INDEX=1" in (out / "1-cp1.sh").read_text()
    spec = json.loads((out / "job.json").read_text())
    assert spec["addresses"] == ["10.0.0.3", "10.0.0.1"], "machine 0 = the first --hosts entry"
    assert spec["num_parts"] == 2 and spec["share"].startswith("/srv/share/pyctl/jobs/distdgl-")
    datasets = "/srv/share/pyctl/datasets"  # downloads are kept on the share
    assert spec["partition"]["args"] == ["--graph", "cora", "--data-dir", datasets, "--part-method", "metis"]
    assert spec["partition"]["output"] == "/srv/share/pyctl/partitions"
    assert spec["train_args"] == ["--epochs", "3", "--hidden", "32"]
    assert not (state_dir / "jobs").exists()
