"""Distributed training on the cluster: `pyctl train ddp|distdgl|status|logs|cancel|setup` (README.md beside this).

jobs.py        job records under settings.state_dir/jobs/<id>/ (workload-neutral: ddp, distdgl)
launch.py      NodeLaunch: what one host runs (argv, env, files), for any workload
ddp.py         the DDP request, its validation, and its per-host torchrun launches
distdgl.py     the DistDGL request, its validation, job.json, SSH launches and preflight, its manifests;
               every machine runs templates/distdgl_startup.py (checks, peers, partition, launch.py)
sshjob.py      SSH backend: preflight, the detached supervisor, stopping every process group
hostwrap.py    copied to each host: one job process tree in its own session, stopped as a whole
supervisor.py  `python -m pyctl.train.supervisor JOB_DIR`
manifests.py   Indexed Job + headless Service, or PyTorchJob (templates/)
k8s.py         Kubernetes backend: submit, watch, merged logs, cancel
logs.py        merged, prefixed logs and following them
"""
