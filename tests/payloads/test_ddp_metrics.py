"""The DDP payload's metrics lines (PYCTL_METRICS, stdout, every rank, once per epoch), which
`pyctl train ddp --follow` and `pyctl train report` read, parsed with pyctl's own parser."""

from __future__ import annotations

from pyctl.train import progress, report

FLAGS = ("--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--num-threads", "1")


def test_every_rank_prints_one_metrics_line_per_epoch(ddp_torchrun):
    result = ddp_torchrun(2, *FLAGS)
    assert result.returncode == 0, result
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith(progress.METRICS_PREFIX)]
    epochs = [progress.parse(ln) for ln in lines]
    assert sorted((e.epoch, e.rank) for e in epochs) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for e in epochs:
        assert e.epochs == 2 and e.rank_samples_per_s > 0 and e.samples_per_s > 0
        assert e.accuracy_name == "test_accuracy" and 0 <= e.accuracy <= 1
    # Loss and accuracy are the job's (all-reduced): every rank reports the same.
    assert len({(e.loss, e.accuracy) for e in epochs if e.epoch == 2}) == 1
    figures = report.collect("j", result.stdout.splitlines(), "ddp")
    assert [e.epoch for e in figures.epochs] == [1, 2] and sorted(figures.ranks) == [0, 1]
