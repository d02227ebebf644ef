"""payloads/ddp/train.py end to end on the bundled digits set: single process, torchrun, restart, flags.

Everything runs for real (torch, gloo, torchrun) on CPU with one thread per rank.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
from pathlib import Path

import pytest

DDP_REPO_ROOT = Path(__file__).resolve().parents[2]

# One configuration shared by the two-rank run and the restart run, so their results can be compared.
DIGITS_EPOCHS = 10
DIGITS_FLAGS = ("--dataset", "digits", "--epochs", str(DIGITS_EPOCHS), "--batch-size", "32", "--lr", "0.05")
DIGITS_FLAGS += ("--seed", "0", "--num-threads", "1")
FAIL_EPOCH, FAIL_STEP, FAIL_RANK = 4, 3, 1


def assert_sane_epoch(record: dict, world_size: int) -> None:
    assert record["world_size"] == world_size
    assert math.isfinite(record["loss"]) and record["loss"] >= 0
    assert 0.0 <= record["test_accuracy"] <= 1.0
    assert record["samples_per_s"] > 0


def test_single_process_digits(ddp_run, ddp_log, tmp_path: Path):
    log_path = tmp_path / "log.jsonl"
    result = ddp_run(
        *("--dataset", "digits", "--epochs", "3", "--lr", "0.05", "--num-threads", "1"),
        *("--log-path", str(log_path)),
    )
    assert result.returncode == 0, result

    epochs, summaries = ddp_log(log_path)
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for record in epochs:
        assert_sane_epoch(record, world_size=1)
        assert record["restart_count"] == 0
        assert record["samples"] == 1437  # the fixed 80 % train split of 1797 digits
    assert summaries == [result.summary]
    summary = result.summary
    assert summary["epochs"] == 3
    assert summary["world_size"] == 1
    assert summary["resumed_from_epoch"] == 0
    assert (summary["train_samples"], summary["test_samples"]) == (1437, 360)
    assert summary["test_accuracy"] >= 0.8
    assert summary["seconds"] > 0
    # Start-up stages are logged with host and ranks, and the single-process mode says so.
    assert "rank=0/1 local_rank=0] init_process_group backend=gloo" in result.stderr
    assert "single process (no torchrun environment)" in result.stderr
    assert "] done: process group destroyed" in result.stderr


def test_rerun_of_a_finished_job_trains_nothing(ddp_run, ddp_log, tmp_path: Path):
    """A checkpoint that holds every epoch: the job only evaluates and reports. A temp file that a
    killed writer left behind is removed at start."""
    log_path, checkpoint = tmp_path / "log.jsonl", tmp_path / "ckpt.pt"
    flags = ("--dataset", "digits", "--epochs", "2", "--lr", "0.05", "--num-threads", "1")
    flags += ("--log-path", str(log_path), "--checkpoint-path", str(checkpoint))
    first = ddp_run(*flags)
    assert first.returncode == 0, first
    stale = tmp_path / ".ckpt.pt.tmp-killed"
    stale.write_bytes(b"half a checkpoint")

    again = ddp_run(*flags)
    assert again.returncode == 0, again
    assert not stale.exists()
    assert "removed a temp file left by a killed writer" in again.stderr
    epochs, summaries = ddp_log(log_path)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert summaries == [first.summary, again.summary]
    assert again.summary["epochs"] == 2
    assert again.summary["resumed_from_epoch"] == 2
    assert again.summary["test_accuracy"] == first.summary["test_accuracy"]


def test_flags_take_effect(ddp_run, ddp_log, tmp_path: Path):
    """--max-steps-per-epoch and --batch-size bound the samples, --num-threads and --seed show up."""
    log_path = tmp_path / "nested" / "log.jsonl"
    result = ddp_run(
        *("--dataset", "digits", "--epochs", "2", "--max-steps-per-epoch", "3", "--batch-size", "16"),
        *("--num-threads", "1", "--seed", "7", "--lr", "0.02", "--log-path", str(log_path)),
    )
    assert result.returncode == 0, result
    epochs, _ = ddp_log(log_path)
    assert [r["samples"] for r in epochs] == [48, 48]
    assert "threads=1" in result.stderr

    other_seed = ddp_run(
        *("--dataset", "digits", "--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "16"),
        *("--num-threads", "1", "--seed", "8", "--lr", "0.02"),
    )
    assert other_seed.returncode == 0, other_seed
    assert other_seed.summary["loss"] != epochs[0]["loss"]


@pytest.fixture(scope="module")
def two_rank_run(ddp_torchrun, ddp_log, tmp_path_factory):
    """The reference: torchrun --standalone --nproc-per-node 2 on digits, gloo, one thread per rank."""
    work = tmp_path_factory.mktemp("two-ranks")
    log_path, checkpoint = work / "log.jsonl", work / "ckpt.pt"
    result = ddp_torchrun(
        2,
        *DIGITS_FLAGS,
        "--backend",
        "gloo",
        "--log-path",
        str(log_path),
        "--checkpoint-path",
        str(checkpoint),
    )
    assert result.returncode == 0, result
    epochs, summaries = ddp_log(log_path)
    return result, epochs, summaries, work


def test_torchrun_two_ranks_digits(two_rank_run):
    result, epochs, summaries, work = two_rank_run
    # Only rank 0 writes: one log line per epoch, one summary in the log and on stdout, one checkpoint.
    assert [r["epoch"] for r in epochs] == list(range(1, DIGITS_EPOCHS + 1))
    for record in epochs:
        assert_sane_epoch(record, world_size=2)
        assert record["restart_count"] == 0
    assert len(summaries) == 1
    assert summaries[0] == result.summary
    summary = result.summary
    assert summary["world_size"] == 2
    assert summary["epochs"] == DIGITS_EPOCHS
    assert summary["resumed_from_epoch"] == 0
    assert summary["test_accuracy"] >= 0.90
    assert sorted(p.name for p in work.iterdir()) == ["ckpt.pt", "ckpt.pt.sha256", "log.jsonl"]
    # The checksum sidecar is in sha256sum's format and matches the checkpoint it sits beside.
    digest, name = (work / "ckpt.pt.sha256").read_text().split()
    assert name == "ckpt.pt"
    assert digest == hashlib.sha256((work / "ckpt.pt").read_bytes()).hexdigest()
    assert "rank=1/2 local_rank=1] init_process_group backend=gloo" in result.stderr
    assert "rank=0/2 local_rank=0] init_process_group backend=gloo" in result.stderr
    assert "rank=1/2 local_rank=1] epoch" not in result.stderr  # progress comes from rank 0 alone


def test_two_ranks_learn_what_one_process_learns_with_the_global_batch(ddp_run, ddp_torchrun, ddp_log, tmp_path):
    """The payload's DDP tuning (one bucket, gradients as bucket views, static graph) changes no gradient.

    DistributedSampler deals rank r every other index of one permutation, so step k of 2 ranks x 32
    covers the same 64 samples as step k of one process with batch 64, and DDP averages the two
    gradients into that batch's mean gradient: the loss curves agree to rounding.
    """
    flags = ("--dataset", "digits", "--epochs", "3", "--lr", "0.05", "--seed", "0", "--num-threads", "1")
    flags += ("--max-steps-per-epoch", "22")  # 22 x 64 = 1408 of 1437: no sampler padding on either side
    one = ddp_run(*flags, "--batch-size", "64", "--log-path", str(tmp_path / "one.jsonl"))
    two = ddp_torchrun(2, *flags, "--batch-size", "32", "--backend", "gloo", "--log-path", str(tmp_path / "two.jsonl"))
    assert one.returncode == 0, one
    assert two.returncode == 0, two
    one_epochs, _ = ddp_log(tmp_path / "one.jsonl")
    two_epochs, _ = ddp_log(tmp_path / "two.jsonl")
    assert [r["samples"] for r in one_epochs] == [r["samples"] for r in two_epochs] == [1408] * 3
    for single, ranks in zip(one_epochs, two_epochs, strict=True):
        assert ranks["loss"] == pytest.approx(single["loss"], rel=1e-3), (single, ranks)
        assert abs(ranks["test_accuracy"] - single["test_accuracy"]) <= 1 / 360 + 1e-9, (single, ranks)
    assert one_epochs[-1]["loss"] < one_epochs[0]["loss"]  # it learned something to compare


CHECK_WRAP_DDP = """
import json, sys
sys.path.insert(0, "payloads/ddp")
import torch, torch.distributed as dist, torch.nn.functional as F
import train
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
model = train.SmallCNN((1, 28, 28))
ddp = train.wrap_ddp(model, torch.device("cpu"))
F.cross_entropy(ddp(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
grads = [p.grad for p in model.parameters()]
print(json.dumps({
    "gradient_bytes": sum(g.numel() * g.element_size() for g in grads),
    "bucket_bytes_cap": ddp.bucket_bytes_cap,
    "gradient_as_bucket_view": ddp.gradient_as_bucket_view,
    "static_graph": ddp.static_graph,
    "grad_storages": len({g.untyped_storage().data_ptr() for g in grads}),
    "bucket_sizes": str(ddp._get_ddp_logging_data().get("bucket_sizes")),
}))
"""


def test_wrap_ddp_puts_the_whole_gradient_in_one_bucket_as_views_with_a_static_graph(ddp_python):
    """wrap_ddp's settings reach DDP: a bucket cap of the gradient's size rounded up to whole MiB,
    gradient_as_bucket_view and static_graph; after a step every gradient is a view of one bucket."""
    done = subprocess.run(
        [str(ddp_python), "-c", CHECK_WRAP_DDP], capture_output=True, text=True, timeout=120, cwd=DDP_REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    wired = json.loads(done.stdout.strip().splitlines()[-1])
    assert wired["gradient_bytes"] == 1686568  # SmallCNN on 28x28: the Linear(3136, 128) holds most of it
    assert wired["bucket_bytes_cap"] == 2 * 2**20  # 1.61 MiB rounded up to whole MiB (DDP's unit)
    assert wired["gradient_as_bucket_view"] is True
    assert wired["static_graph"] is True
    assert wired["bucket_sizes"] == str(wired["gradient_bytes"])  # one bucket, holding all of it
    assert wired["grad_storages"] == 1  # the gradients are views into that bucket, not copies


CHECK_CHECKPOINTS = """
import json, sys, torch
epochs = []
for path in sys.argv[1:]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "epoch", "rng"} <= set(state), sorted(state)
    assert state["model"]["features.0.weight"].shape[0] == 32
    epochs.append(state["epoch"])
print(json.dumps(epochs))
"""


@pytest.mark.parametrize(
    "store",
    [
        pytest.param("shared", id="torchrun-defaults"),
        pytest.param("fresh", id="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"),
    ],
)
def test_restart_resumes_from_checkpoint(
    store, two_rank_run, ddp_python, ddp_torchrun_argv, ddp_environ, ddp_log, ddp_summary_of, tmp_path
):
    """A worker dies mid-epoch on the first attempt; torchrun restarts the group, which resumes."""
    log_path, checkpoint = tmp_path / "log.jsonl", tmp_path / "ckpt.pt"
    argv = ddp_torchrun_argv(
        2,
        *DIGITS_FLAGS,
        *("--log-path", str(log_path), "--checkpoint-path", str(checkpoint)),
        torchrun_flags=("--max-restarts", "1"),
    )
    extra = {"PYCTL_DDP_FAIL_AT": f"{FAIL_EPOCH}:{FAIL_STEP}:{FAIL_RANK}"}
    if store == "fresh":
        extra["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    snapshots: dict[str, Path] = {}
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(argv, env=ddp_environ(**extra), stdout=out, stderr=err)
        # Copy every version of the checkpoint seen while the job runs; each must load in full.
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                data = checkpoint.read_bytes()
            except FileNotFoundError:
                data = b""
            if data:
                digest = hashlib.sha256(data).hexdigest()
                if digest not in snapshots:
                    snapshots[digest] = tmp_path / f"snapshot-{len(snapshots)}.pt"
                    snapshots[digest].write_bytes(data)
            time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
        returncode = proc.wait()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    assert returncode == 0, f"rc={returncode}\n{stdout}\n{stderr}"
    assert f"failing on purpose at epoch {FAIL_EPOCH} step {FAIL_STEP}" in stderr

    epochs, summaries = ddp_log(log_path)
    before = [r["epoch"] for r in epochs if r["restart_count"] == 0]
    after = [r["epoch"] for r in epochs if r["restart_count"] == 1]
    assert before == list(range(1, FAIL_EPOCH))
    assert after == list(range(FAIL_EPOCH, DIGITS_EPOCHS + 1))
    assert len(summaries) == 1
    assert ddp_summary_of(stdout) == summaries
    summary = summaries[0]
    assert summary["epochs"] == DIGITS_EPOCHS
    assert summary["world_size"] == 2
    assert summary["restart_count"] == 1
    assert summary["resumed_from_epoch"] == FAIL_EPOCH - 1
    assert summary["test_accuracy"] >= 0.90
    # Resuming restores model, optimizer and RNG exactly: the result equals the uninterrupted run's.
    _, reference_epochs, reference_summaries, _ = two_rank_run
    assert summary["test_accuracy"] == pytest.approx(reference_summaries[0]["test_accuracy"], abs=1e-6)
    assert epochs[-1]["loss"] == pytest.approx(reference_epochs[-1]["loss"], rel=1e-3, abs=1e-5)

    # The checkpoint on disk was always complete, and no temp file is left behind.
    assert snapshots, "the checkpoint never appeared while the job ran"
    check = subprocess.run(
        [str(ddp_python), "-c", CHECK_CHECKPOINTS, *(str(p) for p in snapshots.values()), str(checkpoint)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    seen = json.loads(check.stdout)
    assert seen[-1] == DIGITS_EPOCHS
    assert all(1 <= epoch <= DIGITS_EPOCHS for epoch in seen)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_unknown_dataset_is_rejected(ddp_run):
    result = ddp_run("--dataset", "cifar10")
    assert result.returncode == 2
    assert "invalid choice: 'cifar10'" in result.stderr


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        pytest.param(
            ("--dataset", "digits", "--data-path", "/tmp"),
            {},
            "--data-path is not used",
            id="digits-data-path",
        ),
        pytest.param(("--dataset", "fashion-mnist"), {}, "--data-path is required", id="fmnist-no-path"),
        pytest.param(("--epochs", "0"), {}, "must be a positive integer", id="zero-epochs"),
        pytest.param(("--backend", "nccl"), {}, "--backend nccl needs CUDA", id="nccl-without-gpu"),
        pytest.param((), {"PYCTL_DDP_FAIL_AT": "2:x"}, 'is not "epoch:step:rank"', id="bad-fail-at"),
    ],
)
def test_bad_flags_fail_with_one_line(ddp_run, flags, env, message):
    result = ddp_run(*flags, env=env)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1, result
