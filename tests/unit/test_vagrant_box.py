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
