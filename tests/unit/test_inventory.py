"""Every inventory problem `pyctl inventory check` must find, named by host and field, with lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyctl import inventory
from pyctl.errors import InventoryError

GOOD_INI = """\
[control_plane]
cp1 ansible_host=192.168.10.11

[workers]
w1 ansible_host=192.168.10.12 gpu=true
w2 ansible_host=192.168.10.13 gpu=false

[nfs_server]
cp1

[all:vars]
pod_cidr=10.244.0.0/16
service_cidr=10.96.0.0/12
"""

GOOD_YAML = """\
all:
  vars:
    kubernetes_version: "1.36"
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 192.168.10.11}
    workers:
      hosts:
        w1: {ansible_host: 192.168.10.12, gpu: true}
"""


def write(tmp_path: Path, text: str, name: str = "hosts.ini") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, name: str = "hosts.ini") -> list[inventory.Problem]:
    return inventory.check(write(tmp_path, text, name)).problems


def only(found: list[inventory.Problem]) -> inventory.Problem:
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def test_good_ini_inventory_gives_hosts_groups_gpu_and_defaults(tmp_path):
    result = inventory.check(write(tmp_path, GOOD_INI))
    assert result.ok, [str(p) for p in result.problems]
    cluster = result.cluster
    assert [h.name for h in cluster.hosts] == ["cp1", "w1", "w2"]
    assert cluster.control_plane.name == "cp1"
    assert cluster.control_plane.groups == ("control_plane", "nfs_server")
    assert {h.name: h.gpu for h in cluster.hosts} == {"cp1": False, "w1": True, "w2": False}
    assert [h.name for h in cluster.nodes] == ["cp1", "w1", "w2"]
    assert cluster.settings["pod_cidr"] == "10.244.0.0/16"
    assert cluster.settings["kubernetes_version"] == inventory.DEFAULT_SETTINGS["kubernetes_version"]
    assert inventory.default_nfs_allowed_cidr(cluster) == "192.168.10.0/24"


def test_good_yaml_inventory(tmp_path):
    result = inventory.check(write(tmp_path, GOOD_YAML, "hosts.yml"))
    assert result.ok, [str(p) for p in result.problems]
    assert [(h.name, h.gpu) for h in result.cluster.hosts] == [("cp1", False), ("w1", True)]


def test_group_vars_next_to_the_inventory_are_read(tmp_path):
    path = write(tmp_path, "[control_plane]\ncp1 ansible_host=192.168.10.11\n")
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "cluster.yml").write_text("pod_cidr: 10.32.0.0/16\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "cp1.yml").write_text("gpu: true\n")
    cluster = inventory.load(path)
    assert cluster.settings["pod_cidr"] == "10.32.0.0/16"
    assert cluster.control_plane.gpu is True


def test_missing_file(tmp_path):
    found = only(inventory.check(tmp_path / "nope.ini").problems)
    assert found.field == "file" and "does not exist" in found.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path, text):
    found = only(problems(tmp_path, text))
    assert found.field == "file" and "empty" in found.message


def test_directory_is_not_an_inventory(tmp_path):
    found = only(inventory.check(tmp_path).problems)
    assert "directory" in found.message


def test_binary_file_is_not_an_inventory(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_bytes(b"\x00\xff\xfe\x00garbage")
    found = only(inventory.check(path).problems)
    assert "not an inventory" in found.message


def test_yaml_that_is_not_an_inventory(tmp_path):
    found = only(problems(tmp_path, "- a\n- b\n", "hosts.yml"))
    assert found.field == "file" and "not an inventory" in found.message and "list" in found.message


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = "all:\n  children:\n    control_plane:\n      hosts:\n        cp1: {ansible_host: 10.0.0.1\n    workers:\n"
    found = only(problems(tmp_path, text, "hosts.yml"))
    assert found.field == "yaml"
    assert "syntax error" in found.message
    assert found.line == 6


def test_ini_syntax_error_names_the_line(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1\n\n[workers\nw1\n"
    found = only(problems(tmp_path, text))
    assert found.field == "ini" and found.line == 4
    assert "]" in found.message


def test_ini_bad_host_line_names_the_line(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1\n[workers]\nw1 ansible_host 10.0.0.2\n"
    found = only(problems(tmp_path, text))
    assert found.field == "ini" and found.line == 4


def test_missing_control_plane(tmp_path):
    found = only(problems(tmp_path, "[workers]\nw1 ansible_host=10.0.0.2\n"))
    assert found.field == "groups" and "no control plane" in found.message


def test_two_control_planes(tmp_path):
    found = only(problems(tmp_path, "[control_plane]\ncp1 ansible_host=10.0.0.1\ncp2 ansible_host=10.0.0.2\n"))
    assert "2 hosts in 'control_plane'" in found.message and "cp1, cp2" in found.message


def test_two_nfs_servers(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1\n[nfs_server]\ncp1\nn2 ansible_host=10.0.0.9\n"
    found = only(problems(tmp_path, text))
    assert "nfs_server" in found.message and "at most one" in found.message


@pytest.mark.parametrize(
    ("group", "meant"),
    [
        ("worker", "workers"),
        ("master", "control_plane"),
        ("controlplane", "control_plane"),
        ("nfs-server", "nfs_server"),
    ],
)
def test_group_names_that_look_like_typos_of_ours(tmp_path, group, meant):
    text = f"[control_plane]\ncp1 ansible_host=10.0.0.1\n\n[{group}]\nw1 ansible_host=10.0.0.2\n"
    found = only(problems(tmp_path, text.replace("nfs-server", "nfs_serverr")))
    assert found.field == "groups" and f"did you mean {meant!r}" in found.message
    assert found.line == 4


def test_unrelated_group_names_are_fine(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1\n[rack_a]\ncp1\n"
    assert problems(tmp_path, text) == []


def test_same_address_twice(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1\n[workers]\nw1 ansible_host=10.0.0.1\n"
    found = only(problems(tmp_path, text))
    assert found.host == "w1" and found.field == "ansible_host" and "also used by host cp1" in found.message


def test_same_address_different_ports_is_fine(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1 ansible_port=2201\n[workers]\nw1 ansible_host=10.0.0.1 ansible_port=2202\n"
    assert problems(tmp_path, text) == []


@pytest.mark.parametrize("address", ["10.0.0.300", "10.0.0", "bad host", "-leading.dash"])
def test_invalid_address(tmp_path, address):
    text = f"[control_plane]\ncp1 ansible_host='{address}'\n"
    found = only(problems(tmp_path, text))
    assert found.host == "cp1" and found.field == "ansible_host" and "not a valid" in found.message


def test_host_names_as_addresses_are_fine(tmp_path):
    assert problems(tmp_path, "[control_plane]\ngpu-node-01.lab.example.com\n") == []


def test_invalid_port(tmp_path):
    found = only(problems(tmp_path, "[control_plane]\ncp1 ansible_host=10.0.0.1 ansible_port=70000\n"))
    assert found.field == "ansible_port"


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("pod_cidr", "10.244.0.0/33", "not a valid CIDR"),
        ("pod_cidr", "banana", "not a valid CIDR"),
        ("service_cidr", "10.96.0.1/12", "did you mean 10.96.0.0/12"),
        ("nfs_allowed_cidr", "10.0.0.0/40", "not a valid CIDR"),
        ("nfs_allowed_cidr", "0.0.0.0/0", "exports to everyone"),
    ],
)
def test_invalid_cidrs_name_the_field_and_line(tmp_path, field, value, expect):
    text = f"[control_plane]\ncp1 ansible_host=192.168.1.1\n\n[all:vars]\n{field}={value}\n"
    found = only(problems(tmp_path, text))
    assert found.field == field and expect in found.message
    assert found.line == 5


def test_pod_and_service_cidrs_overlap(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=192.168.1.1\n[all:vars]\npod_cidr=10.0.0.0/8\nservice_cidr=10.96.0.0/12\n"
    found = only(problems(tmp_path, text))
    assert "overlaps service_cidr" in found.message


def test_cidr_containing_a_host_address(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.244.3.7\n"
    found = only(problems(tmp_path, text))
    assert found.host == "cp1" and found.field == "pod_cidr" and "10.244.3.7" in found.message


@pytest.mark.parametrize("value", ["maybe", "2", "'yes please'"])
def test_gpu_var_that_is_not_a_boolean(tmp_path, value):
    text = f"[control_plane]\ncp1 ansible_host=10.0.0.1\n[workers]\nw1 ansible_host=10.0.0.2 gpu={value}\n"
    found = only(problems(tmp_path, text))
    assert found.host == "w1" and found.field == "gpu" and "not a boolean" in found.message
    assert found.line == 4


@pytest.mark.parametrize("value", ["true", "True", "yes", "false", "no", "False"])
def test_gpu_booleans_in_any_common_spelling(tmp_path, value):
    text = f"[control_plane]\ncp1 ansible_host=10.0.0.1 gpu={value}\n"
    assert problems(tmp_path, text) == []


def test_gpu_var_in_yaml_that_is_a_string(tmp_path):
    text = GOOD_YAML.replace("gpu: true", "gpu: sometimes")
    found = only(problems(tmp_path, text, "hosts.yml"))
    assert found.host == "w1" and found.field == "gpu" and found.line == 10


def test_bad_kubernetes_version_and_export_path(tmp_path):
    text = "[control_plane]\ncp1 ansible_host=10.0.0.1\n[all:vars]\nkubernetes_version=latest\nnfs_export_path=srv/x\n"
    found = problems(tmp_path, text)
    assert {p.field for p in found} == {"kubernetes_version", "nfs_export_path"}


def test_every_problem_is_reported_at_once(tmp_path):
    text = (
        "[controlplane]\ncp1 ansible_host=10.0.0.1\n[workers]\nw1 ansible_host=10.0.0.1 gpu=maybe\n"
        "[all:vars]\npod_cidr=10.96.0.0/16\n"
    )
    fields = sorted(p.field for p in problems(tmp_path, text))
    assert fields == ["ansible_host", "gpu", "groups", "groups", "pod_cidr"]


def test_load_raises_with_every_problem(tmp_path):
    path = write(tmp_path, "[workers]\nw1 ansible_host=10.0.0.2 gpu=maybe\n")
    with pytest.raises(InventoryError) as caught:
        inventory.load(path)
    assert caught.value.exit_code == 2
    assert len(caught.value.problems) == 2
    assert "pyctl inventory check" in caught.value.hint


def test_sample_inventories_are_valid():
    root = Path(__file__).resolve().parents[2] / "inventory" / "sample"
    samples = sorted(p for p in root.glob("hosts.*"))
    assert samples, "inventory/sample/ must ship sample inventories"
    for path in samples:
        result = inventory.check(path)
        assert result.ok, (path, [str(p) for p in result.problems])


def test_load_caches_valid_inventories_and_notices_every_change(tmp_path):
    path = write(tmp_path, GOOD_INI)
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    settings_file = tmp_path / "group_vars" / "all" / "x.yml"
    settings_file.write_text("service_cidr: 10.96.0.0/12\n")
    cache = tmp_path / "cache"
    first = inventory.load(path, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 1
    again = inventory.load(path, cache_dir=cache)
    assert [(h.name, h.address, h.groups, h.gpu) for h in again.hosts] == [
        (h.name, h.address, h.groups, h.gpu) for h in first.hosts
    ]
    assert again.settings == first.settings
    # a change in group_vars/ is a new fingerprint: parsed and validated again
    settings_file.write_text("pod_cidr: 192.168.10.0/24\n")
    with pytest.raises(InventoryError):
        inventory.load(path, cache_dir=cache)
    settings_file.write_text("pod_cidr: 10.32.0.0/16\n")
    assert inventory.load(path, cache_dir=cache).settings["pod_cidr"] == "10.32.0.0/16"
    # and so is a change in the inventory itself
    path.write_text(GOOD_INI.replace("gpu=true", "gpu=maybe"))
    with pytest.raises(InventoryError):
        inventory.load(path, cache_dir=cache)


def test_secret_named_host_vars_never_enter_the_model_or_the_cache(tmp_path):
    path = write(tmp_path, "[control_plane]\ncp1 ansible_host=10.0.0.1 ansible_become_password=hunter2 api_token=xyz\n")
    cache = tmp_path / "cache"
    cluster = inventory.load(path, cache_dir=cache)
    assert "ansible_become_password" not in cluster.control_plane.vars
    assert "api_token" not in cluster.control_plane.vars
    assert cluster.control_plane.vars["ansible_host"] == "10.0.0.1"
    assert "hunter2" not in next(cache.glob("*.json")).read_text()


def test_cluster_name_defaults_to_the_control_plane_and_is_validated(tmp_path):
    cluster = inventory.load(write(tmp_path, GOOD_INI))
    assert cluster.name == "cp1"
    found = only(problems(tmp_path, GOOD_INI + "cluster_name=My_Lab\n"))
    assert found.field == "cluster_name"
    assert inventory.load(write(tmp_path, GOOD_INI + "cluster_name=lab-a\n")).name == "lab-a"
