"""Mirror settings: what `pyctl inventory check` refuses, what `pyctl bootstrap --list-artifacts --json` lists, and
that the roles' repository tasks take the mirror's URL, key and fingerprint (pyctl.mirrors, README "Mirrors")."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from pyctl import cli, inventory, mirrors
from pyctl.errors import ExitCode
from pyctl.k8s import artifacts

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"

K8S_FPR = "DE15B14486CD377B9E876E1A234654DA9A296436"
LAB_FPR = "0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567"  # as gpg --fingerprint prints it
LAB_FPR_NORMAL = "0123456789ABCDEF0123456789ABCDEF01234567"
# The shapes issue 14's lab repository server serves: pkgs.k8s.io flat, Docker's per codename, NVIDIA's flat.
LAB_REPOSITORIES = {
    "kubernetes": {
        "url": "http://10.0.0.1:8080/kubernetes/",
        "key_url": "http://10.0.0.1:8080/lab.asc",
        "fingerprint": LAB_FPR,
    },
    "docker": {"url": "http://10.0.0.1:8080/docker", "key_url": "http://10.0.0.1:8080/lab.asc", "fingerprint": LAB_FPR},
    "nvidia": {"url": "http://10.0.0.1:8080/nvidia", "key_url": "http://10.0.0.1:8080/lab.asc", "fingerprint": LAB_FPR},
}
REGISTRIES = {"registry.k8s.io": "https://mirror.example.internal", "docker.io": "https://mirror.example.internal"}

INVENTORY = """\
all:
  vars:
{vars}
  children:
    control_plane:
      hosts:
        cp1: {{ansible_host: 192.168.10.11}}
    workers:
      hosts:
        w1: {{ansible_host: 192.168.10.12, gpu: true}}
