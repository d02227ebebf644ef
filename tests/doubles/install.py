"""Install the test doubles on the hosts of a lab (container or VM hosts: never netns hosts, which share
this machine's files). Only pyctl's lab tests call this; pyctl itself never installs a double.

    install(lab, gpus={"node3": 2})

Puts the doubles, a pure-Python PyYAML and the pinned Kubernetes OpenAPI schema (compiled here from
kubernetes-validate, openapi.json) in /opt/pyctl-test-doubles, wrappers named kubeadm, kubectl, kubelet
(and nvidia-smi on hosts given GPUs) in /usr/local/bin, a do-nothing kubelet.service, and each host's
settings in /etc/pyctl-test-doubles/config.json. GPU hosts also get the NVIDIA container runtime's double
(/usr/bin/nvidia-container-runtime, plain runc) so the containerd role configures a real `nvidia` runtime.
With `packaged=True` those commands come from the doubles' packages instead (debs.py, served by the lab's own
repository and installed by the roles), and only the doubles' code, settings and nvidia-smi are put here.

With the HTTPS Kubernetes API double as the lab's cluster, `api_double(lab, folder)` serves it before the bootstrap
(no nodes, on the lab's gateway inside its network namespace, port 6443), puts its CA on the control plane as
kubeadm's pre-existing /etc/kubernetes/pki/ca.crt and ca.key with the client certificates kubeadm signs with it, and
names it in every host's settings (`api_double`): the kubeadm double then runs init, join and token over REST and
forwards the control plane's port 6443 to it, so kubectl on the control plane reaches it over TLS.

Host checks the lab cannot satisfy are waived by name in the settings (`lab_waived_checks`), never
silently: the kubeadm double prints each as a WARNING naming the reason and records it. Today that is
SystemVerification (cgroups v2) on container hosts of a machine whose kernel runs cgroups v1/v2 hybrid.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
FILES = (
    "fake_common.py",
    "fake_cluster.py",
    "kubeadm_rest.py",
    "apiserver_forward.py",
    "fake_kubeadm.py",
    "fake_kubectl.py",
    "fake_nvidia_smi.py",
    "kubeadm_config.py",
    "kubeadm_preflight.py",
    "openapi_strict.py",
    "kubeadm_types.yaml",
)
WRAPPER = "#!/bin/sh\n# pyctl TEST DOUBLE (tests/doubles): stands in for {tool} on this lab host.\nexec {command}\n"
KUBELET_UNIT = """\
[Unit]
Description=pyctl TEST DOUBLE: stands in for the kubelet (does nothing)

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always

