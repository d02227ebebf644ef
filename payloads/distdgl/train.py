"""GraphSAGE node classification, distributed on DistDGL or in one local process.

Distributed (what launch.py runs on every machine; servers and trainers run this same file):

    DGL_ROLE=server ... python train.py ...        # never returns from dgl.distributed.initialize
    DGL_ROLE=client ... torchrun ... train.py ...  # trainers

    --part-config defaults to $DGL_CONF_PATH, --ip-config to $DGL_IP_CONFIG (launch.py sets both).
    dgl.distributed.initialize() runs before torch.distributed.init_process_group("gloo"), the
    model is wrapped in DDP, and each trainer takes its share of train_mask via node_split.

Local (the same model, sampler and Trainer on the whole graph, no DistDGL, one process):

    python train.py --mode local --graph synthetic --nodes 3000 ...   # or --graph-path FILE

Output on stdout: one JSON line per epoch ({"event": "epoch", ...}, from global rank 0 only) and a
final ``PYCTL_SUMMARY {json}`` line with the test accuracy (global rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from graphs import GraphSourceError, add_graph_arguments, load_graph

SUMMARY_PREFIX = "PYCTL_SUMMARY "
HOST = socket.gethostname()


def log(message: str) -> None:
    role = os.environ.get("DGL_ROLE", "local")
    rank = os.environ.get("RANK", os.environ.get("DGL_SERVER_ID", "-"))
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {HOST} train.py {role} {rank}: {message}", file=sys.stderr, flush=True)


def parse_fanouts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"fan-outs must be integers like 10,10: {text!r}") from None
    if not values or any(v == 0 or v < -1 for v in values):
        raise argparse.ArgumentTypeError(f"fan-outs are positive integers or -1 (all): {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="GraphSAGE on DistDGL (or locally)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--mode", choices=("dist", "local"), default="dist")
    parser.add_argument(
        "--part-config",
        default=os.environ.get("DGL_CONF_PATH"),
        help="partition config <graph>.json (dist mode; default $DGL_CONF_PATH)",
    )
    parser.add_argument(
        "--ip-config",
        default=os.environ.get("DGL_IP_CONFIG"),
        help="DistDGL ip_config.txt (dist mode; default $DGL_IP_CONFIG)",
    )
    add_graph_arguments(parser)
    hp = parser.add_argument_group("model and training (identical in both modes)")
    hp.add_argument("--epochs", type=int, default=10, help="epochs to train (a resumed run counts on)")
    hp.add_argument("--batch-size", type=int, default=256, help="seeds per mini-batch and trainer")
    hp.add_argument("--fanouts", type=parse_fanouts, default=[10, 10], help="per layer, e.g. 10,10")
    hp.add_argument(
        "--eval-fanouts",
        type=parse_fanouts,
        help="fan-outs for val/test, --fanouts when unset; -1 takes every neighbour: --eval-fanouts=-1,-1",
    )
    hp.add_argument("--eval-batch-size", type=int, default=1024, help="seeds per validation/test batch")
    hp.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (0: never)")
    hp.add_argument("--hidden", type=int, default=64, help="hidden units per layer")
    hp.add_argument("--dropout", type=float, default=0.5, help="dropout between layers")
    hp.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    hp.add_argument("--model-seed", type=int, default=0, help="seed of weights and sampling")
    hp.add_argument("--num-classes", type=int, help="when unset: from the partition manifest, else from the labels")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the model runs; cuda uses GPU LOCAL_RANK (sampling and features stay on CPU)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="snapshot file: resumed from when present, written by global rank 0 after each epoch",
    )
    args = parser.parse_args(argv)
    if args.eval_fanouts is None:
        args.eval_fanouts = args.fanouts
    if len(args.eval_fanouts) != len(args.fanouts):
        parser.error("--eval-fanouts needs one value per layer, like --fanouts")
    if args.mode == "dist" and not (args.part_config and args.ip_config):
        parser.error("dist mode needs --part-config and --ip-config (or DGL_CONF_PATH and DGL_IP_CONFIG)")
    if args.mode == "local" and args.graph is None and args.graph_path is None:
        parser.error("local mode needs --graph NAME or --graph-path FILE")
    return args


def build_model(in_feats: int, hidden: int, num_classes: int, num_layers: int, dropout: float):
    import dgl.nn as dglnn
    import torch
    from torch import nn

    class SAGE(nn.Module):
        """GraphSAGE with mean aggregation; one layer per fan-out."""

        def __init__(self):
            super().__init__()
            sizes = [in_feats] + [hidden] * (num_layers - 1) + [num_classes]
            self.layers = nn.ModuleList(dglnn.SAGEConv(sizes[i], sizes[i + 1], "mean") for i in range(num_layers))
            self.dropout = nn.Dropout(dropout)

        def forward(self, blocks, x: torch.Tensor) -> torch.Tensor:
            h = x
            for i, (layer, block) in enumerate(zip(self.layers, blocks, strict=True)):
                h = layer(block, h)
                if i != len(self.layers) - 1:
                    h = self.dropout(torch.relu(h))
            return h

    return SAGE()


class Trainer:
    """Mini-batch training with neighbour sampling; the same code for DistGraph and DGLGraph.

    ``graph`` is a dgl.distributed.DistGraph (dist) or a DGLGraph (local): both answer
    ``graph.ndata[name][ids]``. In dist mode every call that communicates (all_reduce) is made by
    every trainer in the same order.
    """

    def __init__(self, graph, args: argparse.Namespace, splits: dict, num_classes: int, distributed: bool):
        import dgl
        import torch

        self.graph = graph
        self.args = args
        self.splits = splits
        self.distributed = distributed
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.world_size = torch.distributed.get_world_size() if distributed else 1
        feat_dim = int(graph.ndata["feat"].shape[1])
        torch.manual_seed(args.model_seed)
        dgl.seed(args.model_seed + self.rank)  # neighbour sampling draws from DGL's own generator
        self.device = torch.device("cpu")
        if args.device == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # the global rank breaks on node 2+
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        self.model = build_model(feat_dim, args.hidden, num_classes, len(args.fanouts), args.dropout)
        self.model = self.model.to(self.device)
        self.module = self.model
        if distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.start_epoch = 0
        self._load_snapshot()
        if distributed:  # a snapshot seen by some trainers only would desynchronise DDP: refuse
            total = self._sum([self.start_epoch])[0]
            if total != self.start_epoch * self.world_size:
                raise RuntimeError("--checkpoint must be one file on a shared path: trainers resumed differently")
        self.train_loader = self._loader(splits["train"], args.fanouts, args.batch_size, shuffle=True)
        self.eval_loaders = {
            name: self._loader(splits[name], args.eval_fanouts, args.eval_batch_size, shuffle=False)
            for name in ("val", "test")
        }

    def _loader(self, nids, fanouts, batch_size: int, shuffle: bool):
        import dgl

        sampler = dgl.dataloading.NeighborSampler(fanouts)
        if self.distributed:
            return dgl.dataloading.DistNodeDataLoader(
                self.graph, nids, sampler, batch_size=batch_size, shuffle=shuffle, drop_last=False
            )
        return dgl.dataloading.DataLoader(
            self.graph, nids, sampler, batch_size=batch_size, shuffle=shuffle, drop_last=False
        )

    def _sum(self, values: list[float]) -> list[float]:
        """Sum values over all trainers (identity in local mode)."""
        import torch

        tensor = torch.tensor(values, dtype=torch.float64)
        if self.distributed:
            torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def _load_snapshot(self) -> None:
        import torch

        path = self.args.checkpoint
        if path is None or not path.exists():
            return
        state = torch.load(path, map_location="cpu")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"]) + 1
        log(f"resumed from {path} at epoch {self.start_epoch}")

    def _save_snapshot(self, epoch: int) -> None:
        import torch

        path = self.args.checkpoint
        if path is None or self.rank != 0:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch}
        torch.save(state, tmp)
        tmp.replace(path)  # atomic: a reader sees the old or the new snapshot, never half of one

    def _batch(self, input_nodes, seeds, blocks):
        """Fetch the batch's features and labels (remote rows come from the DGL servers)."""
        x = self.graph.ndata["feat"][input_nodes].to(self.device)
        y = self.graph.ndata["label"][seeds].long().to(self.device)
        return x, y, [block.to(self.device) for block in blocks]

    def _train_epoch(self) -> tuple[float, float]:
        import torch.nn.functional as F

        self.model.train()
        loss_sum, correct, seen = 0.0, 0.0, 0.0
        for input_nodes, seeds, sampled in self.train_loader:
            x, y, blocks = self._batch(input_nodes, seeds, sampled)
            logits = self.model(blocks, x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_sum += float(loss) * len(seeds)
            correct += float((logits.argmax(1) == y).sum())
            seen += len(seeds)
        loss_sum, correct, seen = self._sum([loss_sum, correct, seen])
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def evaluate(self, split: str) -> float:
        import torch

        self.module.eval()
        correct, seen = 0.0, 0.0
        with torch.no_grad():
            for input_nodes, seeds, sampled in self.eval_loaders[split]:
                x, y, blocks = self._batch(input_nodes, seeds, sampled)
                correct += float((self.module(blocks, x).argmax(1) == y).sum())
                seen += len(seeds)
        correct, seen = self._sum([correct, seen])
        return correct / max(seen, 1)

    def train(self) -> dict:
        """Train for --epochs, printing one JSON line per epoch; return the summary."""
        args = self.args
        val_acc = None
        epoch_seconds = []
        for epoch in range(self.start_epoch, args.epochs):
            started = time.monotonic()
            loss, train_acc = self._train_epoch()
            seconds = time.monotonic() - started
            epoch_seconds.append(seconds)
            record = {
                "event": "epoch",
                "epoch": epoch,
                "loss": round(loss, 5),
                "train_acc": round(train_acc, 5),
                "seconds": round(seconds, 3),
                "rank": self.rank,
                "world_size": self.world_size,
            }
            if args.eval_every and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
                val_acc = self.evaluate("val")
                record["val_acc"] = round(val_acc, 5)
            if self.rank == 0:
                print(json.dumps(record), flush=True)
            self._save_snapshot(epoch)
        test_acc = self.evaluate("test")
        return {
            "test_acc": round(test_acc, 5),
            "val_acc": None if val_acc is None else round(val_acc, 5),
            "epochs": args.epochs,
            "epochs_run": len(epoch_seconds),
            "mean_epoch_seconds": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 3),
            "train_seconds": round(sum(epoch_seconds), 3),
            "world_size": self.world_size,
            "num_train": int(self._sum([len(self.splits["train"])])[0]),
            "num_test": int(self._sum([len(self.splits["test"])])[0]),
        }