"""


def write_inventory(tmp_path: Path, variables: dict) -> Path:
    text = textwrap.indent(yaml.safe_dump(variables, sort_keys=False), "    ") if variables else "    {}\n"
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY.format(vars=text.rstrip("\n")), encoding="utf-8")
    return path


# --- pyctl inventory check --------------------------------------------------------------------------------------


def test_valid_mirror_settings_pass_the_check(tmp_path):
    result = inventory.check(
        write_inventory(tmp_path, {"mirrors_repositories": LAB_REPOSITORIES, "mirrors_registries": REGISTRIES})
    )
    assert result.ok, [str(p) for p in result.problems]


@pytest.mark.parametrize(
    ("variables", "field", "words"),
    [
        (
            {"mirrors_repositories": {"kubernetes": {"url": "ftp://m/k8s/"}}},
            "mirrors_repositories.kubernetes.url",
            "http(s)",
        ),
        (
            {"mirrors_repositories": {"kubernetes": {"url": "https://m/k 8s/"}}},
            "mirrors_repositories.kubernetes.url",
            "spaces",
        ),
        (
            {"mirrors_repositories": {"docker": {"url": "https:///linux"}}},
            "mirrors_repositories.docker.url",
            "no valid host",
        ),
        (
            {"mirrors_repositories": {"docker": {"key_url": "https://m/gpg"}}},
            "mirrors_repositories.docker.url",
            "missing",
        ),
        (
            {"mirrors_repositories": {"nvidia": {"url": "https://m/n", "fingerprint": "C95B 321B"}}},
            "mirrors_repositories.nvidia.fingerprint",
            "40 hex digits",
        ),
        (
            {"mirrors_repositories": {"k8s": {"url": "https://m/"}}},
            "mirrors_repositories.k8s",
            "kubernetes, docker, nvidia",
        ),
        (
            {"mirrors_repositories": {"docker": {"url": "https://m/", "uri": "x"}}},
            "mirrors_repositories.docker.uri",
            "unknown key",
        ),
        (
            {"mirrors_registries": {"https://docker.io": "https://m"}},
            "mirrors_registries.https://docker.io",
            "registry name",
        ),
        ({"mirrors_registries": {"Docker.io": "https://m"}}, "mirrors_registries.Docker.io", "lower case"),
        ({"mirrors_registries": {"docker.io": "mirror.example"}}, "mirrors_registries.docker.io", "http(s)"),
        (
            {"mirrors_registries": {"ghcr.io": {"url": "https://m", "skip_verify": "yes"}}},
            "mirrors_registries.ghcr.io.skip_verify",
            "true or false",
        ),
        (
            {"mirrors_registries": {"nvcr.io": {"url": "https://m", "ca": "ca.pem"}}},
            "mirrors_registries.nvcr.io.ca",
            "absolute path",
        ),
        ({"mirrors_registries": ["docker.io"]}, "mirrors_registries", "mapping"),
    ],
)
def test_inventory_check_refuses_bad_mirror_settings_naming_the_variable_and_the_fix(tmp_path, variables, field, words):
    found = [p for p in inventory.check(write_inventory(tmp_path, variables)).problems]
    assert [p.field for p in found] == [field], [str(p) for p in found]
    assert words in found[0].message and found[0].group == "all" and found[0].line


def test_a_host_with_its_own_bad_mirror_is_named(tmp_path):
    path = write_inventory(tmp_path, {"mirrors_registries": REGISTRIES})
    path.write_text(path.read_text().replace("gpu: true}", "gpu: true, mirrors_registries: {nvcr.io: 'https://a b'}}"))
    (problem,) = inventory.check(path).problems
    assert (problem.host, problem.field) == ("w1", "mirrors_registries.nvcr.io")


def test_inventory_check_prints_one_line_per_problem_and_exits_2(tmp_path, capsys):
    path = write_inventory(tmp_path, {"mirrors_registries": {"docker.io": "ftp://mirror"}})
    assert cli.main(["inventory", "check", str(path)]) == ExitCode.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{path}:4: group all: mirrors_registries.docker.io: 'ftp://mirror' is not an http(s) URL: "
        "write it as https://mirror"
    ]


def test_bootstrap_refuses_bad_mirror_settings_before_touching_a_host(tmp_path, capsys, state_dir):
    path = write_inventory(
        tmp_path, {"mirrors_repositories": {"kubernetes": {"url": "https://m/", "fingerprint": "x"}}}
    )
    assert cli.main(["bootstrap", "-i", str(path)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("pyctl: error: inventory ") and "pyctl inventory check" in err


def test_fingerprints_are_compared_without_gpgs_spaces():
    assert mirrors.normalize_fingerprint(LAB_FPR) == LAB_FPR_NORMAL
    assert mirrors.normalize_fingerprint(K8S_FPR.lower()) == K8S_FPR


# --- pyctl bootstrap --list-artifacts --json --------------------------------------------------------------------


def listing(capsys, tmp_path: Path | None = None, variables: dict | None = None) -> dict:
    argv = ["bootstrap", "--list-artifacts", "--json"]
    if variables is not None and tmp_path is not None:
        argv += ["-i", str(write_inventory(tmp_path, variables))]
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_the_json_listing_has_its_documented_schema(capsys, state_dir):
    doc = listing(capsys)
    assert set(doc) == {
        "schema",
        "settings_from",
        "placeholders",
        "apt_repositories",
        "distribution_packages",
        "images",
        "files",
    }
    assert doc["schema"] == 1 and doc["settings_from"] == "role defaults"
    assert doc["placeholders"] == {
        "distribution": ["debian", "ubuntu"],
        "codename": {"ubuntu": ["jammy", "noble", "resolute"], "debian": ["bookworm", "trixie"]},
        "arch": ["amd64", "arm64"],
    }
    repo_keys = {
        "name",
        "role",
        "hosts",
        "mirror_key",
        "uri",
        "suite",
        "components",
        "key_url",
        "fingerprint",
        "mirrored",
        "upstream",
        "packages",
    }
    for repository in doc["apt_repositories"]:
        assert set(repository) == repo_keys, repository
        assert re.fullmatch(r"[0-9A-F]{40}", repository["fingerprint"]) and repository["mirrored"] is False
        assert repository["upstream"] == {k: repository[k] for k in ("uri", "key_url", "fingerprint")}
    by_key = {r["mirror_key"]: r for r in doc["apt_repositories"]}
    assert set(by_key) == set(mirrors.REPOSITORIES)
    assert (by_key["kubernetes"]["uri"], by_key["kubernetes"]["suite"]) == (
        "https://pkgs.k8s.io/core:/stable:/v1.36/deb/",
        "/",
    )
    assert by_key["docker"]["uri"].endswith("/linux/{distribution}") and by_key["docker"]["suite"] == "{codename}"
    assert by_key["docker"]["components"] == ["stable"] and by_key["nvidia"]["uri"].endswith("/deb/{arch}")
    assert {"name": "kubeadm", "version": "1.36.5-1.1"} in by_key["kubernetes"]["packages"]
    assert {"name": "containerd.io", "version": "2.3.5-1"} in by_key["docker"]["packages"]
    assert len(by_key["nvidia"]["packages"]) == 4 and by_key["nvidia"]["hosts"] == "gpu"
    for image in doc["images"]:
        assert set(image) - {"note"} == {
            "image",
            "registry",
            "repository",
            "tag",
            "digest",
            "role",
            "used_by",
            "mirror",
        }
        assert image["mirror"] is None and (image["tag"] or image["note"])
    for item in doc["files"]:
        assert set(item) == {"kind", "name", "role", "url", "checksum", "downloaded"}
        assert item["checksum"].startswith(("sha256:", "gpg-fingerprint:")), item


def test_every_image_the_roles_and_manifests_pull_is_in_the_json_listing(capsys, state_dir):
    listed = {i["image"] for i in listing(capsys)["images"]}
    pulled = set()
    for golden in (ROOT / "tests" / "golden").glob("*/*.yaml"):
        pulled |= set(re.findall(r"^\s+(?:- )?image: (\S+)$", golden.read_text(), re.M))
    versions = yaml.safe_load((ROLES / "versions" / "defaults" / "main.yml").read_text())["versions_kubernetes"]["1.36"]
    pulled.add(f"registry.k8s.io/pause:{versions['pause']}")  # containerd's sandbox image
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
        pulled.add(f"registry.k8s.io/{component}:v{versions['patch']}")  # kubeadm init's static pods
    pulled |= {"registry.k8s.io/etcd", "registry.k8s.io/coredns/coredns"}  # tags: kubeadm config images list
    assert pulled - listed == set()
    registries = {mirrors.split_image(i)[0] for i in listed}
    assert registries == set(mirrors.KNOWN_REGISTRIES)


def test_with_mirrors_the_json_listing_gives_the_mirror_and_the_upstream(tmp_path, capsys, state_dir):
    doc = listing(capsys, tmp_path, {"mirrors_repositories": LAB_REPOSITORIES, "mirrors_registries": REGISTRIES})
    by_key = {r["mirror_key"]: r for r in doc["apt_repositories"]}
    k8s = by_key["kubernetes"]
    assert (k8s["uri"], k8s["key_url"], k8s["fingerprint"], k8s["mirrored"]) == (
        "http://10.0.0.1:8080/kubernetes/",
        "http://10.0.0.1:8080/lab.asc",
        LAB_FPR_NORMAL,
        True,
    )
    assert k8s["upstream"] == {
        "uri": "https://pkgs.k8s.io/core:/stable:/v1.36/deb/",
        "key_url": "https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key",
        "fingerprint": K8S_FPR,
    }
    assert by_key["docker"]["uri"] == "http://10.0.0.1:8080/docker/{distribution}"
    assert by_key["docker"]["upstream"]["uri"] == "https://download.docker.com/linux/{distribution}"
    assert by_key["nvidia"]["uri"] == "http://10.0.0.1:8080/nvidia/{arch}"
    images = {i["image"]: i for i in doc["images"]}
    assert images["registry.k8s.io/pause:3.10.2"]["mirror"] == {
        "url": "https://mirror.example.internal",
        "reference": "mirror.example.internal/pause:3.10.2",
    }
    assert (
        images["docker.io/library/busybox:1.37.0"]["mirror"]["reference"]
        == "mirror.example.internal/library/busybox:1.37.0"
    )
    assert images["ghcr.io/flannel-io/flannel:v0.28.9"]["mirror"] is None


def test_the_text_listing_names_the_mirror_too(tmp_path, capsys, state_dir):
    path = write_inventory(tmp_path, {"mirrors_repositories": {"kubernetes": LAB_REPOSITORIES["kubernetes"]}})
    assert cli.main(["bootstrap", "--list-artifacts", "-i", str(path)]) == 0
    out = capsys.readouterr().out
    assert "package         kubeadm=1.36.5-1.1  (pkgs.k8s.io)" in out
    assert (
        "mirror          pkgs.k8s.io: http://10.0.0.1:8080/kubernetes/ "
        "(upstream https://pkgs.k8s.io/core:/stable:/v1.36/deb/)" in out
    )
    assert "pkgs.k8s.io/core" not in out.replace("(upstream https://pkgs.k8s.io/core", "")


def test_the_text_listing_names_each_registry_mirror(tmp_path, capsys, state_dir):
    path = write_inventory(tmp_path, {"mirrors_registries": REGISTRIES})
    assert cli.main(["bootstrap", "--list-artifacts", "-i", str(path)]) == 0
    mirrors_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("mirror ")]
    assert mirrors_lines == [
        "mirror          docker.io: https://mirror.example.internal (containerd hosts.toml)",
        "mirror          registry.k8s.io: https://mirror.example.internal (containerd hosts.toml)",
    ]


def test_json_goes_only_with_list_artifacts(capsys, state_dir):
    assert cli.main(["bootstrap", "--json"]) == ExitCode.USAGE
    assert "--list-artifacts" in capsys.readouterr().err


# --- the roles' repository tasks take the mirror ----------------------------------------------------------------


def _role_vars(role: str, inventory_vars: dict) -> dict:
    """The variables a play gives the role: its dependency's and its own defaults < inventory < role vars."""
    merged: dict = {}
    for path in (ROLES / "versions" / "defaults" / "main.yml", ROLES / role / "defaults" / "main.yml"):
        merged.update(yaml.safe_load(path.read_text()))
    merged.update(inventory_vars)
    merged.update(yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text()))
    return merged


