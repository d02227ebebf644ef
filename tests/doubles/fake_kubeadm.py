#!/usr/bin/env python3
"""TEST DOUBLE for kubeadm, installed on lab hosts by pyctl's lab tests only (never by pyctl itself).

Upstream contract: kubeadm v1.36 (kubernetes/kubernetes cmd/kubeadm: apis/kubeadm/v1beta4 for the
configuration, app/preflight/checks.go for preflight, app/cmd/phases for the phase errors). It checks what
it is given the way kubeadm would (configuration files against kubeadm's API types and validation
rules, preflight refusals over existing files), runs kubeadm's host-dependent preflight checks against
this lab host's real state (kubeadm_preflight.py: ip_forward, the CRI socket of the real containerd, the
ports, cgroups v2; swap as kubeadm warns and the kubelet then refuses), and checks pyctl's own promises: no bootstrap
token on any command line, the JoinConfiguration file mode 0600 and owned by root, discovery pinned by a
CA hash. It writes what kubeadm would write (admin.conf, kubelet.conf, the CA, the kubelet's files),
starts the fake cluster (fake_cluster.py) on `init`, and records every call in
/var/log/pyctl-test-doubles/calls.jsonl. Subcommands: version, config validate, init, join, token
create/delete, reset.

With an API double (the host's settings name `api_double`, ADDR:PORT of tests/doubles/fake_apiserver.py served in
the lab's network namespace), init, join and token talk to it over the REST API instead, as kubeadm 1.36 does
(kubeadm_rest.py): init takes the CA the test put in /etc/kubernetes/pki (ca.crt and ca.key: kubeadm uses a
pre-existing CA), signs admin.conf's, super-admin.conf's and kubelet.conf's client certificates with the openssl
command, forwards this host's port 6443 to the double (apiserver_forward.py, process kube-apiserver), uploads
kubeadm-config and cluster-info, creates the init token as a bootstrap-token Secret and registers the control
plane's Node; join runs token discovery (cluster-info's JWS, the pinned CA hash) and registers its Node with the
token (no CSR); token create/delete write and delete the Secrets with admin.conf's credentials. Each Node carries
its host's facts (containerd's runtimes, GPUs, bridge-nf-call-iptables) for the double's cluster model.
tests/doubles/install.api_double serves the double and sets this up for a lab (tests/k8s/test_lab_phases.py,
test_kubeadm_rest_lab.py, tests/k8s/full_lab.py's); without it the plain-HTTP fake cluster stands in (no lab test
runs that mode any more).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, "/opt/pyctl-test-doubles")
import fake_common
import kubeadm_config
import kubeadm_preflight
import kubeadm_rest
import yaml

K8S = Path("/etc/kubernetes")
KUBELET = Path("/var/lib/kubelet")
ADMIN = K8S / "admin.conf"
KUBELET_CONF = K8S / "kubelet.conf"
CA = K8S / "pki" / "ca.crt"
CA_KEY = K8S / "pki" / "ca.key"
CP_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
FAIL_JOIN_ONCE = Path("/etc/pyctl-test-doubles/fail-join-once")
TOOL = "kubeadm"


def arg(name: str, default: str | None = None) -> str | None:
    """A flag's value, given as `--flag value` or `--flag=value` (kubeadm's pflag takes both)."""
    argv = sys.argv[1:]
    joined = next((a.split("=", 1)[1] for a in argv if a.startswith(name + "=")), None)
    if joined is not None:
        return joined
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


def write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=False, capture_output=True)


def documents(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def validated(path: str | None, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    if not path or not Path(path).is_file():
        fake_common.die(TOOL, f"unable to read config from {path!r}")
    problems = kubeadm_config.problems(Path(path).read_text(), kinds)
    if problems:
        fake_common.die(TOOL, "invalid configuration:\n  " + "\n  ".join(problems))
    return documents(path)


def kubeconfig(endpoint: str, ca: str, user: str) -> str:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernetes",
                    "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": b64(ca)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(
                            "-----BEGIN CERTIFICATE-----\nTEST DOUBLE\n-----END CERTIFICATE-----\n"
                        ),
                        "client-key-data": b64("-----BEGIN PRIVATE KEY-----\nTEST DOUBLE\n-----END PRIVATE KEY-----\n"),
                    },
                }
            ],
            "contexts": [{"name": f"{user}@kubernetes", "context": {"cluster": "kubernetes", "user": user}}],
            "current-context": f"{user}@kubernetes",
        }
    )


def node_labels(registration: dict[str, Any]) -> dict[str, str]:
    labels = {}
    for item in registration.get("kubeletExtraArgs") or []:
        if item["name"] == "node-labels":
            for pair in item["value"].split(","):
                key, _, value = pair.partition("=")
                labels[key] = value
    return labels


def ignored_checks(docs: list[dict[str, Any]]) -> set[str]:
    names = set()
    for value in [arg("--ignore-preflight-errors") or ""] + [
        ",".join((d.get("nodeRegistration") or {}).get("ignorePreflightErrors") or []) for d in docs
    ]:
        names |= {n.strip().lower() for n in value.split(",") if n.strip()}
    return names


def host_preflight(kind: str, docs: list[dict[str, Any]]) -> list[str]:
    """kubeadm's host-dependent preflight checks, on this host's real state; die with kubeadm's text."""
    found = kubeadm_preflight.errors(kind)
    waived = {
        name: why for name, why in (fake_common.config().get("lab_waived_checks") or {}).items() if name in dict(found)
    }
    for name, why in waived.items():  # what the lab's kernel cannot give; visible, recorded, never silent
        print(f"\t[WARNING {name}]: {dict(found)[name]} (TEST DOUBLE: waived on this lab host: {why})")
    failure = kubeadm_preflight.report([f for f in found if f[0] not in waived], ignored_checks(docs))
    if failure:
        fake_common.die(TOOL, failure)
    if kubeadm_preflight.swap_on():
        print(f"\t[WARNING Swap]: {kubeadm_preflight.SWAP_WARNING}")
        kubelet = next((d for d in docs if d.get("kind") == "KubeletConfiguration"), {})
        if kubelet.get("failSwapOn", True):
            fake_common.die(
                TOOL,
                "error execution phase kubelet-start: the kubelet did not start: "
                f"{kubeadm_preflight.SWAP_KUBELET} (TEST DOUBLE: /proc/swaps lists swap on this host)",
            )
    return sorted(waived)


