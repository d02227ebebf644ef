"""A user's own DistDGL trainer, for `pyctl train distdgl --script` tests: it knows nothing of pyctl.

Written only from DGL's documented distributed API (dgl 2.1.0: dgl.distributed.initialize, DistGraph,
node_split, dgl.dataloading.DistNodeDataLoader with a NeighborSampler) and the environment DGL's
tools/launch.py gives every process: DGL_IP_CONFIG and DGL_CONF_PATH (plus DGL_ROLE and the counts,
which initialize() reads itself). Servers run this same file and never come back from initialize().

Each trainer samples one epoch over its share of the training nodes and sums a feature column;
rank 0 prints the totals (and its own arguments) as one `PYCTL_SUMMARY {json}` line.
"""

import argparse
import json
import os
import sys

import dgl
import torch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fanout", type=int, default=5)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    dgl.distributed.initialize(os.environ["DGL_IP_CONFIG"])  # a server serves here until the end
    torch.distributed.init_process_group("gloo")
    with open(os.environ["DGL_CONF_PATH"]) as stream:
        graph_name = json.load(stream)["graph_name"]
    graph = dgl.distributed.DistGraph(graph_name, part_config=os.environ["DGL_CONF_PATH"])
    train_nids = dgl.distributed.node_split(graph.ndata["train_mask"], graph.get_partition_book())
    sampler = dgl.dataloading.NeighborSampler([args.fanout])
    loader = dgl.dataloading.DistNodeDataLoader(graph, train_nids, sampler, batch_size=64, shuffle=True)
    seeds, feature_sum = 0, 0.0
    for _input_nodes, output_nodes, _blocks in loader:
        seeds += len(output_nodes)
        feature_sum += float(graph.ndata["feat"][output_nodes][:, 0].sum())
    totals = torch.tensor([seeds, feature_sum], dtype=torch.float64)
    torch.distributed.all_reduce(totals)
    if torch.distributed.get_rank() == 0:
        train_total = int(graph.ndata["train_mask"][torch.arange(graph.num_nodes())].sum())
        summary = {
            "graph_name": graph_name,
            "world_size": torch.distributed.get_world_size(),
            "seeds": int(totals[0]),
            "train_nodes": train_total,
            "tag": args.tag,
            "role": os.environ.get("DGL_ROLE"),
            "num_client": os.environ.get("DGL_NUM_CLIENT"),
        }
        print("PYCTL_SUMMARY " + json.dumps(summary), flush=True)
    torch.distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