def _templar(role: str, inventory_vars: dict, facts: dict | None = None):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    variables = {**_role_vars(role, inventory_vars), "ansible_facts": facts or {}, "inventory_hostname": "h1"}
    return Templar(loader=DataLoader(), variables=artifacts._trusted(variables))


def _tasks(role: str, name: str) -> list[dict]:
    flat = []
    for task in yaml.safe_load((ROLES / role / "tasks" / name).read_text()):
        flat += task.get("block", [task])
    return flat


def _module(tasks: list[dict], module: str) -> dict:
    (args,) = [t[module] for t in tasks if module in t]
    return args


def _render(templar, value):
    from ansible.template import trust_as_template

    if isinstance(value, list):
        return [_render(templar, v) for v in value]
    return templar.template(trust_as_template(value)) if isinstance(value, str) else value


def _key_check_passes(templar, task: dict, register: str, fingerprint: str) -> bool:
    """The role's assert on `gpg --show-keys --with-colons` output holding a key with `fingerprint`."""
    from ansible.template import trust_as_template

    gpg = {"stdout_lines": ["pub:-:4096:1:ABCDEF:1700000000:::-:", f"fpr:::::::::{fingerprint}:"]}
    templar.available_variables = {**templar.available_variables, register: gpg}
    return bool(templar.template(trust_as_template("{{ " + task["ansible.builtin.assert"]["that"] + " }}")))