def containerd_facts() -> dict[str, Any]:
    """The CRI runtimes of this host's real containerd (`containerd config dump`), name -> BinaryName, and its
    default runtime; containerd 1.6/1.7 (config version 2) and 2.x (version 3) tables."""
    try:
        dump = subprocess.run(["containerd", "config", "dump"], capture_output=True, text=True, timeout=30).stdout
        config = tomllib.loads(dump)
    except (OSError, subprocess.TimeoutExpired, tomllib.TOMLDecodeError):
        return {}
    plugins = config.get("plugins") or {}
    cri = plugins.get("io.containerd.cri.v1.runtime") or plugins.get("io.containerd.grpc.v1.cri") or {}
    section = cri.get("containerd") or {}
    runtimes = {
        name: str((runtime.get("options") or {}).get("BinaryName", ""))
        for name, runtime in (section.get("runtimes") or {}).items()
    }
    return {"runtimes": runtimes, "default_runtime": section.get("default_runtime_name", "runc")}


def node_facts() -> dict[str, Any]:
    """What the kubelet of this host would report about it, read from the host."""
    bridge = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    facts = containerd_facts()
    runtimes = facts.get("runtimes") or {}
    default_binary = runtimes.get(facts.get("default_runtime", ""), "")
    return {
        **facts,
        "bridge_nf_call_iptables": bridge.exists() and bridge.read_text().strip() == "1",
        "nvidia_default_runtime": default_binary.endswith("nvidia-container-runtime")
        or fake_common.config().get("nvidia_default_runtime", False),
    }


def start_kubelet() -> None:
    write(KUBELET / "config.yaml", "# TEST DOUBLE: the kubelet configuration kubeadm writes\n", 0o644)
    write(KUBELET / "kubeadm-flags.env", "KUBELET_KUBEADM_ARGS=--container-runtime-endpoint=test-double\n", 0o644)
    systemctl("restart", "kubelet")


# --- with an API double (settings `api_double`): kubeadm's calls over the REST API ----------------------------


def api_double() -> str | None:
    """ADDR:PORT of the HTTPS API double this lab's test serves, or None (then the fake cluster stands in)."""
    return fake_common.config().get("api_double")


GIVEN = Path("/etc/pyctl-test-doubles/pki")  # client certificates the test signed with the given CA