def read_manifest(part_config: str) -> dict:
    path = Path(part_config).parent / "pyctl-partition.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_local(args: argparse.Namespace) -> dict:
    import torch

    log("loading the whole graph (local mode)")
    graph = load_graph(args)
    splits = {name: torch.nonzero(graph.ndata[f"{name}_mask"], as_tuple=True)[0] for name in ("train", "val", "test")}
    num_classes = args.num_classes or int(graph.ndata["label"].max()) + 1
    log(f"graph: {graph.num_nodes()} nodes, {graph.num_edges()} edges, {num_classes} classes")
    trainer = Trainer(graph, args, splits, num_classes, distributed=False)
    log("training")
    summary = trainer.train()
    return {"mode": "local", **summary}


def run_dist(args: argparse.Namespace) -> dict | None:
    import dgl
    import torch

    log(f"dgl.distributed.initialize({args.ip_config})")
    dgl.distributed.initialize(args.ip_config)  # a server never comes back from here
    log("torch.distributed.init_process_group(gloo)")
    torch.distributed.init_process_group(backend="gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    graph_name = json.loads(Path(args.part_config).read_text())["graph_name"]
    log(f"opening DistGraph {graph_name!r} (trainer {rank} of {world})")
    graph = dgl.distributed.DistGraph(graph_name, part_config=args.part_config)
    book = graph.get_partition_book()
    splits = {
        name: dgl.distributed.node_split(graph.ndata[f"{name}_mask"], book, force_even=True)
        for name in ("train", "val", "test")
    }
    # Every trainer must run the same number of DDP steps: trim to the smallest share.
    smallest = torch.tensor([len(splits["train"])])
    torch.distributed.all_reduce(smallest, op=torch.distributed.ReduceOp.MIN)
    splits["train"] = splits["train"][: int(smallest)]
    num_classes = args.num_classes or read_manifest(args.part_config).get("num_classes")
    if num_classes is None:
        labels = graph.ndata["label"][torch.arange(graph.num_nodes())]
        num_classes = int(labels.max()) + 1
    log(f"DistGraph: {graph.num_nodes()} nodes, {len(splits['train'])} local train seeds")
    trainer = Trainer(graph, args, splits, int(num_classes), distributed=True)
    log("training")
    summary = trainer.train()
    log("training done")
    return {"mode": "dist", "graph_name": graph_name, "host": HOST, **summary}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DGLBACKEND", "pytorch")
    try:
        summary = run_local(args) if args.mode == "local" else run_dist(args)
    except GraphSourceError as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        return 3
    if summary is not None and int(os.environ.get("RANK", "0")) == 0:
        print(SUMMARY_PREFIX + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