@pytest.mark.parametrize("mirrored", [False, True], ids=["upstream", "mirror"])
def test_the_kubernetes_repository_tasks_use_the_mirror_url_key_and_fingerprint(mirrored):
    inventory_vars = {"mirrors_repositories": {"kubernetes": LAB_REPOSITORIES["kubernetes"]}} if mirrored else {}
    templar = _templar("kubernetes", inventory_vars)
    tasks = _tasks("kubernetes", "repository.yml")
    url, key_url, fingerprint = (
        (LAB_REPOSITORIES["kubernetes"]["url"], LAB_REPOSITORIES["kubernetes"]["key_url"], LAB_FPR_NORMAL)
        if mirrored
        else (
            "https://pkgs.k8s.io/core:/stable:/v1.36/deb/",
            "https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key",
            K8S_FPR,
        )
    )
    assert _render(templar, _module(tasks, "ansible.builtin.get_url")["url"]) == key_url
    repo = _module(tasks, "ansible.builtin.deb822_repository")
    assert (_render(templar, repo["uris"]), repo["suites"]) == ([url], ["/"])
    (check,) = [t for t in tasks if "ansible.builtin.assert" in t]
    assert _key_check_passes(templar, check, "__kubernetes_key", fingerprint)
    assert not _key_check_passes(templar, check, "__kubernetes_key", LAB_FPR_NORMAL if not mirrored else K8S_FPR)


