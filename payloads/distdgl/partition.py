"""Partition a graph for DistDGL, cached on a shared path.

    python partition.py --graph synthetic --nodes 3000 --num-parts 2 --output /shared/partitions
    python partition.py --graph-path my.bin --num-parts 4 --output /shared/partitions

The result lives in ``<output>/<name>-<N>p-<method>-<key>/`` where key hashes the graph identity
(a file's content hash, the synthetic parameters, or the data set name), the partitioning flags
and the dgl version. A second call with the same inputs is a no-op that reports the cached path.
Partitions are written to a temporary directory next to the target and renamed into place, so a
reader never sees a half-written partition and two concurrent writers cannot mix their output.

Prints one JSON line on stdout: {"part_config", "num_parts", "seconds", "cached", ...}.
Exit codes: 0 done, 2 bad flags, 3 graph could not be loaded, 4 the partition is invalid.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from graphs import GraphSourceError, add_graph_arguments, graph_identity, load_graph
from partconfig import PartitionConfigError, validate_partition_config

MANIFEST = "pyctl-partition.json"
FORMAT_VERSION = 1  # bump when the layout written here changes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_graph_arguments(parser)
    parser.add_argument("--num-parts", type=int, required=True, help="number of partitions = machines")
    parser.add_argument("--part-method", choices=("metis", "random"), default="metis")
    parser.add_argument("--output", type=Path, required=True, help="cache directory (the shared path)")
    parser.add_argument("--name", help="graph name inside DistDGL (default: the source's name)")
    parser.add_argument(
        "--no-balance-train",
        dest="balance_train",
        action="store_false",
        help="do not balance train_mask nodes across parts (balance_ntypes)",
    )
    parser.add_argument(
        "--no-balance-edges",
        dest="balance_edges",
        action="store_false",
        help="do not balance edges across parts",
    )
    args = parser.parse_args(argv)
    if args.num_parts < 1:
        parser.error("--num-parts must be at least 1")
    return args


def cache_key(identity: dict, args: argparse.Namespace, name: str, dgl_version: str) -> str:
    material = {
        "format": FORMAT_VERSION,
        "graph": identity,
        "name": name,
        "num_parts": args.num_parts,
        "part_method": args.part_method,
        "balance_train": args.balance_train,
        "balance_edges": args.balance_edges,
        "num_hops": 1,
        "dgl": dgl_version,
    }
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _partition_into(graph, name: str, args: argparse.Namespace, out_dir: Path) -> None:
    import dgl

    balance = graph.ndata["train_mask"].int() if args.balance_train else None
    dgl.distributed.partition_graph(
        graph,
        name,
        args.num_parts,
        str(out_dir),
        part_method=args.part_method,
        balance_ntypes=balance,
        balance_edges=args.balance_edges,
    )


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    identity = graph_identity(args)
    name = args.name or identity["name"].replace("-", "_")
    dgl_version = importlib.metadata.version("dgl")  # no dgl import: a cache hit stays cheap
    key = cache_key(identity, args, name, dgl_version)
    target = args.output / f"{name}-{args.num_parts}p-{args.part_method}-{key[:12]}"
    config = target / f"{name}.json"
    result = {"part_config": str(config), "num_parts": args.num_parts, "graph_name": name, "key": key}
    if target.exists():
        validate_partition_config(config, expect_parts=args.num_parts)
        return {**result, "seconds": round(time.monotonic() - started, 3), "cached": True}

    graph = load_graph(args)
    args.output.mkdir(parents=True, exist_ok=True)
    tmp = args.output / f".tmp-{key[:12]}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _partition_into(graph, name, args, tmp)
        validate_partition_config(tmp / f"{name}.json", expect_parts=args.num_parts)
        manifest = {
            "key": key,
            "graph": identity,
            "graph_name": name,
            "num_parts": args.num_parts,
            "part_method": args.part_method,
            "balance_train": args.balance_train,
            "balance_edges": args.balance_edges,
            "dgl": dgl_version,
            "num_nodes": graph.num_nodes(),
            "num_edges": graph.num_edges(),
            "num_classes": int(graph.ndata["label"].max()) + 1,
            "feat_dim": int(graph.ndata["feat"].shape[1]),
            "seconds": round(time.monotonic() - started, 3),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            tmp.rename(target)
            cached = False
        except OSError:
            if not target.exists():
                raise
            cached = True  # another writer won the race with identical inputs: use theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    validate_partition_config(config, expect_parts=args.num_parts)
    return {**result, "seconds": round(time.monotonic() - started, 3), "cached": cached}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # DGL and the loaders print progress on stdout: keep stdout for the one result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
    except GraphSourceError as exc:
        print(f"partition.py: {exc}", file=sys.stderr)
        return 3
    except PartitionConfigError as exc:
        print(f"partition.py: invalid partition: {exc}", file=sys.stderr)
        return 4
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
