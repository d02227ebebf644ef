"""TEST DOUBLE support: the preflight checks of real kubeadm that depend on the host, run by the kubeadm
double (fake_kubeadm.py) against the lab host's real state. Standard library only (it runs on lab hosts).

Upstream contract reproduced: kubeadm v1.36 (kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go,
RunInitNodeChecks / RunJoinNodeChecks, and the vendored k8s.io/system-validators v1.12 for
SystemVerification). Errors stop `init` and `join` unless named in --ignore-preflight-errors (or
nodeRegistration.ignorePreflightErrors; "all" ignores every one), with kubeadm's own lines:

    error execution phase preflight: [preflight] Some fatal errors occurred:
        [ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1
    [preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`

- FileContent--proc-sys-net-ipv4-ip_forward (error, init and join);
- CRI (error): the container runtime's socket (unix:///var/run/containerd/containerd.sock) must answer the
  CRI v1 runtime API; here: the socket accepts a connection and containerd lists its CRI plugin as ok;
- Port-N (error): init needs 6443, 10259, 10257, 10250, 2379, 2380 free; join needs 10250 free;
- SystemVerification (error for kubelet >= 1.35, system-validators v1.12): cgroups v1 is refused with
  the message below (KEP-5573); on cgroups v2 nothing is reported here;
- Swap (a WARNING since kubeadm 1.28; the kubelet itself then refuses to start while failSwapOn is true,
  its default, so init/join fail at kubelet-start): `swap_problem()`.

Not checked, because kubeadm 1.36 does not: bridge netfilter (the bridge-nf-call-iptables checks were
removed in v1.30, kubernetes/kubernetes#123464). Its absence breaks Service traffic instead, which the
cluster model reproduces (fake_cluster.py).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

CRI_SOCKET = "/var/run/containerd/containerd.sock"
INIT_PORTS = (6443, 10259, 10257, 10250, 2379, 2380)
JOIN_PORTS = (10250,)
CGROUP_V1 = (
    "cgroups v1 support is deprecated and will be removed in a future release. Please migrate to cgroups v2. "
    "To explicitly enable cgroups v1 support for kubelet v1.35 or newer, you must set the kubelet configuration "
    "option 'FailCgroupV1' to 'false'. You must also explicitly skip this validation. For more information, see "
    "https://git.k8s.io/enhancements/keps/sig-node/5573-remove-cgroup-v1"
)
SWAP_WARNING = "swap is enabled; production deployments should disable swap unless testing the NodeSwap feature gate"
SWAP_WARNING += " of the kubelet"
SWAP_KUBELET = "running with swap on is not supported, please disable swap or set --fail-swap-on flag to false"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def ip_forward(proc: Path = Path("/proc")) -> list[tuple[str, str]]:
    path = proc / "sys/net/ipv4/ip_forward"
    text = _read(path)
    if text is None:
        return [("FileContent--proc-sys-net-ipv4-ip_forward", "/proc/sys/net/ipv4/ip_forward does not exist")]
    if text.strip() != "1":
        return [
            ("FileContent--proc-sys-net-ipv4-ip_forward", "/proc/sys/net/ipv4/ip_forward contents are not set to 1")
        ]
    return []


def cgroups(proc: Path = Path("/proc")) -> list[tuple[str, str]]:
    """system-validators' CgroupsValidator: v2 when cgroup2 is mounted at /sys/fs/cgroup itself."""
    for line in (_read(proc / "self/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == "/sys/fs/cgroup" and fields[2] == "cgroup2":
            return []
    return [("SystemVerification", CGROUP_V1)]


def cri(sock: str = CRI_SOCKET) -> list[tuple[str, str]]:
    endpoint = f"unix://{sock}"
    prefix = (
        "could not connect to the container runtime: failed to create new CRI runtime service: validate service "
        f'connection: validate CRI v1 runtime API for endpoint "{endpoint}": rpc error: '
    )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            probe.connect(sock)
    except OSError as exc:
        reason = "no such file or directory" if isinstance(exc, FileNotFoundError) else "connection refused"
        return [
            (
                "CRI",
                prefix + 'code = Unavailable desc = connection error: desc = "transport: Error while dialing: '
                f'dial unix {sock}: connect: {reason}"',
            )
        ]
    try:
        plugins = subprocess.run(
            ["ctr", "--address", sock, "plugins", "ls"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        plugins = ""
    if not any(" cri " in f" {line} " and line.split()[-1] == "ok" for line in plugins.splitlines()):
        return [("CRI", prefix + "code = Unimplemented desc = unknown service runtime.v1.RuntimeService")]
    return []


def ports(numbers: tuple[int, ...]) -> list[tuple[str, str]]:
    found = []
    for number in numbers:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", number))
            except OSError:
                found.append((f"Port-{number}", f"Port {number} is in use"))
    return found


def swap_on(proc: Path = Path("/proc")) -> bool:
    return len((_read(proc / "swaps") or "").strip().splitlines()) > 1


def errors(kind: str, proc: Path = Path("/proc"), sock: str = CRI_SOCKET) -> list[tuple[str, str]]:
    """The host-dependent preflight errors of `kubeadm init` (kind "init") or `kubeadm join`, in kubeadm's order."""
    found = ip_forward(proc) + cri(sock)
    found += ports(INIT_PORTS if kind == "init" else JOIN_PORTS)
    return found + cgroups(proc)


def report(found: list[tuple[str, str]], ignored: set[str]) -> str:
    """kubeadm's failure text for the errors not ignored; "" when none is left."""
    left = [(name, text) for name, text in found if "all" not in ignored and name.lower() not in ignored]
    if not left:
        return ""
    lines = "\n".join(f"\t[ERROR {name}]: {text}" for name, text in left)
    return (
        f"error execution phase preflight: [preflight] Some fatal errors occurred:\n{lines}\n"
        "[preflight] If you know what you are doing, you can make a check non-fatal with "
        "`--ignore-preflight-errors=...`"
    )
