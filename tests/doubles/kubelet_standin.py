"""TEST DOUBLE - a kubelet stand-in: runs a rendered Indexed Job's pods as processes, one per netns lab host.

It is a test double, not Kubernetes. It does what the Job controller, the kubelet and cluster DNS of
Kubernetes 1.36 would do for the parts of the pod spec pyctl relies on, and nothing else. Upstream
sources of the behaviour: the Job controller's Indexed mode (pkg/controller/job, KEP-2214; successPolicy
KEP-3998, podFailurePolicy KEP-3329); the kubelet's hosts file (pkg/kubelet/kubelet_pods.go,
managedHostsFileContent); `$(VAR)` expansion (third_party/forked/golang/expansion); the EndpointSlice
controller, which lists a pod of a Service only once the pod has an IP and until it is terminal
(staging/src/k8s.io/endpointslice/util/controller_utils.go ShouldPodBeInEndpoints), and CoreDNS's
kubernetes plugin, which answers `<hostname>.<subdomain>` only for pods so listed:

- one pod per completion index; host name `<job>-<i>`, subdomain from `spec.template.spec.subdomain`;
  the annotation and label batch.kubernetes.io/job-completion-index, the label job-name, and the
  env var JOB_COMPLETION_INDEX the Job controller adds to every container;
- the container's `env` resolved in order: `value` with `$(VAR)` expansion of variables defined
  earlier (Kubernetes' rule; `$$` escapes), `valueFrom.fieldRef` for metadata.name/namespace,
  metadata.annotations['...'], metadata.labels['...'], status.podIP, spec.nodeName;
- `command` + `args` with the same `$(VAR)` expansion, run in `workingDir`;
- the pod's own /etc/hosts as the kubelet writes it (`<pod IP> <fqdn> <hostname>`), plus what the
  headless Service's DNS would answer for the pods of the job (`<job>-<j>.<svc>` and its FQDN): a
  pod's record is published only once that pod has started (it has an address; publishNotReadyAddresses
  lists it before it is ready, hence before it listens), and pod 0 is started last, so peers meet both
  races the manifests must survive: the name does not resolve yet, then it resolves but nothing
  listens. `dns_delays` holds a pod's record back for that many seconds after the pod started (or for
  ever: None), as a slow EndpointSlice controller or DNS cache would; the pods' hosts files are
  rewritten in place, so a running pod sees a record appear;
- volumes: persistentVolumeClaim -> a host folder you map, emptyDir medium Memory -> a private tmpfs,
  configMap -> its data as files; the image's paths (e.g. /opt/pyctl/ddp) -> host folders you map,
  and the image's PATH;
- gang semantics of the pyctl Job: the first pod to fail stops the others (podFailurePolicy FailJob);
  index 0 succeeding ends the job (successPolicy).

Each pod runs in lab host i's network namespace (so it has that host's address as its pod IP) inside
its own mount, UTS and IPC namespaces. Needs root.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones stay, $$ is a literal $."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(one, text)


@dataclass
class Pod:
    index: int
    name: str
    hostname: str
    ip: str
    netns: str
    workdir: Path
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    started: float = 0.0

    @property
    def log_path(self) -> Path:
        return self.workdir / "log"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


class KubeletStandin:
    def __init__(
        self,
        job: dict[str, Any],
        hosts: list[tuple[str, str]],  # (network namespace, address) per completion index
        *,
        image_paths: dict[str, Path],
        image_path_env: str,
        claims: dict[str, Path],
        configmaps: dict[str, dict[str, str]] | None = None,
        workdir: Path,
        master_delay_s: float = 3.0,
        dns_delays: dict[int, float | None] | None = None,
    ) -> None:
        assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
        self.job = job
        self.name = job["metadata"]["name"]
        self.namespace = job["metadata"].get("namespace", "default")
        self.spec = job["spec"]["template"]["spec"]
        self.subdomain = self.spec.get("subdomain")
        self.completions = int(job["spec"]["completions"])
        assert len(hosts) >= self.completions, "one lab host per completion index"
        self.image_paths = image_paths
        self.image_path_env = image_path_env
        self.claims = claims
        self.configmaps = configmaps or {}
        self.workdir = workdir
        self.master_delay_s = master_delay_s
        self.dns_delays = dict(dns_delays or {})
        self._published: set[int] = set()  # completion indexes whose DNS record exists (pod started)
        self._started_at = time.monotonic()
        self.stopped_for: str | None = None
        self.pods = [
            Pod(
                index=i,
                name=f"{self.name}-{i}-standin",
                hostname=f"{self.name}-{i}",
                ip=hosts[i][1],
                netns=hosts[i][0],
                workdir=workdir / f"pod-{i}",
            )
            for i in range(self.completions)
        ]

    # -- what the pod sees ------------------------------------------------------------------------

    def fqdn(self, pod: Pod) -> str:
        return f"{pod.hostname}.{self.subdomain}.{self.namespace}.svc.cluster.local"

    def etc_hosts(self, pod: Pod) -> str:
        lines = ["# Kubernetes-managed hosts file (kubelet stand-in).", "127.0.0.1\tlocalhost", "::1\tlocalhost"]
        lines.append(f"{pod.ip}\t{self.fqdn(pod)}\t{pod.hostname}")
        # Cluster DNS for the headless Service (publishNotReadyAddresses: every pod, ready or not).
        for other in self.pods:
            if other is not pod and other.index not in self._published:
                continue
            if other is not pod:
                lines.append(f"{other.ip}\t{self.fqdn(other)}\t{other.hostname}.{self.subdomain}")
            else:
                lines.append(f"{pod.ip}\t{pod.hostname}.{self.subdomain}")
        return "\n".join(lines) + "\n"

    def field(self, pod: Pod, path: str) -> str:
        annotations = {INDEX_KEY: str(pod.index)}
        labels = {"job-name": self.name, "batch.kubernetes.io/job-name": self.name, INDEX_KEY: str(pod.index)}
        match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
        if match:
            source = annotations if match.group(1) == "annotations" else labels
            return source.get(match.group(2), "")
        simple = {
            "metadata.name": pod.name,
            "metadata.namespace": self.namespace,
            "status.podIP": pod.ip,
            "spec.nodeName": pod.netns,
        }
        if path not in simple:
            raise AssertionError(f"the stand-in does not resolve fieldRef {path!r}")
        return simple[path]

    def environment(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = self.field(pod, item["valueFrom"]["fieldRef"]["fieldPath"])
            else:
                raise AssertionError(f"the stand-in does not resolve {item!r}")
        env.setdefault("JOB_COMPLETION_INDEX", str(pod.index))  # the Job controller's own variable
        return env

    def argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        return [expand(str(word), env) for word in [*container.get("command", []), *container.get("args", [])]]

    # -- running ----------------------------------------------------------------------------------

    def _mounts(self, pod: Pod, container: dict[str, Any]) -> list[tuple[str, str]]:
        """(kind, mountPath, source) as shell steps: image paths first, then the pod's volumes."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        steps: list[tuple[str, str]] = []
        for target, source in self.image_paths.items():
            steps.append(("bind", f"{source}\0{target}"))
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            target = mount["mountPath"]
            if "persistentVolumeClaim" in volume:
                steps.append(("bind", f"{self.claims[volume['persistentVolumeClaim']['claimName']]}\0{target}"))
            elif "emptyDir" in volume:
                assert volume["emptyDir"].get("medium") == "Memory"
                steps.append(("tmpfs", target))
            elif "configMap" in volume:
                folder = pod.workdir / f"configmap-{mount['name']}"
                folder.mkdir(parents=True, exist_ok=True)
                for key, text in self.configmaps[volume["configMap"]["name"]].items():
                    (folder / key).write_text(text, encoding="utf-8")
                steps.append(("bind", f"{folder}\0{target}"))
            else:
                raise AssertionError(f"the stand-in does not mount {volume!r}")
        return steps

    def _script(self, pod: Pod, container: dict[str, Any], env: dict[str, str]) -> str:
        hosts = pod.workdir / "hosts"
        hosts.write_text(self.etc_hosts(pod), encoding="utf-8")
        lines = ["set -e", f"mount --bind {shlex.quote(str(hosts))} /etc/hosts", f"hostname {pod.hostname}"]
        covered: set[str] = set()
        for kind, value in self._mounts(pod, container):
            target = value.split("\0")[-1]
            top = "/" + target.strip("/").split("/")[0]
            # Paths the image has but this machine does not: a private tmpfs over their top folder (made,
            # empty, when this machine lacks even that, like the DistDGL image's /app).
            if top not in ("/dev", "/etc") and top not in covered and not Path(target).exists():
                lines.append(f"mkdir -p {shlex.quote(top)}")
                lines.append(f"mount -t tmpfs pod-{top.strip('/')} {shlex.quote(top)}")
                covered.add(top)
            lines.append(f"mkdir -p {shlex.quote(target)}")
            if kind == "tmpfs":
                lines.append(f"mount -t tmpfs -o mode=1777 pod-shm {shlex.quote(target)}")
            else:
                source = value.split("\0")[0]
                lines.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
        full_env = {"PATH": self.image_path_env, "HOSTNAME": pod.hostname, "HOME": "/tmp", **env}
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in full_env.items())
        workdir = container.get("workingDir") or "/tmp"
        argv = " ".join(shlex.quote(a) for a in self.argv(container, env))
        lines.append(f"cd {shlex.quote(workdir)}")
        lines.append(f"exec env -i {assignments} {argv}")
        return "\n".join(lines) + "\n"

    def start(self, pod: Pod) -> None:
        container = self.spec["containers"][0]
        pod.workdir.mkdir(parents=True, exist_ok=True)
        pod.started = time.monotonic()  # the sandbox exists: the pod has its address from here on
        if self.dns_delays.get(pod.index, 0) == 0:
            self._publish({pod.index})
        env = self.environment(pod, container)
        script = pod.workdir / "pod.sh"
        script.write_text(self._script(pod, container, env), encoding="utf-8")
        log = pod.log_path.open("wb")
        pod.process = subprocess.Popen(
            [
                "nsenter", f"--net=/run/netns/{pod.netns}",
                "unshare", "--mount", "--uts", "--ipc", "--propagation", "private", "--",
                "sh", str(script),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def published(self) -> set[int]:
        """The completion indexes whose `<job>-<i>.<svc>` record cluster DNS would answer now."""
        return set(self._published)

    def _publish(self, indexes: set[int]) -> None:
        """Add DNS records; rewrite the hosts files of the pods that run (in place: same inode)."""
        self._published |= indexes
        for pod in self.pods:
            if pod.process is not None:
                (pod.workdir / "hosts").write_text(self.etc_hosts(pod), encoding="utf-8")

    def _publish_due_records(self) -> None:
        """Publish the records of started pods whose extra delay (dns_delays) is over."""
        now = time.monotonic()
        due = {
            p.index
            for p in self.pods
            if p.index not in self._published
            and p.started
            and self.dns_delays.get(p.index, 0) is not None
            and now - p.started >= self.dns_delays.get(p.index, 0)
        }
        if due:
            self._publish(due)

    def run(self, timeout: float = 600) -> dict[int, int]:
        """Start every pod (index 0 last), apply the Job's gang rules, return each pod's exit code."""
        self._started_at = time.monotonic()
        for pod in self.pods[1:]:
            self.start(pod)
        # Peers already resolve pod 0's name; its port is not open yet.
        while time.monotonic() - self._started_at < self.master_delay_s:
            self._publish_due_records()
            time.sleep(0.1)
        self.start(self.pods[0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._publish_due_records()
            for pod in self.pods:
                if pod.exit_code is None and pod.process is not None and pod.process.poll() is not None:
                    pod.exit_code = pod.process.returncode
            failed = [p for p in self.pods if p.exit_code not in (None, 0)]
            if failed:  # podFailurePolicy: FailJob
                self.stopped_for = "failure"
                self.stop_all()
                break
            if self.pods[0].exit_code == 0:  # successPolicy: index 0 succeeded; the rest are terminated
                self.stopped_for = "success"
                self.stop_all()
                break
            if all(p.exit_code is not None for p in self.pods):
                break
            time.sleep(0.2)
        else:
            self.stop_all()
        return {p.index: p.exit_code if p.exit_code is not None else -1 for p in self.pods}

    @property
    def outcome(self) -> str:
        """The Job's condition as the controller would set it: index 0 succeeding is success
        (successPolicy), any failed index before that is failure (podFailurePolicy FailJob)."""
        if self.pods[0].exit_code == 0 and self.stopped_for != "failure":
            return "succeeded"
        if all(p.exit_code == 0 for p in self.pods):
            return "succeeded"
        return "failed"

    def stop_all(self, grace: float = 10) -> None:
        for pod in self.pods:
            if pod.process is not None and pod.process.poll() is None:
                os.killpg(pod.process.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for pod in self.pods:
            if pod.process is not None:
                try:
                    pod.process.wait(timeout=max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(pod.process.pid, signal.SIGKILL)
                    pod.process.wait()
                if pod.exit_code is None:
                    pod.exit_code = pod.process.returncode


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="kubelet-standin-"))
