"""`pyctl train` in-process: bad input is one clear line and exit 2 before anything starts;
`--render DIR` writes every manifest or command and touches nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pyctl import cli

INVENTORY = """\
all:
  vars:
    ansible_user: ubuntu
    train_iface: eth1
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 127.0.0.1, ansible_port: 1}
    workers:
      hosts:
        w1: {ansible_host: 127.0.0.2, ansible_port: 1}
        w2: {ansible_host: 127.0.0.3, ansible_port: 1}
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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "cifar10"], "--dataset 'cifar10' is not one of fashion-mnist, digits"),
        (["--dataset", "fashion-mnist"], "--dataset fashion-mnist needs --data-path"),
        (["--backend", "ssh", "--nodes", "5", "--ssh-user", "u"], "--nodes 5 but the inventory has only 3 hosts"),
        (["--nodes", "4"], "--nodes 4 but the inventory has only 3 Kubernetes nodes"),
        (["--gpus-per-node", "1"], "--nodes 1 but the inventory has only 0 GPU nodes"),
        (
            ["--backend", "ssh", "--gpus-per-node", "1", "--ssh-user", "u"],
            "--gpus-per-node 1 but the inventory has no GPU hosts (gpu=true)",
        ),
        (["--script", "/nonexistent/train.py"], "--script /nonexistent/train.py: no such file"),
        (["--kind", "pytorchjob", "--backend", "ssh"], "--kind pytorchjob needs --backend k8s"),
        (["--backend", "slurm"], "--backend 'slurm' is not one of k8s, ssh"),
        (["--checkpoint-dir", "/data/ckpt"], "--checkpoint-dir /data/ckpt is not on the NFS share"),
        (["--checkpoint-dir", "ckpt"], "--checkpoint-dir 'ckpt' must be an absolute path"),
        (["--epochs", "0"], "--epochs 0: must be 1 or more"),
        (["--env", "NOEQUALS"], "--env 'NOEQUALS' is not NAME=VALUE"),
        (["--backend", "ssh", "--image", "x"], "--image is for --backend k8s"),
        (["--iface", "enp3s0"], "--iface enp3s0 is for --backend ssh: pods do not have the hosts' interfaces"),
        ([], "no kubeconfig for cluster cp1 at "),
        (["--backend", "ssh"], "no key for the training user 'pyctl'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, inventory, state_dir, args, expected):
    line = _fails(capsys, "train", "ddp", "-i", str(inventory), *args)
    assert expected in line
    assert not (state_dir / "jobs").exists(), "nothing was recorded"


def test_unreachable_host_is_exit_2_before_anything_starts(capsys, inventory, state_dir, tmp_path):
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    line = _fails(
        capsys, "train", "ddp", "-i", str(inventory), "--backend", "ssh", "--ssh-user", "u", "--ssh-key", str(key)
    )
    assert "is unreachable" in line and "host " in line
    assert not (state_dir / "jobs").exists()


def test_unknown_job(capsys, state_dir):
    for verb in ("status", "logs", "cancel"):
        line = _fails(capsys, "train", verb, "ddp-nope")
        assert "no job 'ddp-nope'" in line


def test_script_rejects_payload_flags(capsys, inventory, tmp_path):
    script = tmp_path / "mine.py"
    script.write_text("print('hi')\n")
    line = _fails(capsys, "train", "ddp", "-i", str(inventory), "--script", str(script), "--epochs", "3")
    assert "--epochs set(s) our payload's flags" in line


def test_render_k8s_writes_manifests_and_touches_nothing(capsys, inventory, state_dir, tmp_path):
    out = tmp_path / "render"
    assert cli.main(["train", "ddp", "-i", str(inventory), "--nodes", "2", "--render", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["job.yaml", "service.yaml"]
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completions"] == 2
    assert not (state_dir / "jobs").exists(), "no job record: nothing was submitted"
    assert "nothing was started" in capsys.readouterr().err


def test_render_ssh_writes_each_hosts_command(capsys, inventory, state_dir, tmp_path):
    out = tmp_path / "render"
    args = [
        "train",
        "ddp",
        "-i",
        str(inventory),
        "--backend",
        "ssh",
        "--render",
        str(out),
        "--python",
        "/opt/py/bin/python",
    ]
    assert cli.main(args) == 0  # no key, no SSH: rendering needs neither
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0-cp1.sh", "1-w1.sh", "2-w2.sh"]
    text = (out / "1-w1.sh").read_text()
    assert "/opt/py/bin/python -m torch.distributed.run --nnodes 3" in text
    assert "--rdzv-endpoint 127.0.0.1:29500" in text and "is_host=0" in text
    assert "GLOO_SOCKET_IFNAME=eth1" in text
    assert not (state_dir / "jobs").exists()
    capsys.readouterr()
    # A second render into the same folder is refused rather than mixing two jobs' files.
    line = _fails(capsys, *args)
    assert "is not empty" in line


def test_a_dead_supervisor_is_noticed_at_once_even_for_a_young_job():
    """The grace after creating a job covers only the moment before its supervisor's pid is recorded;
    once recorded, a pid that is not that job's supervisor means the supervisor died."""
    import time

    from pyctl.train.backends.ssh import job_alive
    from pyctl.train.jobs import JobRecord

    dead = subprocess.Popen(["true"])
    dead.wait()
    young = JobRecord(id="ddp-young", workload="ddp", backend="ssh", created=time.time())
    assert job_alive(young), "no pid recorded yet: still starting"
    young.supervisor_pid = dead.pid
    assert not job_alive(young)
    old = JobRecord(id="ddp-old", workload="ddp", backend="ssh", created=time.time() - 60)
    assert not job_alive(old), "no pid a minute after creation: the start failed"


def test_the_payloads_modules_travel_with_it_over_ssh(inventory, tmp_path):
    """train.py imports loaders.py and checkpoint.py from its own folder: each host gets all three;
    a user's --script travels alone."""
    from pyctl import inventory as inv
    from pyctl.train.workloads import ddp

    cluster = inv.load(inventory, cache_dir=tmp_path / "cache")
    repo = Path(__file__).resolve().parents[2]
    job = ddp.resolve(ddp.DdpRequest(inventory=inventory, backend="ssh", iface="eth1"), cluster, repo)
    files = ddp.ssh_launches(job, "ddp-test", {h.name: "/py" for h in job.hosts})[0].files
    assert sorted(files) == ["checkpoint.py", "loaders.py", "train.py"]
    assert files["loaders.py"] == (repo / "payloads" / "ddp" / "loaders.py").read_bytes()
    script = tmp_path / "mine.py"
    script.write_text("print('hello')\n")
    job = ddp.resolve(ddp.DdpRequest(inventory=inventory, backend="ssh", iface="eth1", script=script), cluster, repo)
    assert sorted(ddp.ssh_launches(job, "ddp-test", {h.name: "/py" for h in job.hosts})[0].files) == ["mine.py"]
