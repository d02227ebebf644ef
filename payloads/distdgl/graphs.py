"""Graph sources shared by partition.py and train.py (local mode).

Every source yields one homogeneous DGLGraph whose ndata holds feat (float32), label (int64) and
train_mask / val_mask / test_mask (bool), plus an identity dict that names the graph exactly (it
feeds the partition cache key):

- ``--graph cora|citeseer|pubmed``: DGL's Planetoid loaders (they download: internet needed).
- ``--graph ogbn-products``: OGB's loader (downloads about 1.4 GB), split from OGB's split_idx.
- ``--graph-path FILE``: a file written by ``dgl.save_graphs`` (first graph used), identified by
  the SHA-256 of its content.
- ``--graph synthetic``: a seeded stochastic block model with class-correlated features, made here
  without any download (what the tests use).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMED_GRAPHS = ("cora", "citeseer", "pubmed", "ogbn-products")
REQUIRED_NDATA = ("feat", "label", "train_mask", "val_mask", "test_mask")


class GraphSourceError(Exception):
    """A graph could not be loaded; the message is one line a user can act on."""


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic stochastic block model (all of them feed the cache key)."""

    nodes: int = 4000
    classes: int = 4
    feat_dim: int = 16
    avg_degree: float = 10.0
    homophily: float = 0.7
    p_in: float | None = None
    p_out: float | None = None
    feat_noise: float = 3.0
    train_frac: float = 0.3
    val_frac: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if self.nodes < 2 * self.classes:
            raise GraphSourceError(f"--nodes ({self.nodes}) must be at least 2 x --classes")
        if self.classes < 2:
            raise GraphSourceError("--classes must be at least 2")
        if self.feat_dim < 1:
            raise GraphSourceError("--feat-dim must be positive")
        if (self.p_in is None) != (self.p_out is None):
            raise GraphSourceError("give both --p-in and --p-out, or neither (then --avg-degree is used)")
        if self.p_in is not None and not (0 <= self.p_out <= 1 and 0 < self.p_in <= 1):
            raise GraphSourceError("--p-in and --p-out are probabilities in [0, 1]")
        if self.p_in is None and not (self.avg_degree > 0 and 0 <= self.homophily <= 1):
            raise GraphSourceError("--avg-degree must be positive and --homophily in [0, 1]")
        if not (self.train_frac > 0 and self.val_frac >= 0 and self.train_frac + self.val_frac < 1):
            raise GraphSourceError("--train-frac and --val-frac must leave a non-empty test split")


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """The graph-source flags, identical for partition.py and train.py --mode local."""
    group = parser.add_argument_group("graph source")
    group.add_argument(
        "--graph",
        choices=(*NAMED_GRAPHS, "synthetic"),
        help="a named data set (downloads) or 'synthetic' (generated offline)",
    )
    group.add_argument("--graph-path", type=Path, help="a DGL binary graph file (dgl.save_graphs)")
    group.add_argument(
        "--data-dir",
        type=Path,
        default=Path.home() / ".dgl",
        help="download cache of the named data sets",
    )
    syn = parser.add_argument_group("synthetic graph (--graph synthetic)")
    d = SyntheticSpec()
    syn.add_argument("--nodes", type=int, default=d.nodes, help="number of nodes")
    syn.add_argument("--classes", type=int, default=d.classes, help="blocks = classes")
    syn.add_argument("--feat-dim", type=int, default=d.feat_dim, help="feature size")
    syn.add_argument(
        "--avg-degree",
        type=float,
        default=d.avg_degree,
        help="expected degree, used without --p-in/--p-out",
    )
    syn.add_argument(
        "--homophily",
        type=float,
        default=d.homophily,
        help="expected share of intra-class edges with --avg-degree",
    )
    syn.add_argument("--p-in", type=float, help="edge probability inside a block (with --p-out)")
    syn.add_argument("--p-out", type=float, help="edge probability between blocks (with --p-in)")
    syn.add_argument(
        "--feat-noise",
        type=float,
        default=d.feat_noise,
        help="std of the Gaussian noise around each class centre",
    )
    syn.add_argument("--train-frac", type=float, default=d.train_frac, help="share of nodes in train_mask")
    syn.add_argument("--val-frac", type=float, default=d.val_frac, help="share of nodes in val_mask")
    syn.add_argument("--seed", type=int, default=d.seed, help="seed of the generator")


