"""Every template of the Kubernetes roles, rendered through Ansible's templating with fixed inputs:
compared with the golden files, validated against the Kubernetes OpenAPI schema of the pinned version
(kubernetes-validate, strict) and kubeadm's API types, and checked for the facts that must agree.

Regenerate the golden files after an intended change: python tests/tools/render_goldens.py
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import require_root
from tests.doubles import kubeadm_config
from tests.tools import render_goldens

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_SCHEMA_VERSION = "1.36.0"  # the minor pyctl pins (roles/versions versions_kubernetes)
MANIFESTS = ("flannel.yaml", "nvidia-device-plugin.yaml", "shared-storage.yaml", "round1.yaml", "round2.yaml")
SCENARIOS = render_goldens.scenarios()


@pytest.fixture(autouse=True)
def _as_root() -> None:
    require_root("the templates set owner root: render as root")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("renders")
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:  # two ansible-playbook runs side by side
        outs = pool.map(lambda s: render_goldens.render(s, base / s), SCENARIOS)
    return dict(zip(SCENARIOS, outs, strict=True))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_there_are_two_scenarios():
    assert SCENARIOS == ["sample", "variant"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_match_the_golden_files(rendered, scenario):
    out, golden = rendered[scenario], ROOT / "tests" / "golden" / scenario
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in golden.iterdir())
    for path in sorted(out.iterdir()):
        assert path.read_text() == (golden / path.name).read_text(), (
            f"{scenario}/{path.name} differs from its golden file: run python tests/tools/render_goldens.py "
            "and review the diff"
        )


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_validate_against_the_kubernetes_schema(rendered, scenario, name):
    objects = docs(rendered[scenario] / name)
    assert objects, f"{name} is empty"
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_SCHEMA_VERSION, strict=True)


def test_the_strict_schema_rejects_an_unknown_field(rendered):
    pod = docs(rendered["sample"] / "round1.yaml")[0]
    pod["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_kubeadm_configuration_is_valid(rendered, scenario):
    text = (rendered[scenario] / "kubeadm-config.yaml").read_text()
    kinds = ("InitConfiguration", "ClusterConfiguration", "KubeletConfiguration")
    assert kubeadm_config.problems(text, kinds) == []
    for doc in docs(rendered[scenario] / "kubeadm-config.yaml"):
        schema = kubeadm_config.schema(doc["apiVersion"], doc["kind"])
        jsonschema.Draft202012Validator(schema).validate(doc)  # the real validator agrees


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_join_configuration_is_valid_and_pins_the_ca(rendered, scenario):
    text = (rendered[scenario] / "join.yaml").read_text()
    assert kubeadm_config.problems(text, ("JoinConfiguration",)) == []
    (join,) = docs(rendered[scenario] / "join.yaml")
    jsonschema.Draft202012Validator(kubeadm_config.schema(join["apiVersion"], join["kind"])).validate(join)
    bootstrap = join["discovery"]["bootstrapToken"]
    assert bootstrap["caCertHashes"] and not bootstrap.get("unsafeSkipCAVerification")
    assert (rendered[scenario] / "join.yaml").stat().st_mode & 0o777 == 0o600
    assert (rendered[scenario] / "kubeadm-config.yaml").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_pod_cidr_feeds_kubeadm_and_flannel(rendered, scenario):
    inventory = yaml.safe_load((ROOT / "tests" / "fixtures" / "inventories" / f"golden-{scenario}.yml").read_text())
    pod_cidr = inventory["all"]["vars"]["pod_cidr"]
    cluster = next(d for d in docs(rendered[scenario] / "kubeadm-config.yaml") if d["kind"] == "ClusterConfiguration")
    config_map = next(d for d in docs(rendered[scenario] / "flannel.yaml") if d["kind"] == "ConfigMap")
    assert cluster["networking"]["podSubnet"] == pod_cidr
    assert json.loads(config_map["data"]["net-conf.json"])["Network"] == pod_cidr


def test_gpu_pods_use_the_nvidia_runtime_class_unless_it_is_the_default(rendered):
    for scenario, wanted in (("sample", "nvidia"), ("variant", None)):
        plugin = next(d for d in docs(rendered[scenario] / "nvidia-device-plugin.yaml") if d["kind"] == "DaemonSet")
        assert plugin["spec"]["template"]["spec"].get("runtimeClassName") == wanted, scenario
        assert plugin["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        gpu_pods = [d for d in docs(rendered[scenario] / "round1.yaml") if "gpu" in d["metadata"]["name"]]
        assert gpu_pods and all(p["spec"].get("runtimeClassName") == wanted for p in gpu_pods), scenario
        runtime_class = next(d for d in docs(rendered[scenario] / "nvidia-device-plugin.yaml"))
        assert runtime_class["kind"] == "RuntimeClass" and runtime_class["handler"] == "nvidia"


def test_gpu_hosts_register_with_the_device_plugin_label(rendered):
    (join,) = docs(rendered["sample"] / "join.yaml")
    args = {a["name"]: a["value"] for a in join["nodeRegistration"]["kubeletExtraArgs"]}
    assert args["node-labels"] == "nvidia.com/gpu.present=true"


def test_a_schedulable_control_plane_has_no_taints_and_a_plain_one_keeps_kubeadms(rendered):
    def init(scenario):
        return next(d for d in docs(rendered[scenario] / "kubeadm-config.yaml") if d["kind"] == "InitConfiguration")

    assert "taints" not in init("sample")["nodeRegistration"]
    assert init("variant")["nodeRegistration"]["taints"] == []


def test_flannel_interface_is_passed_only_when_set(rendered):
    def args(scenario):
        ds = next(d for d in docs(rendered[scenario] / "flannel.yaml") if d["kind"] == "DaemonSet")
        return ds["spec"]["template"]["spec"]["containers"][0]["args"]

    assert not any(a.startswith("--iface") for a in args("sample"))
    assert "--iface=eth1" in args("variant")


def test_storage_pods_write_from_two_nodes_and_read_across(rendered):
    writers = [d for d in docs(rendered["sample"] / "round1.yaml") if "write" in d["metadata"]["name"]]
    readers = docs(rendered["sample"] / "round2.yaml")
    assert len({w["spec"]["nodeName"] for w in writers}) == 2
    for reader in readers:
        wanted = reader["spec"]["containers"][0]["command"][2].split()[1]
        assert wanted != reader["spec"]["nodeName"], "a reader must read what the other node wrote"
