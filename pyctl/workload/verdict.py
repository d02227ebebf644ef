"""The workload check's judgement: all-reduce figures per pair of nodes in, a verdict per node out.

How a verdict is made (README.md, "How `doctor --workload` judges"):

- failed: the node could not take part (SSH, interpreter, torch, interface, a probe process that
  died, a timeout) or an all-reduce with one of its peers failed; the reason says which.
- slow: the node's best link (the highest bus bandwidth it reached with any peer) is below
  `SLOW_FACTOR` x the median of the other nodes' best links, or below `--min-gbps` when given. The best
  link, not the mean, is used so that one bad cable does not condemn both of its ends: a node whose
  every link is slow is the slow one. With 2 nodes there is one link and no other node to compare
  with, so only `--min-gbps` can call a node slow.
- ok: otherwise. A link below `SLOW_FACTOR` x the lower of its two ends' best links (both ends do
  much better elsewhere: a cable or switch port) is named in the reason of the ok nodes at its ends,
  and marked in `links`.

Nothing here prints or touches a host.
"""

from __future__ import annotations

import statistics
from typing import Any

SLOW_FACTOR = 0.5
OK, SLOW, FAILED = "ok", "slow", "failed"


def _node(verdict: str, reason: str | None, gbps: float | None) -> dict[str, Any]:
    return {"verdict": verdict, "reason": reason, "allreduce_gbps": gbps}


def _fmt(gbps: float) -> str:
    return f"{gbps:.3g} Gbit/s"


def judge(
    names: list[str],
    pairs: list[dict[str, Any]],
    failed: dict[str, str],
    ddp: dict[str, Any],
    *,
    slow_factor: float = SLOW_FACTOR,
    min_gbps: float | None = None,
) -> dict[str, Any]:
    """The report: `{"nodes": {NAME: {"verdict", "reason", "allreduce_gbps"}}, "ddp": ddp, "links": [...]}`.

    `pairs` are the probe's entries (`a`, `b`, `gbps`, `error`); `failed` maps a node to why it could
    not take part; `ddp` is `{"loss", "passed", "reason"}`.
    """
    nodes: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in failed:
            nodes[name] = _node(FAILED, failed[name], None)
    for pair in pairs:
        if pair.get("error"):
            for me, other in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
                if me not in nodes:
                    nodes[me] = _node(FAILED, f"the all-reduce with {other} failed: {pair['error']}", None)
    measured = [p for p in pairs if not p.get("error") and p.get("gbps") is not None]
    best: dict[str, float] = {}
    for pair in measured:
        for name in (pair["a"], pair["b"]):
            if name not in nodes:
                best[name] = max(best.get(name, 0.0), float(pair["gbps"]))
    for name, gbps in best.items():
        others = [v for k, v in best.items() if k != name]
        reasons = []
        if others:
            reference = statistics.median(others)
            if gbps < slow_factor * reference:
                reasons.append(
                    f"its best all-reduce link reached {_fmt(gbps)}, {gbps / reference:.2f}x the median of the other "
                    f"nodes' best links ({_fmt(reference)}; slow below {slow_factor}x)"
                )
        if min_gbps is not None and gbps < min_gbps:
            reasons.append(f"its best all-reduce link reached {_fmt(gbps)}, below --min-gbps {min_gbps:g}")
        nodes[name] = _node(SLOW if reasons else OK, "; ".join(reasons) or None, round(gbps, 4))
    links = _links(pairs, best, slow_factor)
    for link in links:
        if not link["slow"]:
            continue
        for me, other in ((link["a"], link["b"]), (link["b"], link["a"])):
            entry = nodes.get(me)
            if entry is not None and entry["verdict"] == OK:
                note = (
                    f"the link to {other} is slow: {_fmt(link['gbps'])}, "
                    f"{link['ratio']:.2f}x what both ends reach elsewhere"
                )
                entry["reason"] = f"{entry['reason']}; {note}" if entry["reason"] else note
    healthy = [n for n in names if n not in nodes]
    for name in healthy:
        alone = len(names) - len(failed) <= 1
        nodes[name] = (
            _node(OK, "no other node to measure against", None)
            if alone
            else _node(FAILED, "not measured: the all-reduce probe gave no figure for it", None)
        )
    return {"nodes": {n: nodes[n] for n in names}, "ddp": ddp, "links": links}


def _links(pairs: list[dict[str, Any]], best: dict[str, float], slow_factor: float) -> list[dict[str, Any]]:
    """Every pair as measured; `ratio` is its figure over the lower of its two ends' best links, so a
    link is slow only when both of its ends did much better elsewhere (a slow node explains its own)."""
    links = []
    for pair in pairs:
        gbps = pair.get("gbps")
        ends = [best[n] for n in (pair["a"], pair["b"]) if n in best]
        reference = min(ends) if len(ends) == 2 else None
        ratio = round(gbps / reference, 3) if gbps is not None and reference else None
        links.append(
            {
                "a": pair["a"],
                "b": pair["b"],
                "gbps": gbps,
                "ratio": ratio,
                "slow": ratio is not None and ratio < slow_factor,
                "error": pair.get("error"),
            }
        )
    return links


def passed(report: dict[str, Any]) -> bool:
    """Every node ok and the DDP run below its loss threshold."""
    return all(n["verdict"] == OK for n in report["nodes"].values()) and bool(report["ddp"].get("passed"))
