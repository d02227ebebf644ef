"""Kubernetes-side knowledge shared by the verify phase, `pyctl doctor` and `pyctl status`.

health      the acceptance judgement: pure functions over Kubernetes API objects (as dicts)
names       the names pyctl's add-ons use (namespaces, DaemonSets, labels, the shared claim)
gpus        what `nvidia-smi -L` says about a host
hosts       the node hosts' own view (node names, GPU counts) over SSH, as the judgement's expectations
kube        reading a cluster with the kubernetes client and the fetched admin kubeconfig
summary     nodes, GPUs, add-on pods and storage in a few numbers (status, doctor)
artifacts   every package, image and manifest the bootstrap pulls, read from the roles
"""
