"""One source of truth per fact: where a value has to be repeated, these tests keep the copies equal."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pyctl import phases
from pyctl.inventory import DEFAULT_SETTINGS
from pyctl.k8s import names

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
CLUSTER_WIDE_PHASES = {"control_plane", "addons", "verify"}


def defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def role_vars(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text()) or {}


def test_role_fallbacks_for_cluster_settings_are_pyctls_defaults():
    """`pod_cidr | default('...')` in a role must fall back to what pyctl's inventory model defaults to."""
    # cluster_name is left out: pyctl always passes its own name (pyctl_cluster_name) to the playbooks.
    settings = [s for s in DEFAULT_SETTINGS if s != "cluster_name"]
    pattern = re.compile(r"\b(" + "|".join(settings) + r")\s*\|\s*default\('([^']*)'\)")
    found = 0
    for path in ROLES.glob("*/defaults/main.yml"):
        for setting, fallback in pattern.findall(path.read_text()):
            found += 1
            assert fallback == DEFAULT_SETTINGS[setting], f"{path}: {setting} falls back to {fallback!r}"
    assert found >= 4


def test_verify_falls_back_to_the_names_the_other_roles_default_to():
    verify = defaults("verify")
    assert f"default('{defaults('shared_storage')['shared_storage_pvc_name']}')" in verify["verify_shared_claim_name"]
    assert (
        f"default('{defaults('shared_storage')['shared_storage_namespace']}')"
        in (verify["verify_shared_claim_namespace"])
    )
    assert f"default('{defaults('control_plane')['control_plane_dns_domain']}')" in verify["verify_dns_domain"]


def test_python_names_match_the_roles():
    assert (
        defaults("shared_storage")["shared_storage_namespace"],
        defaults("shared_storage")["shared_storage_pvc_name"],
    ) == (names.SHARED_CLAIM_NAMESPACE, names.SHARED_CLAIM_NAME)
    flannel = role_vars("flannel")
    ds = next(o for o in flannel["_flannel_objects"] if o["kind"] == "DaemonSet")
    assert (names.FLANNEL.namespace, names.FLANNEL.daemonset) == (flannel["_flannel_namespace"], ds["metadata"]["name"])
    assert dict([names.FLANNEL.pod_label]).items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    plugin = role_vars("nvidia_device_plugin")
    ds = next(o for o in plugin["_nvidia_device_plugin_objects"] if o["kind"] == "DaemonSet")
    assert (names.DEVICE_PLUGIN.namespace, names.DEVICE_PLUGIN.daemonset) == (
        ds["metadata"]["namespace"],
        ds["metadata"]["name"],
    )
    assert dict([names.DEVICE_PLUGIN.pod_label]).items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert defaults("nvidia_device_plugin")["nvidia_device_plugin_node_label"] == names.GPU_NODE_LABEL
    runtime_class = next(o for o in plugin["_nvidia_device_plugin_objects"] if o["kind"] == "RuntimeClass")
    assert runtime_class["metadata"]["name"] == runtime_class["handler"] == names.RUNTIME_CLASS


def test_the_cri_socket_is_the_one_agreed_with_the_container_runtime_role():
    socket = "unix:///run/containerd/containerd.sock"
    assert defaults("control_plane")["control_plane_cri_socket"] == socket
    assert defaults("join_nodes")["join_nodes_cri_socket"] == socket
    assert defaults("cluster_reset")["cluster_reset_cri_socket"] == socket
    assert defaults("kubernetes")["kubernetes_crictl_config"]["runtime-endpoint"] == socket


def test_add_node_runs_every_node_phase_of_site_in_order():
    playbooks = ROOT / "playbooks"
    site = phases.discover(playbooks)
    add_node = [
        Path(e["ansible.builtin.import_playbook"]).stem
        for e in yaml.safe_load((playbooks / "add_node.yml").read_text())
    ]
    assert add_node == [p for p in site if p not in CLUSTER_WIDE_PHASES], (
        "playbooks/add_node.yml must import every phase of site.yml except control_plane, addons and verify"
    )


def test_kubernetes_phases_come_in_the_agreed_order():
    site = phases.discover(ROOT / "playbooks")
    mine = ["kubernetes", "control_plane", "join_nodes", "addons", "verify"]
    assert [p for p in site if p in mine] == mine
    assert site.index("kubernetes") > site.index("preflight")
    assert site[-1] == "verify"


def test_play_names_carry_their_phase():
    for name in ("kubernetes", "control_plane", "join_nodes", "addons", "verify", "reset"):
        for play in yaml.safe_load((ROOT / "playbooks" / f"{name}.yml").read_text()):
            title = name.replace("_", " ").capitalize()
            assert play["name"].startswith(f"{title} | "), play["name"]


def test_the_sample_knobs_are_real_role_variables():
    sample = (ROOT / "inventory" / "sample" / "group_vars" / "all" / "kubernetes.yml").read_text()
    known = {name for role in ROLES.iterdir() if role.is_dir() for name in defaults(role.name)}
    named = re.findall(r"^# ([a-z_]+):", sample, re.M)
    assert named and set(named) <= known, sorted(set(named) - known)
