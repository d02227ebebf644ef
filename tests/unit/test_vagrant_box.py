"""`python -m pyctl.lab.vagrant_box`: what it refuses before it builds anything, and the box's Vagrantfile."""

from __future__ import annotations

from pyctl.lab import vagrant_box


def test_a_box_file_name_without_the_box_suffix_is_refused_in_one_line(tmp_path, capsys):
    assert vagrant_box.main([str(tmp_path / "debian12.tar")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyctl: error: ") and err.count("\n") == 1, err
    assert "debian12.tar does not end in .box" in err
    assert not list(tmp_path.iterdir())


def test_the_box_boots_its_own_kernel_as_its_vagrant_user_with_its_own_key():
    text = vagrant_box._VAGRANTFILE
    for line in (
        'config.ssh.username = "vagrant"',
        'config.ssh.private_key_path = File.join(__dir__, "vagrant_key")',
        "config.ssh.insert_key = false",
        'libvirt.kernel = File.join(__dir__, "vmlinuz")',
        'libvirt.initrd = File.join(__dir__, "initrd.img")',
    ):
        assert line in text
    # root on the virtio disk, eth0 for the image's networkd DHCP unit, the serial console
    for arg in ("root=/dev/vda", "net.ifnames=0", "console=ttyS0"):
        assert arg in vagrant_box.CMD_LINE.split()


def _rootfs_with_the_lab_fstab(tmp_path):
    from pyctl.lab import image

    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/fstab").write_text(image._FSTAB)
    return tmp_path


def test_the_box_swaps_to_a_file_made_on_first_boot_not_to_the_lab_s_second_disk(tmp_path, monkeypatch):
    # A box has one disk: the lab's /dev/vdb swap line held the boot 90 s waiting for dev-vdb.device.
    rootfs = _rootfs_with_the_lab_fstab(tmp_path)
    ran = []
    monkeypatch.setattr(vagrant_box, "run", lambda argv, **kwargs: ran.append(argv))
    vagrant_box._swap_file_instead_of_disk(rootfs)
    fstab = (rootfs / "etc/fstab").read_text().splitlines()
    assert "/dev/vdb" not in "\n".join(fstab)
    assert [line.split() for line in fstab if " swap " in line and not line.startswith("#")] == [
        ["/swapfile", "none", "swap", "sw,nofail", "0", "0"]
    ]
    assert any(line.split()[:2] == ["/dev/vda", "/"] for line in fstab)  # the root line stays
    unit = (rootfs / "etc/systemd/system/pyctl-vagrant-swap-file.service").read_text()
    assert "Before=swap.target swapfile.swap" in unit and "ConditionPathExists=!/swapfile" in unit
    assert "mkswap" in unit and "WantedBy=swap.target" in unit
    assert ran == [["chroot", str(rootfs), "systemctl", "enable", "pyctl-vagrant-swap-file.service"]]


def test_an_image_fstab_the_box_does_not_know_stops_the_build(tmp_path, monkeypatch):
    import pytest

    from pyctl.lab.errors import LabSetupFailed

    rootfs = _rootfs_with_the_lab_fstab(tmp_path)
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n/dev/vdc none swap sw 0 0\n")
    monkeypatch.setattr(vagrant_box, "run", lambda argv, **kwargs: None)
    with pytest.raises(LabSetupFailed, match="fstab swap lines"):
        vagrant_box._swap_file_instead_of_disk(rootfs)
