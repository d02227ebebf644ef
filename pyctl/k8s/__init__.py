"""Kubernetes-side knowledge shared by the verify phase, `pyctl doctor` and `pyctl status`.

health      the acceptance judgement: pure functions over Kubernetes API objects (as dicts)
names       the names pyctl's add-ons use (namespaces, DaemonSets, labels, the shared claim)
gpus        what `nvidia-smi -L` says about a host
kube        reading a cluster with the kubernetes client and the fetched kubeconfig
artifacts   every package, image and manifest the bootstrap pulls, read from the roles
"""
