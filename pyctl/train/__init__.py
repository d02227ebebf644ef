"""Distributed training on the cluster: `pyctl train ddp|distdgl|status|logs|cancel|fetch|report|setup`
(README.md beside this has the module map). Grouped one way: what runs (workloads/) and where it runs
(backends/), over a few modules both share:

request.py     the checks `train ddp` and `train distdgl` share (backend, --env, paths, --hosts, ...)
jobs.py        job records under settings.state_dir/jobs/<id>/ (typed SshInfo / K8sInfo, job.json)
launch.py      NodeLaunch: what one host runs (argv, env, files), for any workload
logs.py        merged, prefixed logs and following them
kueue.py       Kueue's contract: the queue label on a job, its Workload's admission
progress.py, report.py, fetch.py   the progress line, `train report`, `train fetch`
workloads/     ddp.py, ddp_manifests.py, ddp_trainjob.py, distdgl.py, templates/
backends/      the Backend interface (start, follow, refresh, cancel, logs); ssh.py + sshjob.py,
               supervisor.py, hostwrap.py; k8s.py + kubeclient.py, podstart.py
"""