[Install]
WantedBy=multi-user.target
"""


def _payload(version: str) -> bytes:
    from tests.doubles import openapi_strict

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in FILES:
            tar.add(HERE / name, arcname=name)
        major_minor = ".".join(version.lstrip("v").split(".")[:2])
        schema = json.dumps(openapi_strict.compile_schema(f"{major_minor}.0"), separators=(",", ":")).encode()
        info = tarfile.TarInfo("openapi.json")
        info.size = len(schema)
        tar.addfile(info, io.BytesIO(schema))
        yaml_dir = Path(yaml.__file__).parent
        for path in sorted(yaml_dir.glob("*.py")):  # the pure-Python PyYAML: no compiled parts
            tar.add(path, arcname=f"yaml/{path.name}")
    return buffer.getvalue()


def _setup_script(settings: dict[str, Any], gpu: bool, packaged: bool = False) -> str:
    python = "/usr/bin/python3 /opt/pyctl-test-doubles"
    tools = {}
    if not packaged:
        tools = {
            "kubeadm": f'{python}/fake_kubeadm.py "$@"',
            "kubectl": f'{python}/fake_kubectl.py "$@"',
            "kubelet": "sleep infinity",
        }
    if gpu:
        tools["nvidia-smi"] = f'{python}/fake_nvidia_smi.py "$@"'
    lines = ["set -e", "mkdir -p /etc/pyctl-test-doubles /var/log/pyctl-test-doubles"]
    if gpu and not packaged:
        runtime = (HERE / "fake_nvidia_container_runtime").read_text()
        lines.append(f"printf %s {shlex.quote(runtime)} > /usr/bin/nvidia-container-runtime")
        lines.append("chmod 755 /usr/bin/nvidia-container-runtime")
    for tool, command in tools.items():
        text = WRAPPER.format(tool=tool, command=command)
        lines.append(f"printf %s {shlex.quote(text)} > /usr/local/bin/{tool}; chmod 755 /usr/local/bin/{tool}")
    if not packaged:
        lines.append(f"printf %s {shlex.quote(KUBELET_UNIT)} > /etc/systemd/system/kubelet.service")
    lines.append(f"printf %s {shlex.quote(json.dumps(settings))} > /etc/pyctl-test-doubles/config.json")
    lines.append("systemctl daemon-reload")
    return "\n".join(lines)


def configure(lab: Any, host: str, **settings: Any) -> None:
    """Change one host's double settings (gpus, nvidia_smi_error, driver_version, cuda_version, nvidia_default_runtime,
    version)."""
    current = json.loads(lab.ssh(host, "cat /etc/pyctl-test-doubles/config.json", timeout=30).stdout)
    current.update(settings)
    lab.ssh(host, f"printf %s {shlex.quote(json.dumps(current))} > /etc/pyctl-test-doubles/config.json", timeout=30)


def install(lab: Any, gpus: dict[str, int] | None = None, version: str = "v1.36.5", *, packaged: bool = False) -> None:
    """With `packaged`, the commands (kubeadm, kubectl, kubelet and its unit, nvidia-container-runtime) come from
    the doubles' packages in the lab's repository (debs.py), installed by the roles: only the doubles' code,
    settings and nvidia-smi are put on the hosts here."""
    if lab.kind == "netns":
        raise ValueError("netns lab hosts share this machine's files: install the doubles on container or vm hosts")
    payload = _payload(version)
    for host in lab.hosts:
        count = (gpus or {}).get(host.name, 0)
        settings: dict[str, Any] = {"gpus": count, "version": version}
        cgroup = lab.ssh(host, "stat -fc %T /sys/fs/cgroup", timeout=30).stdout.strip()
        if cgroup != "cgroup2fs":
            settings["lab_waived_checks"] = {
                "SystemVerification": f"the lab host's /sys/fs/cgroup is {cgroup}, not cgroup2fs: this machine's kernel"
                " runs cgroups v1/v2 hybrid and its container hosts inherit it (a real host must be on cgroups v2)"
            }
        remote = (
            "rm -rf /opt/pyctl-test-doubles && mkdir -p /opt/pyctl-test-doubles && tar -x -C /opt/pyctl-test-doubles"
        )
        subprocess.run(lab.ssh_argv(host, remote), input=payload, check=True, capture_output=True, timeout=60)
        script = _setup_script(settings, gpu=count > 0, packaged=packaged)
        lab.ssh(host, script, timeout=60)


def put(lab: Any, host: str, path: str, data: bytes, mode: str = "600") -> None:
    """Write `data` to `path` on a lab host (folders made), with `mode`; nothing of it on a command line."""
    remote = f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}"
    subprocess.run(lab.ssh_argv(lab.host(host), remote), input=data, check=True, capture_output=True, timeout=60)


# What kubeadm init signs with the cluster CA (kubeconfig phase): CN and organisation of each client certificate.
SIGNED = (
    ("kubernetes-admin", "kubeadm:cluster-admins"),
    ("kubernetes-super-admin", "system:masters"),
)


@contextmanager
def api_double(lab: Any, folder: Path, control_plane: str = "node1", **options: Any) -> Iterator[Any]:
    """The HTTPS API double (fake_apiserver.ApiServerDouble, no nodes: they join) as `lab`'s cluster, before the
    bootstrap: served on the gateway inside the lab's namespace on port 6443 with the control plane's address and
    name as SANs; its CA on `control_plane` as /etc/kubernetes/pki/ca.crt and ca.key (kubeadm uses a pre-existing
    CA), with the client certificates kubeadm would sign with it (the lab image has no openssl: fake_kubeadm.GIVEN);
    `api_double` in every host's settings. The pods of Jobs scheduled on a joined node run in its host's network
    namespace (container and netns hosts; a VM's has none here). `options` go to the double (e.g. history=)."""
    from tests.doubles.fake_apiserver import ApiServerDouble, client_certificate

    host = lab.host(control_plane)
    options.setdefault("namespaces", {h.name: h.namespace for h in lab.hosts if h.namespace})
    with ApiServerDouble(
        folder, nodes=[], host=lab.gateway, port=6443, netns=lab.namespace, sans=(host.address, host.name), **options
    ) as api:
        put(lab, host.name, "/etc/kubernetes/pki/ca.crt", api.pki["ca.crt"].read_bytes(), "644")
        put(lab, host.name, "/etc/kubernetes/pki/ca.key", api.pki["ca.key"].read_bytes())
        for cn, org in (*SIGNED, (f"system:node:{host.name}", "system:nodes")):
            cert, key = client_certificate(api.pki, cn, org)
            put(lab, host.name, f"/etc/pyctl-test-doubles/pki/{cn}.crt", cert, "644")
            put(lab, host.name, f"/etc/pyctl-test-doubles/pki/{cn}.key", key)
        for each in lab.hosts:
            configure(lab, each.name, api_double=f"{lab.gateway}:6443")
        yield api


def calls(lab: Any, host: str, tool: str | None = None) -> list[dict[str, Any]]:
    """The calls the doubles on `host` recorded, oldest first."""
    text = lab.ssh(host, "cat /var/log/pyctl-test-doubles/calls.jsonl 2>/dev/null || true", timeout=30).stdout
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in entries if tool is None or e["tool"] == tool]
