"""A Vagrant box for the libvirt provider, made from the lab's Debian image (no box is downloaded).

    python -m pyctl.lab.vagrant_box OUT.box [--os debian-12]
    vagrant box add --name pyctl/debian12 OUT.box

The box is a tar of what vagrant-libvirt 0.11 reads (its example_box): `metadata.json` (provider libvirt,
format qcow2, virtual_size in GB), `box.img` (the qcow2 disk) and a `Vagrantfile` that Vagrant merges under
the project's. The lab image has no boot loader (the lab boots its kernel directly), so the box carries the
image's kernel and initrd and its Vagrantfile boots them the same way (`libvirt.kernel`, `.initrd`,
`.cmd_line`); libvirt's QEMU user must be able to read them where `vagrant box add` unpacked them
(VAGRANT_HOME, ~/.vagrant.d by default).

The guest: the lab image plus a `vagrant` user with passwordless sudo whose authorized key is one made for
this box alone (its private half travels in the box and the Vagrantfile points Vagrant at it; it is never
committed anywhere), SSH host keys made on first boot, and the lab's per-host seed switched off. A box has one
disk, not the lab's second one for swap: its swap is a file made on first boot (/swapfile, active, in fstab, as
on a stock install; node_prep turns it off). Left to wait for the lab's /dev/vdb, systemd held the boot 90 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from pyctl.config import Settings, load_settings
from pyctl.errors import PyctlError, UsageError
from pyctl.lab import image
from pyctl.lab.errors import LabSetupFailed
from pyctl.lab.locks import locked
from pyctl.lab.processes import run

USER = "vagrant"
BOX_VERSION = 2  # bump when the box's build steps change in a way the texts below do not show
SWAP_FILE = "/swapfile"
SWAP_SIZE = "128M"
# What the lab boots (pyctl/lab/vm.py) plus the console on the serial port only.
CMD_LINE = (
    "root=/dev/vda rw console=ttyS0 quiet mitigations=off net.ifnames=0 fsck.mode=skip cryptomgr.notests "
    "i8042.noaux i8042.nokbd"
)

_HOST_KEYS_UNIT = """\
[Unit]
Description=pyctl Vagrant box: SSH host keys made on first boot (each machine its own)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
"""

_SWAP_UNIT = f"""\
[Unit]
Description=pyctl Vagrant box: the swap file made on first boot
DefaultDependencies=no
After=systemd-remount-fs.service
Before=swap.target swapfile.swap
ConditionPathExists=!{SWAP_FILE}

[Service]
Type=oneshot
ExecStart=/usr/bin/fallocate -l {SWAP_SIZE} {SWAP_FILE}.new
ExecStart=/bin/chmod 600 {SWAP_FILE}.new
ExecStart=/sbin/mkswap -q {SWAP_FILE}.new
ExecStart=/bin/mv {SWAP_FILE}.new {SWAP_FILE}

[Install]
WantedBy=swap.target
"""

_VAGRANTFILE = f"""\
# pyctl's Debian box for vagrant-libvirt, made by `python -m pyctl.lab.vagrant_box` from the lab's image.
# It has no boot loader: libvirt boots the kernel and initrd that came in the box. The key is this box's own.
Vagrant.configure("2") do |config|
  config.ssh.username = "{USER}"
  config.ssh.private_key_path = File.join(__dir__, "vagrant_key")
  config.ssh.insert_key = false
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
    libvirt.kernel = File.join(__dir__, "vmlinuz")
    libvirt.initrd = File.join(__dir__, "initrd.img")
    libvirt.cmd_line = "{CMD_LINE}"
    libvirt.graphics_type = "none"
    libvirt.video_type = "none"
  end
end
"""


def box_hash() -> str:
    """What the box adds to the image, hashed: part of the cached box's name, so a change rebuilds it."""
    parts = (str(BOX_VERSION), USER, CMD_LINE, SWAP_FILE, SWAP_SIZE, _HOST_KEYS_UNIT, _SWAP_UNIT, _VAGRANTFILE)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def ensure(settings: Settings, progress: Callable[[str], None] = print, os_name: str = image.DEFAULT_OS) -> Path:
    """The box of the current lab image of `os_name`, made once and kept in the image cache (the older boxes
    of that system are removed when a newer image makes a new one)."""
    built = image.ensure(settings, progress, os_name)
    boxes = settings.state_dir / "cache" / "vagrant"
    box = boxes / f"{os_name}-{built.hash}-{box_hash()}.box"
    boxes.mkdir(parents=True, exist_ok=True)
    with locked(boxes / ".lock"):  # one build at a time; the others wait and reuse it
        if not box.is_file():
            for old in boxes.glob(f"{os_name}-*.box"):
                old.unlink()
            build(settings, box, os_name, progress)
    return box


