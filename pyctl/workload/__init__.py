"""The workload acceptance test, `pyctl doctor --workload`: from the hardware up to a training step.

- `verdict`: the judgement (pure): per-pair all-reduce figures and per-node failures in, a verdict per
  node and the DDP result out.
- `ssh`, `k8s`: the two ways to run it, each reusing `pyctl train`'s launch machinery: the bandwidth
  probe (`payloads/allreduce/probe.py`) under torchrun on every node, then a short run of the DDP
  payload that must reach a loss threshold.
- `check`: the request and the order of the steps; returns the report, prints nothing.
"""
