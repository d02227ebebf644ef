"""`pyctl train report`: a finished (or running) job's metrics as tables and figures.

The metrics are the payloads' epoch lines in the job's log (see `progress`): loss and accuracy per
epoch from rank 0, throughput per rank from every rank's `rank_samples_per_s` (DDP; DistDGL reports
its trainer 0 only). Figures are drawn with matplotlib (imported only here, with its Agg backend):
a PNG, or an HTML page with the figure inline (SVG) and the same tables.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from pyctl.errors import UsageError
from pyctl.train.progress import Epoch, parse

FORMATS = (".png", ".html")


@dataclass
class Figures:
    """What the report shows: one row per epoch (rank 0) and per-rank throughput."""

    job_id: str
    epochs: list[Epoch] = field(default_factory=list)  # rank 0, by epoch (the last record of an epoch wins)
    ranks: dict[int, list[float]] = field(default_factory=dict)  # rank -> samples/s of each epoch

    @property
    def accuracy_name(self) -> str:
        return next((e.accuracy_name for e in self.epochs if e.accuracy_name), "accuracy")

    def epoch_rows(self) -> list[list[str]]:
        return [
            [str(e.epoch), _fmt(e.loss, 4), _fmt(e.accuracy, 4), _fmt(e.samples_per_s, 1), _fmt(e.seconds, 3)]
            for e in self.epochs
        ]

    def rank_rows(self) -> list[list[str]]:
        return [
            [str(rank), str(len(rates)), _fmt(mean(rates), 1), _fmt(min(rates), 1), _fmt(max(rates), 1)]
            for rank, rates in sorted(self.ranks.items())
        ]


EPOCH_COLUMNS = ("epoch", "loss", "accuracy", "samples/s", "seconds")
RANK_COLUMNS = ("rank", "epochs", "mean samples/s", "min", "max")


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def collect(job_id: str, lines: Iterable[str], workload: str) -> Figures:
    figures = Figures(job_id)
    by_epoch: dict[int, Epoch] = {}
    for line in lines:
        epoch = parse(line, workload)
        if epoch is None:
            continue
        if epoch.rank == 0:
            by_epoch[epoch.epoch] = epoch
        if epoch.rank_samples_per_s is not None:
            figures.ranks.setdefault(epoch.rank, []).append(epoch.rank_samples_per_s)
    figures.epochs = [by_epoch[k] for k in sorted(by_epoch)]
    return figures


def tables(figures: Figures) -> list[object]:
    """rich Tables: per epoch, and per rank when the payload reports it."""
    from rich.table import Table

    epochs = Table(title=f"{figures.job_id}: per epoch (rank 0)", title_justify="left")
    for column in EPOCH_COLUMNS:
        epochs.add_column(figures.accuracy_name if column == "accuracy" else column, justify="right")
    for row in figures.epoch_rows():
        epochs.add_row(*row)
    result: list[object] = [epochs]
    if figures.ranks:
        ranks = Table(title=f"{figures.job_id}: throughput per rank", title_justify="left")
        for column in RANK_COLUMNS:
            ranks.add_column(column, justify="right")
        for row in figures.rank_rows():
            ranks.add_row(*row)
        result.append(ranks)
    return result


def check_out(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"--out {path}: write a .png or an .html file")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: the folder {path.parent} does not exist")


def _pyplot() -> object:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "drawing the report needs matplotlib, which is not installed",
            hint="pip install -r requirements.txt (or pip install matplotlib); the tables print without --out",
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(figures: Figures, fmt: str) -> bytes:
    """The three panels (loss, accuracy, throughput per rank) as PNG or SVG bytes."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax, rank_ax) = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    xs = [e.epoch for e in figures.epochs]
    loss_ax.plot(xs, [e.loss for e in figures.epochs], marker="o", color="tab:red")
    loss_ax.set(title="loss", xlabel="epoch")
    acc_ax.plot(xs, [e.accuracy for e in figures.epochs], marker="o", color="tab:green")
    acc_ax.set(title=figures.accuracy_name, xlabel="epoch")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if figures.ranks:
        ranks = sorted(figures.ranks)
        means = [mean(figures.ranks[r]) for r in ranks]
        low = [m - min(figures.ranks[r]) for m, r in zip(means, ranks, strict=True)]
        high = [max(figures.ranks[r]) - m for m, r in zip(means, ranks, strict=True)]
        rank_ax.bar([str(r) for r in ranks], means, yerr=[low, high], capsize=4, color="tab:blue")
        rank_ax.set(title="throughput per rank", xlabel="rank", ylabel="samples/s: mean, min-max over epochs")
    elif any(e.samples_per_s is not None for e in figures.epochs):
        rank_ax.plot(xs, [e.samples_per_s for e in figures.epochs], marker="o")
        rank_ax.set(title="job throughput (no per-rank metrics)", xlabel="epoch", ylabel="samples/s")
    else:
        rank_ax.bar(xs, [e.seconds or 0 for e in figures.epochs], color="tab:gray")
        rank_ax.set(title="epoch time (the payload reports no throughput)", xlabel="epoch", ylabel="seconds")
    rank_ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"pyctl train report: {figures.job_id}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _html_table(columns: Iterable[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write(figures: Figures, path: Path) -> None:
    """The report file: a PNG, or an HTML page with the figure (SVG) and the tables."""
    if path.suffix.lower() == ".png":
        path.write_bytes(draw(figures, "png"))
        return
    svg = draw(figures, "svg").decode("utf-8")
    svg = svg[svg.index("<svg") :]  # drop the XML prolog inside HTML
    columns = [figures.accuracy_name if c == "accuracy" else c for c in EPOCH_COLUMNS]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pyctl train report: {html.escape(figures.job_id)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
        f"<h1>pyctl train report: {html.escape(figures.job_id)}</h1>",
        svg,
        "<h2>Per epoch (rank 0)</h2>",
        _html_table(columns, figures.epoch_rows()),
    ]
    if figures.ranks:
        parts += ["<h2>Throughput per rank</h2>", _html_table(RANK_COLUMNS, figures.rank_rows())]
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
