"""Live progress (`--follow` on a terminal) and `pyctl train report`, from the payloads' metrics lines.

The DDP lines below are what payloads/ddp/train.py printed for a 2-rank digits run (torchrun
--standalone, 3 epochs), with the merged log's "[host] " prefix; the DistDGL line is train.py's shape.
"""

from __future__ import annotations

import io
import json
import re
import time
from statistics import mean

import pytest
from rich.console import Console

from pyctl import cli
from pyctl.config import load_settings
from pyctl.train import progress
from pyctl.train.jobs import JobRecord, JobStore

RECORDS = [
    (1, 0, 2.047042, 0.661111, 3341.81, 0.4707, 1691.19),
    (1, 1, 2.047042, 0.661111, 3352.75, 0.4763, 1682.02),
    (2, 0, 0.525602, 0.875, 4887.99, 0.7787, 2447.05),
    (2, 1, 0.525602, 0.875, 4835.52, 0.7854, 2472.94),
    (3, 0, 0.18738, 0.925, 5792.43, 1.0508, 2899.62),
    (3, 1, 0.18738, 0.925, 5791.56, 1.0548, 2947.16),
]


def _ddp_line(epoch, rank, loss, acc, rate, elapsed, rank_rate, host="w1") -> str:
    record = {
        "event": "epoch", "epoch": epoch, "loss": loss, "test_accuracy": acc, "samples_per_s": rate,
        "samples": 1438, "train_seconds": 0.3, "elapsed_s": elapsed, "world_size": 2, "restart_count": 0,
        "epochs": 3, "rank": rank, "rank_samples_per_s": rank_rate,
    }  # fmt: skip
    return f"[{host}] PYCTL_METRICS {json.dumps(record)}"


LOG = [
    "[w1] [host=w1 rank=0/2 local_rank=0] loading digits",
    *[_ddp_line(*r) for r in RECORDS],
    '[w1] PYCTL_SUMMARY {"event": "summary", "test_accuracy": 0.925, "epochs": 3}',
]


def test_metrics_lines_of_both_payloads_parse_and_others_do_not():
    epoch = progress.parse(LOG[1])
    assert (epoch.epoch, epoch.rank, epoch.epochs, epoch.loss, epoch.accuracy) == (1, 0, 3, 2.047042, 0.661111)
    assert (epoch.samples_per_s, epoch.rank_samples_per_s, epoch.accuracy_name) == (3341.81, 1691.19, "test_accuracy")
    distdgl = (
        '{"event": "epoch", "epoch": 0, "loss": 1.2, "train_acc": 0.5, "seconds": 2.0, "rank": 0, "world_size": 2}'
    )
    epoch = progress.parse(f"[node 0] {distdgl}", "distdgl")
    assert (epoch.epoch, epoch.accuracy, epoch.accuracy_name, epoch.seconds) == (1, 0.5, "train_acc", 2.0)
    for other in (LOG[0], LOG[-1], "[w1] {not json", '[w1] {"event": "summary"}', "", "[w1] epoch 1/3 loss=1"):
        assert progress.parse(other) is None, other
    assert progress.epochs_asked({"payload_args": ["--dataset", "digits", "--epochs", "7"]}) == 7
    assert progress.epochs_asked({"train_args": ["--epochs", "4", "--hidden", "8", "--epochs=6"]}) == 6
    assert progress.parse(f"[default0]:{distdgl}", "distdgl").epoch == 1
    assert progress.epochs_asked({}) is None


def test_the_progress_line_says_epoch_rate_loss_accuracy_and_eta():
    tracker = progress.Tracker("ddp-1", "ddp", epochs=None)
    assert tracker.line() == "ddp-1: waiting for the first epoch"
    for line in LOG[:5]:
        tracker.feed(line)
    # rank 0 ended epoch 2 after 0.7787 s: 0.3894 s per epoch, one epoch left
    assert tracker.line() == "ddp-1: epoch 2/3 | 4,888 samples/s | loss 0.5256 | accuracy 0.8750 | ETA 0:00"
    assert tracker.eta_s() == pytest.approx(0.7787 / 2)