@pytest.mark.parametrize("mirrored", [False, True], ids=["upstream", "mirror"])
def test_the_docker_and_nvidia_repository_tasks_use_the_mirror_url_key_and_fingerprint(mirrored):
    inventory_vars = {"mirrors_repositories": LAB_REPOSITORIES} if mirrored else {}
    facts = {"distribution": "Debian", "distribution_release": "trixie", "architecture": "x86_64"}
    templar = _templar("containerd", inventory_vars, facts)
    docker = _tasks("containerd", "install.yml")
    nvidia = _tasks("containerd", "nvidia.yml")
    if mirrored:
        want = {
            "docker": ("http://10.0.0.1:8080/docker/debian", "http://10.0.0.1:8080/lab.asc", LAB_FPR_NORMAL),
            "nvidia": ("http://10.0.0.1:8080/nvidia/amd64", "http://10.0.0.1:8080/lab.asc", LAB_FPR_NORMAL),
        }
    else:
        want = {
            "docker": (
                "https://download.docker.com/linux/debian",
                "https://download.docker.com/linux/debian/gpg",
                "9DC858229FC7DD38854AE2D88D81803C0EBFCD88",
            ),
            "nvidia": (
                "https://nvidia.github.io/libnvidia-container/stable/deb/amd64",
                "https://nvidia.github.io/libnvidia-container/gpgkey",
                "C95B321B61E88C1809C4F759DDCAE044F796ECB0",
            ),
        }
    for name, tasks, register in (
        ("docker", docker, "__containerd_docker_key"),
        ("nvidia", nvidia, "__containerd_nvidia_key"),
    ):
        url, key_url, fingerprint = want[name]
        assert _render(templar, _module(tasks, "ansible.builtin.get_url")["url"]) == key_url
        repo = _module(tasks, "ansible.builtin.deb822_repository")
        assert _render(templar, repo["uris"]) == url
        (check,) = [
            t for t in tasks if "ansible.builtin.assert" in t and "fingerprint" in t["ansible.builtin.assert"]["that"]
        ]
        assert _key_check_passes(templar, check, register, fingerprint), name
        assert not _key_check_passes(templar, check, register, "F" * 40), name
    docker_repo = _module(docker, "ansible.builtin.deb822_repository")
    assert (_render(templar, docker_repo["suites"]), docker_repo["components"]) == (["trixie"], ["stable"])
    assert _module(nvidia, "ansible.builtin.deb822_repository")["suites"] == ["/"]