def build(
    settings: Settings, out: Path, os_name: str = image.DEFAULT_OS, progress: Callable[[str], None] = print
) -> Path:
    """Write the box to `out` (a .box file) from the cached lab image of `os_name`, built first if needed."""
    built = image.ensure(settings, progress, os_name)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vagrant-box-", dir=out.parent) as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        progress(f"making the {os_name} Vagrant box from lab image {built.hash}")
        run(["cp", "-a", "--reflink=auto", str(built.rootfs), str(rootfs)], what="copying the lab image", timeout=900)
        _add_vagrant_user(rootfs, work / "vagrant_key")
        raw = work / "disk.raw"
        run(["truncate", "-s", image.DISK_SIZE, str(raw)])
        mkfs = ["mkfs.ext4", "-q", "-F", "-L", "pyctl-root", "-E", "root_owner=0:0", "-d", str(rootfs), str(raw)]
        run(mkfs, what="mkfs.ext4 of the box disk", timeout=1800)
        run(
            ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "box.img")],
            what="qemu-img convert",
            timeout=1800,
        )
        (work / "metadata.json").write_text(
            json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": int(image.DISK_SIZE.rstrip("G"))})
        )
        (work / "Vagrantfile").write_text(_VAGRANTFILE)
        (work / "vmlinuz").write_bytes(built.kernel.read_bytes())
        (work / "initrd.img").write_bytes(built.initrd.read_bytes())
        partial = out.with_name(out.name + ".part")
        partial.unlink(missing_ok=True)
        partial.touch(mode=0o600)  # it holds the box's private key
        with tarfile.open(partial, "w") as box:
            for name in ("metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd.img", "vagrant_key"):
                box.add(work / name, arcname=name)
        partial.replace(out)
    return out


def _add_vagrant_user(rootfs: Path, key: Path) -> None:
    chroot = ["chroot", str(rootfs)]
    run([*chroot, "useradd", "--create-home", "--shell", "/bin/bash", "--user-group", USER])
    sudoers = rootfs / "etc/sudoers.d" / USER
    sudoers.write_text(f"{USER} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pyctl vagrant box", "-f", str(key)])
    ssh = rootfs / "home" / USER / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(key.with_name(key.name + ".pub").read_text())
    (ssh / "authorized_keys").chmod(0o600)
    run([*chroot, "chown", "-R", f"{USER}:{USER}", f"/home/{USER}/.ssh"])
    # Not a lab host: no seed from QEMU's fw_cfg; the host keys are made on first boot instead.
    (rootfs / "etc/pyctl-lab-no-seed").write_text("")
    unit = rootfs / "etc/systemd/system/pyctl-vagrant-host-keys.service"
    unit.write_text(_HOST_KEYS_UNIT)
    run([*chroot, "systemctl", "enable", unit.name])
    _swap_file_instead_of_disk(rootfs)


def _swap_file_instead_of_disk(rootfs: Path) -> None:
    fstab = rootfs / "etc/fstab"
    lines = fstab.read_text().splitlines()
    swap = [line for line in lines if line.split()[2:3] == ["swap"] and not line.startswith("#")]
    if swap != [image.SWAP_LINE]:
        raise LabSetupFailed(f"the lab image's fstab swap lines are {swap}", hint="update pyctl/lab/vagrant_box.py")
    kept = [line for line in lines if line not in swap and not line.startswith("#")]
    header = "# pyctl Vagrant box: root on the virtio disk, swap in a file made on first boot."
    fstab.write_text("\n".join([header, *kept, f"{SWAP_FILE}  none  swap  sw,nofail  0 0"]) + "\n")
    unit = rootfs / "etc/systemd/system/pyctl-vagrant-swap-file.service"
    unit.write_text(_SWAP_UNIT)
    run(["chroot", str(rootfs), "systemctl", "enable", unit.name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyctl.lab.vagrant_box", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .box file to write")
    parser.add_argument("--os", default=image.DEFAULT_OS, choices=sorted(image.OPERATING_SYSTEMS))
    args = parser.parse_args(argv)
    try:
        if not args.out.name.endswith(".box"):
            raise UsageError(f"{args.out} does not end in .box", hint="name the box file like debian12.box")
        print(build(load_settings(), args.out, args.os))
    except PyctlError as exc:
        print(f"pyctl: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
