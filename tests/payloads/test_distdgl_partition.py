"""DistDGL payload: graph partitioning, its cache, and the partition-config validator."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytest.register_assert_rewrite("distdgl_fixtures")
from distdgl_fixtures import GRAPH_ARGS, PAYLOAD, load_payload_module, require_namespaces, run_payload  # noqa: E402 (after register_assert_rewrite)

pytest_plugins = ["distdgl_fixtures"]  # the distdgl_* fixtures

partconfig = load_payload_module("partconfig")
PartitionConfigError = partconfig.PartitionConfigError
validate_partition_config = partconfig.validate_partition_config


def test_partition_two_parts_is_valid_and_cached(distdgl_python, distdgl_partitions):
    """The fixture partitioned once; the same call again is a no-op naming the same config."""
    again = run_payload(
        distdgl_python, "partition.py", *GRAPH_ARGS, "--num-parts", "2", "--output", str(distdgl_partitions)
    )
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout)
    assert result["cached"] is True
    assert result["num_parts"] == 2
    info = validate_partition_config(result["part_config"], expect_parts=2)
    assert info.num_nodes == 4000
    assert info.part_method == "metis"
    manifest = json.loads((info.path.parent / "pyctl-partition.json").read_text())
    assert manifest["num_classes"] == 4
    assert manifest["graph"]["params"]["nodes"] == 4000
    # Only the result directory is left behind: no temporary directories.
    assert [p.name for p in distdgl_partitions.iterdir()] == [info.path.parent.name]


def test_different_inputs_get_a_different_directory(distdgl_python, tmp_path):
    base = ["--graph", "synthetic", "--nodes", "400", "--output", str(tmp_path)]
    first = run_payload(distdgl_python, "partition.py", *base, "--num-parts", "2", "--part-method", "random")
    other = run_payload(
        distdgl_python, "partition.py", *base, "--num-parts", "2", "--part-method", "random", "--seed", "7"
    )
    assert first.returncode == 0 and other.returncode == 0, first.stderr[-2000:] + other.stderr[-2000:]
    a, b = json.loads(first.stdout), json.loads(other.stdout)
    assert a["cached"] is False and b["cached"] is False
    assert a["part_config"] != b["part_config"]
    assert validate_partition_config(b["part_config"], expect_parts=2).part_method == "random"


def test_graph_file_is_keyed_by_content(distdgl_python, tmp_path):
    """--graph-path: the cache key is the file's content hash, not its name."""
    make = (
        "import sys, dgl, graphs\n"
        "for folder, seed in (('a', 1), ('b', 2)):\n"
        "    graph = graphs.synthetic_graph(graphs.SyntheticSpec(nodes=300, seed=seed))\n"
        "    dgl.save_graphs(f'{sys.argv[1]}/{folder}/g.bin', [graph])\n"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    subprocess.run([str(distdgl_python), "-c", make, str(tmp_path)], cwd=PAYLOAD, check=True)
    out = tmp_path / "parts"
    configs = []
    for folder in ("a", "b"):
        result = run_payload(
            distdgl_python,
            "partition.py",
            *("--graph-path", str(tmp_path / folder / "g.bin"), "--num-parts", "2", "--output", str(out)),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        configs.append(json.loads(result.stdout)["part_config"])
    assert configs[0] != configs[1]
    assert all(config.endswith("/g.json") for config in configs)


def test_named_graph_offline_fails_with_one_line(distdgl_python, tmp_path):
    """The real loaders download; with no network at all they fail with one clear line."""
    require_namespaces()
    argv = ["unshare", "--net", str(distdgl_python), str(PAYLOAD / "partition.py")]
    argv += ["--graph", "cora", "--data-dir", str(tmp_path / "dl")]
    argv += ["--num-parts", "2", "--output", str(tmp_path)]
    result = subprocess.run(argv, cwd=PAYLOAD, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("partition.py:")]
    assert len(lines) == 1, result.stderr
    assert "cannot load 'cora': download failed" in lines[0]


# --- the validator (pure Python: runs without the DistDGL environment) ----------------------------------


def _write_config(tmp_path, num_parts=2, node_map=None, missing_file=None) -> str:
    meta = {
        "graph_name": "g",
        "num_nodes": 10,
        "num_edges": 20,
        "part_method": "metis",
        "num_parts": num_parts,
        "node_map": {"_N": node_map or [[0, 4], [4, 10]]},
        "edge_map": {"_N:_E:_N": [[0, 9], [9, 20]]},
    }
    for part in range(num_parts):
        files = {}
        names = {"node_feats": "node_feat.dgl", "edge_feats": "edge_feat.dgl", "part_graph": "graph.dgl"}
        for key, name in names.items():
            rel = f"part{part}/{name}"
            files[key] = rel
            if rel != missing_file:
                (tmp_path / f"part{part}").mkdir(exist_ok=True)
                (tmp_path / rel).write_bytes(b"x")
        meta[f"part-{part}"] = files
    path = tmp_path / "g.json"
    path.write_text(json.dumps(meta))
    return str(path)


def test_validator_accepts_a_consistent_config(tmp_path):
    info = validate_partition_config(_write_config(tmp_path), expect_parts=2)
    assert (info.num_parts, info.num_nodes, info.num_edges, info.graph_name) == (2, 10, 20, "g")


@pytest.mark.parametrize(
    ("kwargs", "expect_parts", "message"),
    [
        ({}, 3, "num_parts mismatch"),
        ({"missing_file": "part1/graph.dgl"}, 2, "part-1 part_graph file"),
        ({"node_map": [[0, 5], [4, 10]]}, 2, "node_map has an overlap"),
        ({"node_map": [[0, 4], [5, 10]]}, 2, "node_map has a gap"),
        ({"node_map": [[0, 4], [4, 9]]}, 2, "covers 9 nodes but num_nodes is 10"),
    ],
)
def test_validator_names_the_problem(tmp_path, kwargs, expect_parts, message):
    with pytest.raises(PartitionConfigError, match=message):
        validate_partition_config(_write_config(tmp_path, **kwargs), expect_parts=expect_parts)


def test_validator_reports_a_missing_config(tmp_path):
    shutil.rmtree(tmp_path)
    with pytest.raises(PartitionConfigError, match="does not exist"):
        validate_partition_config(tmp_path / "g.json")