def test_on_a_terminal_the_progress_line_follows_the_log():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200, color_system=None)
    plain: list[str] = []
    with progress.LiveLog(progress.Tracker("ddp-1", "ddp", 3), console, plain.append) as view:
        for line in LOG:
            view.write(line)
    text = screen.getvalue()
    assert plain == [], "on a terminal the log goes through the live console"
    assert LOG[0] in text and LOG[-1] in text
    assert "ddp-1: epoch 3/3 | 5,792 samples/s | loss 0.1874 | accuracy 0.9250 | ETA 0:00" in text
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).strip().splitlines()
    assert visible[-1].split("\r")[-1].startswith("ddp-1: epoch 3/3"), "the progress line stays below the log"


def test_not_on_a_terminal_the_lines_are_plain_as_before():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False)
    plain: list[str] = []
    with progress.LiveLog(progress.Tracker("ddp-1", "ddp", 3), console, plain.append) as view:
        for line in LOG:
            view.write(line)
    assert plain == LOG
    assert screen.getvalue() == ""


def _job(state_dir, lines: list[str], workload: str = "ddp") -> str:
    store = JobStore(load_settings())
    record = JobRecord(id="ddp-261207-010000-abcd", workload=workload, backend="ssh", created=time.time())
    store.create(record)
    (store.dir(record.id) / "output.log").write_text("\n".join(lines) + "\n")
    return record.id


def test_report_prints_the_figures_table_and_draws_a_png(state_dir, tmp_path, capsys):
    job = _job(state_dir, LOG)
    png = tmp_path / "report.png"
    assert cli.main(["train", "report", job[:10], "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.count("│") >= 6]
    cells = [[c.strip() for c in row] for row in rows]
    rank0 = [r for r in RECORDS if r[1] == 0]
    for epoch, _, loss, acc, rate, _, _ in rank0:
        assert [str(epoch), f"{loss:.4f}", f"{acc:.4f}", f"{rate:.1f}", "0.300"] in cells, out
    for rank in (0, 1):
        rates = [r[6] for r in RECORDS if r[1] == rank]
        assert [str(rank), "3", f"{mean(rates):.1f}", f"{min(rates):.1f}", f"{max(rates):.1f}"] in cells, out


def test_report_html_holds_the_figure_and_the_same_tables(state_dir, tmp_path, capsys):
    job = _job(state_dir, LOG)
    page = tmp_path / "report.html"
    assert cli.main(["train", "report", job, "--out", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "</html>" in text
    assert "<td>0.1874</td><td>0.9250</td><td>5792.4</td>" in text
    assert f"<td>1</td><td>3</td><td>{mean([1682.02, 2472.94, 2947.16]):.1f}</td>" in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--out", "r.pdf"], "--out r.pdf: write a .png or an .html file"),
        ([], "has no epoch metrics in its log"),
    ],
)
def test_report_bad_input_is_one_line(state_dir, capsys, args, expected):
    job = _job(state_dir, [LOG[0]])
    assert cli.main(["train", "report", job, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyctl: error: ") and expected in err and "Traceback" not in err


def test_report_of_a_distdgl_job_uses_its_epoch_lines(state_dir, capsys):
    line = '[node 0] {"event": "epoch", "epoch": %d, "loss": %s, "train_acc": %s, "seconds": 2.5, "rank": 0}'
    job = _job(state_dir, [line % (0, 1.25, 0.5), line % (1, 0.75, 0.625)], workload="distdgl")
    assert cli.main(["train", "report", job]) == 0
    out = capsys.readouterr().out
    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in out.splitlines() if ln.count("│") >= 6]
    assert cells == [["1", "1.2500", "0.5000", "", "2.500"], ["2", "0.7500", "0.6250", "", "2.500"]], out
    assert "train_acc" in out and "per rank" not in out


def test_logs_follow_of_a_finished_ssh_job_prints_its_lines_plain(state_dir, capsys):
    """Not on a terminal (capsys), `logs --follow` goes through the live view and prints lines as before."""
    job = _job(state_dir, LOG)
    store = JobStore(load_settings())
    store.update(job, lambda rec: (setattr(rec, "state", "succeeded"), setattr(rec, "exit_code", 0)))
    assert cli.main(["train", "logs", job, "--follow"]) == 0
    assert capsys.readouterr().out.splitlines() == LOG