def signed_kubeconfig(endpoint: str, ca_pem: bytes, user: str, cn: str, org: str) -> str:
    """A kubeconfig with a client certificate signed by the cluster CA (as kubeadm's kubeconfig phase writes
    admin.conf): the one the test signed for CN `cn` (GIVEN/<cn>.crt and .key: the lab image has no openssl and the
    double no crypto library), else one made with the openssl command."""
    given = GIVEN / f"{cn}.crt", GIVEN / f"{cn}.key"
    if all(path.is_file() for path in given):
        return kubeconfig_with(endpoint, ca_pem, user, given[0].read_bytes(), given[1].read_bytes())
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n"
        )
        openssl = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        subject = f"/O={org}/CN={cn}"
        steps = [
            [*openssl, "-keyout", str(work / "key"), "-subj", subject, "-out", str(work / "csr")],
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(work / "csr"),
                "-CA",
                str(CA),
                "-CAkey",
                str(CA_KEY),
                "-days",
                "365",
                "-sha256",
                "-set_serial",
                "0x" + secrets.token_hex(16),
                "-extfile",
                str(work / "ext"),
                "-out",
                str(work / "crt"),
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                fake_common.die(TOOL, f"TEST DOUBLE: openssl failed making {user}'s certificate: {done.stderr.strip()}")
        cert, key = (work / "crt").read_bytes(), (work / "key").read_bytes()
    return kubeconfig_with(endpoint, ca_pem, user, cert, key)


def kubeconfig_with(endpoint: str, ca_pem: bytes, user: str, cert: bytes, key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernetes",
                    "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": b64(ca_pem)},
                }
            ],
            "contexts": [{"name": f"{user}@kubernetes", "context": {"cluster": "kubernetes", "user": user}}],
            "current-context": f"{user}@kubernetes",
            "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        },
        sort_keys=False,
    )


def admin_api() -> kubeadm_rest.Api:
    if not ADMIN.is_file():
        fake_common.die(TOOL, "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file")
    return kubeadm_rest.Api.from_kubeconfig(ADMIN.read_text())


def join_command(endpoint: str, token: str) -> str:
    return f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {kubeadm_rest.ca_hash(CA.read_bytes())} "