def spec_from_args(args: argparse.Namespace) -> SyntheticSpec:
    spec = SyntheticSpec(
        nodes=args.nodes,
        classes=args.classes,
        feat_dim=args.feat_dim,
        avg_degree=args.avg_degree,
        homophily=args.homophily,
        p_in=args.p_in,
        p_out=args.p_out,
        feat_noise=args.feat_noise,
        train_frac=args.train_frac,
        val_frac=args.val_frac,
        seed=args.seed,
    )
    spec.validate()
    return spec


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def graph_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What names the graph exactly, without loading it (cheap: the cache check runs first)."""
    if args.graph_path is not None and args.graph is not None:
        raise GraphSourceError("give either --graph or --graph-path, not both")
    if args.graph_path is not None:
        path = args.graph_path
        if not path.is_file():
            raise GraphSourceError(f"--graph-path {path}: no such file")
        return {"kind": "file", "name": path.stem, "sha256": file_sha256(path)}
    if args.graph is None:
        raise GraphSourceError("give --graph NAME or --graph-path FILE")
    if args.graph == "synthetic":
        return {"kind": "synthetic", "name": "synthetic", "params": spec_from_args(args).__dict__}
    return {"kind": "dataset", "name": args.graph}


def load_graph(args: argparse.Namespace):
    """Load the graph named by the flags; returns a DGLGraph with REQUIRED_NDATA."""
    identity = graph_identity(args)
    if identity["kind"] == "synthetic":
        graph = synthetic_graph(spec_from_args(args))
    elif identity["kind"] == "file":
        graph = _load_file(args.graph_path)
    elif args.graph == "ogbn-products":
        graph = _load_ogb(args.graph, args.data_dir)
    else:
        graph = _load_planetoid(args.graph, args.data_dir)
    check_graph(graph, identity["name"])
    return graph


def check_graph(graph, name: str) -> None:
    missing = [key for key in REQUIRED_NDATA if key not in graph.ndata]
    if missing:
        raise GraphSourceError(f"graph {name!r} lacks ndata {', '.join(missing)} (need {REQUIRED_NDATA})")
    if not graph.is_homogeneous:
        raise GraphSourceError(f"graph {name!r} is heterogeneous: this payload trains homogeneous graphs")


def _load_file(path: Path):
    import dgl

    try:
        graphs, _ = dgl.load_graphs(str(path))
    except Exception as exc:  # DGL raises its own DGLError or OSError
        raise GraphSourceError(f"--graph-path {path}: not a DGL graph file ({exc})") from exc
    if not graphs:
        raise GraphSourceError(f"--graph-path {path}: the file holds no graph")
    return _normalise(graphs[0])


def _download_error(name: str, exc: Exception) -> GraphSourceError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return GraphSourceError(
        f"cannot load {name!r}: download failed (no internet here?): {type(exc).__name__}: {first[:200]}"
        " -- use --graph synthetic or --graph-path FILE offline"
    )


def _load_planetoid(name: str, data_dir: Path):
    import dgl.data

    loaders = {
        "cora": dgl.data.CoraGraphDataset,
        "citeseer": dgl.data.CiteseerGraphDataset,
        "pubmed": dgl.data.PubmedGraphDataset,
    }
    try:
        dataset = loaders[name](raw_dir=str(data_dir), verbose=False)
    except Exception as exc:  # requests/urllib errors differ by version: report any of them
        raise _download_error(name, exc) from exc
    return _normalise(dataset[0])


def _load_ogb(name: str, data_dir: Path):
    import torch

    try:
        from ogb.nodeproppred import DglNodePropPredDataset
    except ImportError as exc:
        raise GraphSourceError(f"{name!r} needs the 'ogb' package (see requirements.txt)") from exc
    try:
        dataset = DglNodePropPredDataset(name=name, root=str(data_dir))
    except Exception as exc:
        raise _download_error(name, exc) from exc
    graph, labels = dataset[0]
    split = dataset.get_idx_split()
    graph.ndata["label"] = labels.reshape(-1).long()
    for key, idx in (("train_mask", "train"), ("val_mask", "valid"), ("test_mask", "test")):
        mask = torch.zeros(graph.num_nodes(), dtype=torch.bool)
        mask[split[idx]] = True
        graph.ndata[key] = mask
    return _normalise(graph)


def _normalise(graph):
    """Fix dtypes so every source looks the same to partition_graph and the model."""
    import torch

    graph.ndata["feat"] = graph.ndata["feat"].float()
    graph.ndata["label"] = graph.ndata["label"].long().reshape(-1)
    for key in ("train_mask", "val_mask", "test_mask"):
        if key in graph.ndata:
            graph.ndata[key] = graph.ndata[key].to(torch.bool)
    return graph


def synthetic_graph(spec: SyntheticSpec):
    """A stochastic block model: one block per class, features = class centre + Gaussian noise.

    Edges: with --p-in/--p-out, the numbers of intra- and inter-block pairs are drawn binomially
    from those probabilities; otherwise avg_degree * nodes / 2 undirected edges of which a share
    ``homophily`` lies inside blocks. Endpoints are uniform inside their blocks. The graph is made
    bidirected without self-loops or duplicates; masks are a seeded random split.
    """
    import dgl
    import numpy as np
    import torch

    spec.validate()
    rng = np.random.default_rng(spec.seed)
    n, k = spec.nodes, spec.classes
    labels = rng.integers(0, k, size=n)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    intra_pairs = float(np.sum(sizes * (sizes - 1) / 2))
    inter_pairs = n * (n - 1) / 2 - intra_pairs
    if spec.p_in is not None:
        n_intra = int(rng.binomial(int(intra_pairs), spec.p_in))
        n_inter = int(rng.binomial(int(inter_pairs), spec.p_out))
    else:
        total = round(spec.avg_degree * n / 2)
        n_intra = int(rng.binomial(total, spec.homophily))
        n_inter = total - n_intra

    # Intra-block pairs: pick the block by its share of pairs, then two members uniformly.
    block = rng.choice(k, size=n_intra, p=(sizes * (sizes - 1)) / np.sum(sizes * (sizes - 1)))
    offsets = np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.int64)
    by_class = np.concatenate(members)
    pick_a = (rng.random(n_intra) * sizes[block]).astype(np.int64)
    pick_b = (rng.random(n_intra) * sizes[block]).astype(np.int64)
    src_in = by_class[offsets[block] + pick_a]
    dst_in = by_class[offsets[block] + pick_b]
    # Inter-block pairs: uniform pairs, resampled until the endpoints' classes differ.
    src_out = rng.integers(0, n, size=n_inter)
    dst_out = rng.integers(0, n, size=n_inter)
    for _ in range(64):
        same = labels[src_out] == labels[dst_out]
        if not same.any():
            break
        dst_out[same] = rng.integers(0, n, size=int(same.sum()))
    keep = labels[src_out] != labels[dst_out]
    src = np.concatenate([src_in, src_out[keep]])
    dst = np.concatenate([dst_in, dst_out[keep]])
    loops = src == dst
    src, dst = src[~loops], dst[~loops]

    graph = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=n)
    graph = dgl.to_bidirected(graph)  # also removes duplicate edges

    centres = rng.normal(0.0, 1.0, size=(k, spec.feat_dim))
    feats = centres[labels] + rng.normal(0.0, spec.feat_noise, size=(n, spec.feat_dim))
    order = rng.permutation(n)
    n_train = round(spec.train_frac * n)
    n_val = round(spec.val_frac * n)
    masks = {}
    for key, idx in (
        ("train_mask", order[:n_train]),
        ("val_mask", order[n_train : n_train + n_val]),
        ("test_mask", order[n_train + n_val :]),
    ):
        mask = np.zeros(n, dtype=bool)
        mask[idx] = True
        masks[key] = torch.from_numpy(mask)
    graph.ndata["feat"] = torch.from_numpy(feats.astype(np.float32))
    graph.ndata["label"] = torch.from_numpy(labels.astype(np.int64))
    graph.ndata.update(masks)
    return graph
