"""What a training job runs, per workload: its request and checks, what each SSH host starts
(`NodeLaunch`es) and its Kubernetes manifests.

ddp.py            the DDP request, its validation, its per-host torchrun launches
ddp_manifests.py  DDP as an Indexed Job + headless Service, or a PyTorchJob (templates/)
ddp_trainjob.py   DDP as a Kubeflow Trainer v2 TrainJob (+ pyctl's ClusterTrainingRuntime)
distdgl.py        the DistDGL request, its validation, job.json, SSH launches and preflight checks, its manifests;
                  every machine runs templates/distdgl_startup.py (checks, peers, partition, launch.py)
"""