def rest_init(
    cluster: dict[str, Any], name: str, registration: dict[str, Any], endpoint: str, port: int, ttl: str
) -> str:
    """kubeadm init's certs, kubeconfig, upload-config, bootstrap-token and mark-control-plane phases against the
    API double, with the CA the test put in /etc/kubernetes/pki (kubeadm uses a pre-existing ca.crt and ca.key)."""
    if not (CA.is_file() and CA_KEY.is_file()):
        fake_common.die(
            TOOL,
            f"TEST DOUBLE: with an API double, {CA} and {CA_KEY} must be the double's CA (the test puts them there;"
            " kubeadm uses a pre-existing CA)",
        )
    ca_pem = CA.read_bytes()
    write(ADMIN, signed_kubeconfig(endpoint, ca_pem, "kubernetes-admin", "kubernetes-admin", "kubeadm:cluster-admins"))
    write(
        K8S / "super-admin.conf",
        signed_kubeconfig(endpoint, ca_pem, "kubernetes-super-admin", "kubernetes-super-admin", "system:masters"),
    )
    write(KUBELET_CONF, signed_kubeconfig(endpoint, ca_pem, "system:node", f"system:node:{name}", "system:nodes"))
    write(K8S / "manifests" / "kube-apiserver.yaml", "# TEST DOUBLE: the API server is the HTTPS API double\n")
    start_kubelet()
    systemctl("stop", fake_common.SERVER_UNIT)
    systemctl("reset-failed", fake_common.SERVER_UNIT)
    subprocess.run(
        [
            "systemd-run",
            f"--unit={fake_common.SERVER_UNIT}",
            "--description=pyctl TEST DOUBLE: port 6443 forwarded to the Kubernetes API double",
            sys.executable,
            str(fake_common.HOME / "apiserver_forward.py"),
            f"0.0.0.0:{port}",
            str(api_double()),
        ],
        check=True,
        capture_output=True,
    )
    api = admin_api()
    for _ in range(80):  # the forwarder's socket: up within a few seconds
        try:
            if api.call("GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.25)
    try:
        kubeadm_rest.upload_kubeadm_config(api, cluster)
        kubeadm_rest.upload_cluster_info(api, f"https://{endpoint}", ca_pem)
        token = kubeadm_rest.create_token(api, ttl, "The default bootstrap token generated by 'kubeadm init'.")
        labels = {**node_labels(registration), "node-role.kubernetes.io/control-plane": ""}
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        taints = registration.get("taints")
        facts = {**node_facts(), "gpus": fake_common.config().get("gpus", 0), "address": endpoint.rpartition(":")[0]}
        node = kubeadm_rest.node_object(name, labels, [CP_TAINT] if taints is None else taints, facts)
        status, answer = api.call("POST", "/api/v1/nodes", node)
        if status >= 300 and status != 409:
            raise kubeadm_rest.KubeadmError(f"unable to register node {name!r}: {answer.get('message')}")
    except (kubeadm_rest.KubeadmError, OSError) as exc:
        fake_common.die(TOOL, f"error execution phase upload-config: {exc}")
    return join_command(endpoint, token)


def rest_join(bootstrap: dict[str, Any], registration: dict[str, Any]) -> None:
    """kubeadm join's discovery (token, cluster-info's JWS, the pinned CA) and the kubelet's Node registration."""
    endpoint, token = bootstrap["apiServerEndpoint"], bootstrap["token"]
    try:
        ca_pem, server = kubeadm_rest.discover(endpoint, token, bootstrap.get("caCertHashes") or [], timeout=30)
    except (kubeadm_rest.KubeadmError, OSError) as exc:
        fake_common.die(
            TOOL, f"error execution phase preflight: couldn't validate the identity of the API Server: {exc}"
        )
    write(CA, ca_pem.decode(), 0o644)
    write(KUBELET_CONF, kubeconfig(endpoint, ca_pem.decode(), "system:node"))
    address = next((a["value"] for a in registration.get("kubeletExtraArgs") or [] if a["name"] == "node-ip"), "")
    facts = {**node_facts(), "gpus": fake_common.config().get("gpus", 0), "address": address}
    name = registration.get("name") or os.uname().nodename
    node = kubeadm_rest.node_object(name, node_labels(registration), registration.get("taints"), facts)
    try:
        kubeadm_rest.register_node(server, ca_pem, token, node)
    except (kubeadm_rest.KubeadmError, OSError) as exc:
        fake_common.die(TOOL, f"error execution phase kubelet-start: {exc}")


# --- subcommands ---------------------------------------------------------------------------------


def version() -> int:
    fake_common.record(TOOL, sys.argv[1:])
    print(fake_common.config().get("version", "v1.36.5"))
    return 0


def config_validate() -> int:
    kinds = ()
    docs = validated(arg("--config"), kinds)
    fake_common.record(TOOL, sys.argv[1:], validated=[d["kind"] for d in docs])
    print("ok")
    return 0


def init() -> int:
    docs = validated(arg("--config"), ("InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"))
    by_kind = {d["kind"]: d for d in docs}
    for existing in (ADMIN, K8S / "manifests" / "kube-apiserver.yaml"):
        if existing.exists():
            name = str(existing).replace("/", "-").lstrip("-")
            fake_common.die(TOOL, f"[preflight] [ERROR FileAvailable-{name}]: {existing} already exists")
    waived = host_preflight("init", docs)
    cluster = by_kind["ClusterConfiguration"]
    init_doc = by_kind["InitConfiguration"]
    registration = init_doc.get("nodeRegistration") or {}
    address = (init_doc.get("localAPIEndpoint") or {}).get("advertiseAddress", "127.0.0.1")
    port = (init_doc.get("localAPIEndpoint") or {}).get("bindPort", 6443)
    endpoint = cluster.get("controlPlaneEndpoint") or f"{address}:{port}"
    if api_double():
        ttl = ((init_doc.get("bootstrapTokens") or [{}])[0]).get("ttl", "24h0m0s")
        name = registration.get("name") or os.uname().nodename
        join_line = rest_init(cluster, name, registration, endpoint, port, ttl)
        return init_done(cluster, ttl, waived, join_line)
    ca = f"-----BEGIN CERTIFICATE-----\n{secrets.token_hex(48)}\n-----END CERTIFICATE-----\n"
    ca_hash = "sha256:" + hashlib.sha256(ca.encode()).hexdigest()
    write(CA, ca, 0o644)
    for name, user in (("admin.conf", "kubernetes-admin"), ("super-admin.conf", "kubernetes-super-admin")):
        write(K8S / name, kubeconfig(endpoint, ca, user))
    write(KUBELET_CONF, kubeconfig(endpoint, ca, "system:node"))
    write(K8S / "manifests" / "kube-apiserver.yaml", "# TEST DOUBLE: the API server's static pod\n")
    start_kubelet()

    fake_common.STATE.parent.mkdir(parents=True, exist_ok=True)
    fake_common.STATE.unlink(missing_ok=True)
    systemctl("stop", fake_common.SERVER_UNIT)
    systemctl("reset-failed", fake_common.SERVER_UNIT)
    subprocess.run(
        [
            "systemd-run",
            f"--unit={fake_common.SERVER_UNIT}",
            "--description=pyctl TEST DOUBLE: a stand-in Kubernetes control plane",
            sys.executable,
            str(fake_common.HOME / "fake_cluster.py"),
            "serve",
            "--state",
            str(fake_common.STATE),
            "--listen",
            f"0.0.0.0:{port}",
        ],
        check=True,
        capture_output=True,
    )
    settings = fake_common.config()
    fake_common.post(
        "/init",
        {
            "cluster": {
                "podSubnet": cluster["networking"]["podSubnet"],
                "serviceSubnet": cluster["networking"]["serviceSubnet"],
                "controlPlaneEndpoint": endpoint,
                "clusterName": cluster.get("clusterName", "kubernetes"),
                "kubernetesVersion": cluster["kubernetesVersion"],
            },
            "ca_hash": ca_hash,
            "node": {
                "name": registration.get("name") or os.uname().nodename,
                "labels": node_labels(registration),
                "taints": registration.get("taints"),
                "control_plane": True,
                "gpus": settings.get("gpus", 0),
                "address": address,
                **node_facts(),
            },
        },
        f"127.0.0.1:{port}",
        attempts=40,
    )
    ttl = ((init_doc.get("bootstrapTokens") or [{}])[0]).get("ttl", "24h0m0s")
    token = fake_common.post("/token/create", {"ttl": ttl, "description": "kubeadm init"}, f"127.0.0.1:{port}")["join"]
    return init_done(cluster, ttl, waived, token)


def init_done(cluster: dict[str, Any], ttl: str, waived: list[str], token: str) -> int:
    fake_common.record(
        TOOL,
        sys.argv[1:],
        init_token_ttl=ttl,
        printed_token="--skip-token-print" not in sys.argv,
        preflight_waived=waived,
    )
    print(f"[init] Using Kubernetes version: {cluster['kubernetesVersion']}")
    print("Your Kubernetes control-plane has initialized successfully!")
    if "--skip-token-print" not in sys.argv:
        print(f"Then you can join any number of worker nodes by running the following on each as root:\n\n{token}")
    return 0


def join() -> int:
    path = arg("--config")
    if not path or not Path(path).is_file():
        fake_common.die(TOOL, f"unable to read config from {path!r}")
    info = Path(path).stat()
    mode = oct(info.st_mode & 0o777)
    if info.st_mode & 0o077 or info.st_uid != 0:
        fake_common.die(
            TOOL, f"TEST DOUBLE: the JoinConfiguration {path} is mode {mode}, owner {info.st_uid}: not 0600 root"
        )
    (doc,) = validated(path, ("JoinConfiguration",))
    bootstrap = doc["discovery"]["bootstrapToken"]
    checks = {"config_mode": mode, "ca_hashes": len(bootstrap.get("caCertHashes") or []), "token_on_argv": False}
    for existing in (KUBELET_CONF, K8S / "bootstrap-kubelet.conf", CA):
        if existing.exists():
            name = str(existing).replace("/", "-").lstrip("-")
            fake_common.die(TOOL, f"[preflight] [ERROR FileAvailable-{name}]: {existing} already exists")
    active = subprocess.run(["systemctl", "is-active", "--quiet", "kubelet"], check=False).returncode == 0
    if active and (KUBELET / "config.yaml").exists():
        fake_common.die(TOOL, "[preflight] [ERROR Port-10250]: Port 10250 is in use")
    registration = doc.get("nodeRegistration") or {}
    checks["preflight_waived"] = host_preflight("join", [doc])
    if FAIL_JOIN_ONCE.exists():
        FAIL_JOIN_ONCE.unlink()
        write(K8S / "bootstrap-kubelet.conf", "# TEST DOUBLE: a join that never finished\n")
        write(CA, "# TEST DOUBLE: the CA a join that never finished fetched\n", 0o644)
        start_kubelet()
        fake_common.die(TOOL, "error execution phase kubelet-start: timed out waiting for the condition (TEST DOUBLE)")
    if api_double():
        rest_join(bootstrap, registration)
        start_kubelet()
        fake_common.record(TOOL, sys.argv[1:], **checks)
        print("This node has joined the cluster")
        return 0
    settings = fake_common.config()
    answer = fake_common.post(
        "/join",
        {
            "token": bootstrap["token"],
            "ca_hashes": bootstrap.get("caCertHashes") or [],
            "node": {
                "name": registration.get("name") or os.uname().nodename,
                "labels": node_labels(registration),
                "taints": registration.get("taints"),
                "gpus": settings.get("gpus", 0),
                **node_facts(),
                "address": next(
                    (a["value"] for a in registration.get("kubeletExtraArgs") or [] if a["name"] == "node-ip"), ""
                ),
            },
        },
        bootstrap["apiServerEndpoint"],
        attempts=3,
    )
    if "error" in answer:
        fake_common.die(TOOL, f"error execution phase preflight: {answer['error']}")
    write(CA, "# TEST DOUBLE: the cluster CA discovery fetched and pinned\n", 0o644)
    write(KUBELET_CONF, kubeconfig(bootstrap["apiServerEndpoint"], "ca", "system:node"))
    start_kubelet()
    fake_common.record(TOOL, sys.argv[1:], **checks)
    print("This node has joined the cluster")
    return 0


def token() -> int:
    if not ADMIN.is_file():
        fake_common.die(TOOL, "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file")
    action = sys.argv[2]
    if api_double():
        return rest_token(action)
    if action == "create":
        result = fake_common.post(
            "/token/create", {"ttl": arg("--ttl", "24h0m0s"), "description": arg("--description", "")}
        )
        fake_common.record(TOOL, sys.argv[1:])
        if "--print-join-command" in sys.argv:
            print(result["join"])
        else:
            print(result["join"].split("--token ")[1].split()[0])
        return 0
    if action == "delete":
        token_id = sys.argv[-1]
        result = fake_common.post("/token/delete", {"id": token_id})
        fake_common.record(TOOL, sys.argv[1:], deleted=result["deleted"])
        print(f'bootstrap token "{token_id}" deleted')
        return 0
    fake_common.die(TOOL, f"TEST DOUBLE: kubeadm token {action} is not implemented")
    return 2


def rest_token(action: str) -> int:
    api = admin_api()
    endpoint = yaml.safe_load(ADMIN.read_text())["clusters"][0]["cluster"]["server"].removeprefix("https://")
    try:
        if action == "create":
            token = kubeadm_rest.create_token(api, arg("--ttl", "24h0m0s"), arg("--description", ""))
            fake_common.record(TOOL, sys.argv[1:])
            print(join_command(endpoint, token) if "--print-join-command" in sys.argv else token)
            return 0
        if action == "delete":
            token_id = sys.argv[-1]
            kubeadm_rest.delete_token(api, token_id)
            fake_common.record(TOOL, sys.argv[1:], deleted=True)
            print(f'bootstrap token "{token_id}" deleted')
            return 0
    except kubeadm_rest.KubeadmError as exc:
        fake_common.die(TOOL, str(exc))
    fake_common.die(TOOL, f"TEST DOUBLE: kubeadm token {action} is not implemented")
    return 2


def reset() -> int:
    if "--force" not in sys.argv:
        fake_common.die(TOOL, "TEST DOUBLE: kubeadm reset would ask for confirmation (pass --force)")
    systemctl("stop", "kubelet")
    systemctl("stop", fake_common.SERVER_UNIT)
    systemctl("reset-failed", fake_common.SERVER_UNIT)
    fake_common.STATE.unlink(missing_ok=True)
    for name in ("admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf"):
        (K8S / name).unlink(missing_ok=True)
    for folder in (K8S / "manifests", K8S / "pki", KUBELET / "pki"):
        shutil.rmtree(folder, ignore_errors=True)
    for name in ("config.yaml", "kubeadm-flags.env", "instance-config.yaml"):
        (KUBELET / name).unlink(missing_ok=True)
    fake_common.record(TOOL, sys.argv[1:])
    print("[reset] The reset process does not clean CNI configuration (TEST DOUBLE)")
    return 0


def main() -> int:
    fake_common.refuse_tokens_on_argv(TOOL)
    argv = sys.argv[1:]
    if argv[:1] == ["version"]:
        return version()
    if argv[:2] == ["config", "validate"]:
        return config_validate()
    if argv[:1] == ["init"]:
        return init()
    if argv[:1] == ["join"]:
        return join()
    if argv[:1] == ["token"]:
        return token()
    if argv[:1] == ["reset"]:
        return reset()
    fake_common.die(TOOL, f"TEST DOUBLE: kubeadm {' '.join(argv)} is not implemented")
    return 2


if __name__ == "__main__":
    started = time.time()
    sys.exit(main())
