"""Validation of a DistDGL partition config (<graph_name>.json), shared by partition.py and launch.py.

Standard library only: launch.py imports it before anything heavy. A config is accepted when
num_parts matches what the caller expects, every part's files exist, and the node and edge maps
tile [0, num_nodes) and [0, num_edges) with one range per part and type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PartitionConfigError(Exception):
    """The partition config is missing, malformed or inconsistent; the message names the problem."""


@dataclass(frozen=True)
class PartitionInfo:
    path: Path
    graph_name: str
    num_parts: int
    num_nodes: int
    num_edges: int
    part_method: str


def _ranges(kind: str, raw: Any, num_parts: int) -> list[tuple[int, int]]:
    """Flatten DGL's {type: [[start, end] per part]} (or the older bare list) into ranges."""
    per_type = raw if isinstance(raw, dict) else {"_": raw}
    if not per_type:
        raise PartitionConfigError(f"{kind}_map is empty")
    out = []
    for type_name, ranges in per_type.items():
        if not isinstance(ranges, list) or len(ranges) != num_parts:
            raise PartitionConfigError(
                f"{kind}_map[{type_name!r}] has {len(ranges) if isinstance(ranges, list) else 'no'} "
                f"ranges, expected one per part ({num_parts})"
            )
        for part, item in enumerate(ranges):
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) for v in item)):
                raise PartitionConfigError(f"{kind}_map[{type_name!r}][{part}] is not [start, end]: {item!r}")
            start, end = item
            if not 0 <= start <= end:
                raise PartitionConfigError(f"{kind}_map[{type_name!r}][{part}] = {item} is not a range")
            out.append((start, end))
    return out


def _check_tiling(kind: str, ranges: list[tuple[int, int]], total: int | None) -> int:
    position = 0
    for start, end in sorted(ranges):
        if start != position:
            raise PartitionConfigError(
                f"{kind}_map has {'a gap' if start > position else 'an overlap'} at {kind} id {position}"
            )
        position = end
    if total is not None and position != total:
        raise PartitionConfigError(f"{kind}_map covers {position} {kind}s but num_{kind}s is {total}")
    return position


def validate_partition_config(path: str | Path, expect_parts: int | None = None) -> PartitionInfo:
    """Check the config at ``path``; raise PartitionConfigError naming the first problem."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PartitionConfigError(f"partition config {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise PartitionConfigError(f"partition config {path} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise PartitionConfigError(f"partition config {path} is not a JSON object")
    for key in ("graph_name", "num_parts", "node_map", "edge_map"):
        if key not in meta:
            raise PartitionConfigError(f"partition config {path} lacks {key!r}")
    num_parts = meta["num_parts"]
    if not isinstance(num_parts, int) or num_parts < 1:
        raise PartitionConfigError(f"num_parts in {path} is {num_parts!r}, not a positive integer")
    if expect_parts is not None and num_parts != expect_parts:
        raise PartitionConfigError(
            f"num_parts mismatch: {path.name} has {num_parts} partition(s) but {expect_parts} "
            f"machine(s) were given; DistDGL needs one partition per machine"
        )
    base = path.parent
    for part in range(num_parts):
        entry = meta.get(f"part-{part}")
        if not isinstance(entry, dict):
            raise PartitionConfigError(f"partition config {path} lacks 'part-{part}'")
        for key in ("node_feats", "edge_feats", "part_graph"):
            if key not in entry:
                raise PartitionConfigError(f"part-{part} in {path} lacks {key!r}")
            file = base / entry[key]
            if not file.is_file():
                raise PartitionConfigError(f"part-{part} {key} file {file} does not exist")
    num_nodes = meta.get("num_nodes")
    num_edges = meta.get("num_edges")
    nodes = _check_tiling("node", _ranges("node", meta["node_map"], num_parts), num_nodes)
    edges = _check_tiling("edge", _ranges("edge", meta["edge_map"], num_parts), num_edges)
    return PartitionInfo(
        path=path.resolve(),
        graph_name=str(meta["graph_name"]),
        num_parts=num_parts,
        num_nodes=nodes,
        num_edges=edges,
        part_method=str(meta.get("part_method", "")),
    )
