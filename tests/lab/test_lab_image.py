"""The lab image's recipe: no richer than a minimal server install (the roles must install what they use), and a
Debian 13 image from the same mirror as the Debian 12 one (`pyctl lab up --os debian-13`)."""

from __future__ import annotations

import pytest

from pyctl.errors import UsageError
from pyctl.lab import LabSpec, image

HOST = [
    image.AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",), "/k.gpg"),
    image.AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",), "/k.gpg"),
    image.AptSource("http://other.example/apt", ("stable",), ("main",)),
]
# What roles install for themselves (repository prerequisites, download tools): never in the image.
ROLE_INSTALLED = {"gnupg", "python3-debian", "ca-certificates", "curl", "wget", "containerd", "nfs-common"}


def test_the_image_carries_nothing_a_role_must_install_itself():
    assert not ROLE_INSTALLED & set(image.PACKAGES)
    # A kernel, init, sshd and python3 for Ansible: what the lab needs to boot and be reached.
    assert {"linux-image-amd64", "systemd-sysv", "openssh-server", "python3"} <= set(image.PACKAGES)


@pytest.mark.parametrize(("os_name", "suite"), [("debian-12", "bookworm"), ("debian-13", "trixie")])
def test_each_os_gets_this_machines_mirror_for_its_own_suites(monkeypatch, os_name, suite):
    monkeypatch.delenv("PYCTL_LAB_MIRROR", raising=False)
    monkeypatch.setattr(image, "host_sources", lambda: HOST)
    data = image.recipe(os_name)
    assert (data["suite"], data["mirror"]) == (suite, "http://mirror.example/debian")
    sources = data["files"]["/etc/apt/sources.list.d/debian.sources"]
    assert f"Suites: {suite} {suite}-updates\n" in sources and f"Suites: {suite}-security\n" in sources
    assert "other.example" not in sources and ("bookworm" in sources) == (suite == "bookworm")


def test_the_two_systems_are_two_cached_images(monkeypatch):
    monkeypatch.setattr(image, "host_sources", lambda: HOST)
    assert image.recipe_hash(image.recipe("debian-12")) != image.recipe_hash(image.recipe("debian-13"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LabSpec(kind="container", os="debian-14"), "--os debian-14: lab hosts run one of debian-12, debian-13"),
        (LabSpec(kind="netns", os="debian-13"), "--os debian-13: netns hosts run this machine's own system"),
    ],
)
def test_an_unknown_or_impossible_os_is_a_usage_error(spec, message):
    with pytest.raises(UsageError, match=message):
        spec.validate()


def test_lab_up_with_an_unknown_os_is_one_line_exit_2(capsys):
    from pyctl import cli

    assert cli.main(["lab", "up", "--kind", "container", "--os", "debian-14"]) == 2
    err = capsys.readouterr().err
    assert err == "pyctl: error: --os debian-14: lab hosts run one of debian-12, debian-13\n", err


def test_a_labs_os_is_recorded_and_part_of_its_shape(tmp_path):
    from pyctl.lab.model import Lab, plan_hosts, subnet_for

    spec = LabSpec(name="t13", nodes=2, kind="container", os="debian-13")
    lab = Lab(name="t13", kind="container", dir=tmp_path, subnet=subnet_for(7), hosts=plan_hosts(spec, subnet_for(7)))
    lab.os = spec.os
    lab.save()
    loaded = Lab.load(tmp_path)
    assert loaded is not None and loaded.os == "debian-13" and loaded.summary()["os"] == "debian-13"
    assert loaded.same_shape(spec)
    # debian-12 asked of a debian-13 lab: a clash, never a silent reuse
    assert not loaded.same_shape(LabSpec(name="t13", nodes=2, kind="container"))


@pytest.mark.parametrize("os_name", ["debian-12", "debian-13"])
def test_the_image_does_not_regenerate_its_initramfs_on_package_installs(monkeypatch, os_name):
    # VMs boot the initrd exported at build time: dpkg's initramfs-tools trigger (`update-initramfs -u`) would
    # only rebuild /boot's copy, a minute per NFS role under TCG. update-initramfs(8) skips -u when this says no.
    monkeypatch.setattr(image, "host_sources", lambda: HOST)
    conf = image.recipe(os_name)["files"]["/etc/initramfs-tools/update-initramfs.conf"]
    assert "update_initramfs=no" in conf.splitlines()


def test_the_build_makes_its_own_initrd_before_turning_updates_off(monkeypatch, tmp_path):
    # The setting is written after the build's `update-initramfs -u`, which it would otherwise turn into a no-op
    # (leaving the initrd debootstrap made, without the lab's virtio modules list).
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc/ssh").mkdir(parents=True)
    conf = rootfs / "etc/initramfs-tools/update-initramfs.conf"
    seen = []

    def fake_run(argv, **_):
        if "update-initramfs" in argv:
            seen.append((argv, conf.read_text() if conf.exists() else ""))

    monkeypatch.setattr(image, "run", fake_run)
    monkeypatch.setattr(image, "host_sources", lambda: HOST)
    image._customise(rootfs, image.recipe()["files"], hint="")
    assert len(seen) == 1 and "update_initramfs=no" not in seen[0][1], seen
    assert seen[0][0][-4:] == ["update-initramfs", "-u", "-k", "all"]
    assert "update_initramfs=no" in conf.read_text().splitlines()
    assert (rootfs / "etc/initramfs-tools/modules").read_text().startswith("virtio_pci\n")
