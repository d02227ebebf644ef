"""The Debian root filesystem that vm and container hosts boot, built once and cached.

One recipe (suite, mirror, packages, guest files) gives one image, stored under
`settings.state_dir/cache/images/<recipe hash>/`:

    rootfs/       the tree debootstrap made, customised; the read-only lower layer of every container
    base.raw      an ext4 image of rootfs (sparse, 8 GiB); the read-only backing file of every VM overlay
    vmlinuz, initrd.img   the guest kernel, booted directly by QEMU
    recipe.json   what was built

The image is rebuilt only when the recipe changes; the .debs stay in `cache/debs` (debootstrap
--cache-dir), so a rebuild downloads nothing new. The mirror is read from this machine's apt sources.
Nothing lab-specific is in the image: the SSH key, host keys, /etc/hosts and the apt proxy arrive per host
at boot through a seed (see `seed_files` and pyctl-lab-seed below).

One lab-only adaptation: the image never regenerates its own initramfs after it is built
(`update_initramfs=no` in /etc/initramfs-tools/update-initramfs.conf). VMs boot the kernel and initrd
exported at build time (QEMU -kernel/-initrd), never the ones in the guest's /boot, so the `update-initramfs -u`
that initramfs-tools' dpkg trigger runs after installing packages such as nfs-kernel-server or nfs-common
(about a minute per role under TCG) only wrote a file nothing reads. A kernel package's own hook
(`update-initramfs -c`) still runs. A real node keeps Debian's default: no role relies on, or changes, this.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyctl.config import Settings
from pyctl.lab.errors import LabSetupFailed, MissingTools
from pyctl.lab.locks import locked
from pyctl.lab.model import Lab, lab_dirs
from pyctl.lab.mounts import remove_tree, unmount_under
from pyctl.lab.processes import run

# The operating systems lab hosts can run (`pyctl lab up --os`): name -> Debian suite. The image's packages are
# the same for each.
OPERATING_SYSTEMS = {"debian-12": "bookworm", "debian-13": "trixie"}
DEFAULT_OS = "debian-12"
SUITE = OPERATING_SYSTEMS[DEFAULT_OS]
# No richer than a minimal server install: debootstrap's minbase (priority required) plus what the lab itself
# needs to boot a VM and be reached by Ansible: a kernel, systemd, sshd, python3 (with python3-apt, which
# Ansible's apt module would install itself) and sudo for become. Everything else a role uses (gnupg,
# python3-debian, ca-certificates, curl, ...) the role must install, so a missing install step fails here first.
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "kmod",
    "procps",
    "iputils-ping",
    "netbase",
)
DISK_SIZE = "8G"
SEED_DIR = "/run/pyctl-lab-seed"  # containers: bind-mounted here; VMs: unpacked here from fw_cfg
FW_CFG_NAME = "opt/pyctl/seed"
RECIPE_VERSION = 7  # bump when the build steps change in a way the files below do not show

# --- files the image carries (part of the recipe: changing one rebuilds the image) -------------------

_SSHD = """\
# pyctl lab: key-only root login; the host key arrives per host through the seed.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
AcceptEnv LANG LC_* GLOO_* NCCL_* PET_* DGL_*
"""

_NETWORK = """\
# pyctl lab: VMs take their fixed address from the lab's dnsmasq (by MAC). Containers never run networkd:
# their eth0 is configured from outside, in the network namespace pyctl made for them.
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
# The host name comes from the kernel command line (systemd.hostname=).
UseHostname=no
"""

_INITRAMFS = """\
# pyctl lab: a small initrd with just what a QEMU VM needs to mount its root (boots faster under TCG).
MODULES=list
"""

# Drivers udev would load at boot for QEMU's emulated chipset (IDE, SMBus, ACPI button, input) and for the
# host's CPU flags (nested KVM, SIMD hashes), which no lab role uses: under TCG every module load costs
# the booting VM CPU time. The VM's disks and network are virtio; its console is a serial port.
_BLACKLIST = "".join(
    f"blacklist {module}\n"
    for module in (
        "kvm", "kvm_amd", "kvm_intel", "cfg80211", "lpc_ich", "i2c_i801", "i2c_smbus", "i2c_piix4",
        "powernow_k8", "acpi_cpufreq", "pcspkr", "joydev", "serio_raw", "evdev", "button", "ahci",
        "libahci", "ata_piix", "ata_generic", "pata_acpi", "sr_mod", "cdrom", "floppy", "bochs", "drm",
        "intel_rapl_msr", "intel_rapl_common", "sha1_ssse3", "sha256_ssse3", "sha512_ssse3",
    )
)  # fmt: skip

# Written after the build's own `update-initramfs -u` (which this setting would skip): from then on, dpkg's
# initramfs-tools trigger (`update-initramfs -u`) is a no-op in the guest. See the module docstring.
UPDATE_INITRAMFS_CONF = "/etc/initramfs-tools/update-initramfs.conf"
_UPDATE_INITRAMFS = """\
# pyctl lab: VMs boot the initrd exported when the image was built (QEMU -initrd), never /boot's, so
# package installs do not regenerate it (a real node keeps update_initramfs=yes).
update_initramfs=no
backup_initramfs=no
"""

_INITRAMFS_MODULES = """\
virtio_pci
virtio_blk
virtio_net
virtio_rng
ext4
"""

_ONLY_IN_VMS = """\
[Unit]
ConditionVirtualization=vm
"""

# The swap line of the image's fstab (pyctl.lab.vagrant_box replaces it: a box has no second disk).
SWAP_LINE = "/dev/vdb  none  swap  sw,nofail  0 0"
_FSTAB = f"""\
# pyctl lab VMs: root on the first virtio disk, swap on the second.
/dev/vda  /     ext4  rw,errors=remount-ro  0 1
{SWAP_LINE}
"""

_SEED_SCRIPT = f"""\
#!/bin/sh
# pyctl lab: install this host's seed: the lab's SSH key, the host key, /etc/hosts and the apt proxy.
# Containers get the seed bind-mounted at {SEED_DIR}; VMs get it as a tar file in QEMU's fw_cfg.
set -eu
seed={SEED_DIR}
if [ ! -f "$seed/authorized_keys" ]; then
    fw=/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw
    [ -e "$fw" ] || modprobe qemu_fw_cfg
    mkdir -p "$seed"
    tar -xf "$fw" -C "$seed"
fi
install -d -m 0700 /root/.ssh
install -m 0600 "$seed/authorized_keys" /root/.ssh/authorized_keys
install -m 0600 "$seed/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$seed/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -m 0644 "$seed/hosts" /etc/hosts
if [ -f "$seed/apt-proxy.conf" ]; then
    install -m 0644 "$seed/apt-proxy.conf" /etc/apt/apt.conf.d/01pyctl-lab-proxy
fi
"""

_SEED_UNIT = """\
[Unit]
Description=pyctl lab seed (SSH keys, /etc/hosts, apt proxy)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=sysinit.target ssh.service
ConditionPathExists=!/etc/pyctl-lab-no-seed

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pyctl-lab-seed

[Install]
WantedBy=sysinit.target
"""

_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


# --- the host's apt sources ----------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """This machine's `deb` sources (deb822 .sources files and one-line .list files)."""
    sources: list[AptSource] = []
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                sources.append(
                    AptSource(
                        uri.rstrip("/"),
                        tuple(fields.get("suites", "").split()),
                        tuple(fields.get("components", "").split()),
                        fields.get("signed-by"),
                    )
                )
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if match:
                options, uri, suite, components = match.groups()
                signed = re.search(r"signed-by=(\S+?)\]?(\s|$)", options or "")
                sources.append(
                    AptSource(uri.rstrip("/"), (suite,), tuple(components.split()), signed[1] if signed else None)
                )
    return sources


def guest_sources(sources: list[AptSource], suite: str = SUITE) -> list[AptSource]:
    """This machine's Debian sources, turned to `suite` (bookworm, -updates, -security on a bookworm machine
    become trixie, trixie-updates, trixie-security for a Debian 13 lab): the lab hosts use them too."""
    codenames = set(OPERATING_SYSTEMS.values())
    found = []
    for source in sources:
        suites = tuple(
            dict.fromkeys(suite + x[len(x.split("-")[0]) :] for x in source.suites if x.split("-")[0] in codenames)
        )
        if suites and "main" in source.components:
            found.append(AptSource(source.uri, suites, ("main",), source.signed_by))
    return found


def mirror(sources: list[AptSource] | None = None, suite: str = SUITE) -> str:
    """The Debian archive to debootstrap from: PYCTL_LAB_MIRROR, else this machine's Debian source."""
    override = os.environ.get("PYCTL_LAB_MIRROR")
    if override:
        return override.rstrip("/")
    for source in guest_sources(host_sources() if sources is None else sources, suite):
        if suite in source.suites:
            return source.uri
    raise MissingTools(
        f"no Debian mirror for {suite} in this machine's apt sources (/etc/apt/sources.list.d/*.sources)",
        hint="set PYCTL_LAB_MIRROR to a Debian mirror (for example http://<mirror>/debian)",
    )


def sources_file(sources: list[AptSource]) -> str:
    stanzas = []
    for source in sources:
        lines = [
            "Types: deb",
            f"URIs: {source.uri}",
            f"Suites: {' '.join(source.suites)}",
            "Components: main",
        ]
        lines.append(f"Signed-By: {source.signed_by or '/usr/share/keyrings/debian-archive-keyring.gpg'}")
        stanzas.append("\n".join(lines))
    return "# pyctl lab: this machine's Debian mirrors, reached through the lab's apt proxy.\n" + "\n\n".join(stanzas)


# --- the recipe --------------------------------------------------------------------------------------


def recipe(os_name: str = DEFAULT_OS) -> dict:
    suite = OPERATING_SYSTEMS[os_name]
    base = mirror(suite=suite)
    sources = [s for s in guest_sources(host_sources(), suite) if s.suites] or [
        AptSource(base, (suite, f"{suite}-updates"), ("main",))
    ]
    return {
        "version": RECIPE_VERSION,
        "suite": suite,
        "variant": "minbase",
        "mirror": base,
        "packages": list(PACKAGES),
        "disk_size": DISK_SIZE,
        "files": {
            "/etc/ssh/sshd_config.d/pyctl-lab.conf": _SSHD,
            "/etc/systemd/network/80-pyctl-lab.network": _NETWORK,
            "/etc/systemd/system/systemd-networkd.service.d/pyctl-lab.conf": _ONLY_IN_VMS,
            "/etc/systemd/system/systemd-networkd.socket.d/pyctl-lab.conf": _ONLY_IN_VMS,
            "/etc/systemd/system/systemd-networkd-wait-online.service.d/pyctl-lab.conf": _ONLY_IN_VMS,
            "/etc/fstab": _FSTAB,
            "/etc/hosts": _HOSTS,
            "/etc/resolv.conf": "# pyctl lab: no DNS inside the lab; host names are in /etc/hosts\n",
            "/etc/apt/sources.list.d/debian.sources": sources_file(sources),
            "/usr/local/sbin/pyctl-lab-seed": _SEED_SCRIPT,
            "/etc/systemd/system/pyctl-lab-seed.service": _SEED_UNIT,
            "/etc/initramfs-tools/conf.d/pyctl-lab.conf": _INITRAMFS,
            "/etc/initramfs-tools/modules": _INITRAMFS_MODULES,
            UPDATE_INITRAMFS_CONF: _UPDATE_INITRAMFS,
            "/etc/modprobe.d/pyctl-lab-blacklist.conf": _BLACKLIST,
        },
    }


def recipe_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def hash(self) -> str:
        return self.dir.name

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def raw(self) -> Path:
        return self.dir / "base.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    def complete(self) -> bool:
        return (
            all(p.exists() for p in (self.rootfs / "usr", self.raw, self.kernel, self.initrd))
            and (self.dir / "recipe.json").is_file()
        )


def images_dir(settings: Settings) -> Path:
    return settings.state_dir / "cache" / "images"


def debs_dir(settings: Settings) -> Path:
    return settings.state_dir / "cache" / "debs"


def in_use(settings: Settings) -> set[str]:
    """Image hashes that labs recorded in this state directory still use (never pruned)."""
    used = set()
    for directory in lab_dirs(settings.labs_dir):
        lab = Lab.load(directory)
        if lab is not None and lab.image:
            used.add(lab.image)
    return used


def ensure(settings: Settings, progress: Callable[[str], None], os_name: str = DEFAULT_OS) -> Image:
    """The image of `os_name` for the current recipe, built first if the cache does not hold it."""
    data = recipe(os_name)
    image = Image(images_dir(settings) / recipe_hash(data))
    if image.complete():
        return image
    with locked(images_dir(settings) / ".lock"):  # one build at a time; the others wait and reuse it
        if image.complete():
            return image
        progress(f"building the lab image {image.hash} (debootstrap {data['suite']}; a few minutes the first time)")
        started = time.monotonic()
        _build(settings, data, image)
        progress(f"lab image built in {time.monotonic() - started:.0f} s")
        prune(settings, keep={image.hash, *in_use(settings)}, suite=data["suite"])
    return image


def _build(settings: Settings, data: dict, image: Image) -> None:
    build = image.dir.with_name(f".build-{image.hash}")
    remove_tree(build)  # what a killed build left, its /proc and /sys mounts included
    build.mkdir(parents=True)
    rootfs = build / "rootfs"
    log = image.dir.with_name(f"build-{image.hash}.log")
    debs_dir(settings).mkdir(parents=True, exist_ok=True)
    hint = f"see {log}"
    result = run(
        [
            "debootstrap",
            f"--variant={data['variant']}",
            f"--include={','.join(data['packages'])}",
            f"--cache-dir={debs_dir(settings)}",
            "--components=main",
            data["suite"],
            str(rootfs),
            data["mirror"],
        ],
        what="debootstrap",
        timeout=3600,
        check=False,
    )
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.startswith(("E:", "W:"))]
        why = lines[-1] if lines else f"exit status {result.returncode}"
        raise LabSetupFailed(f"debootstrap of the lab image failed: {why}", hint=hint)
    _customise(rootfs, data["files"], hint)
    _export_kernel(rootfs, build, hint)
    run(["truncate", "-s", data["disk_size"], str(build / "base.raw")])
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "pyctl-root",
            "-E",
            "root_owner=0:0",
            "-d",
            str(rootfs),
            str(build / "base.raw"),
        ],
        what="mkfs.ext4 of the lab image",
        timeout=1800,
        hint=hint,
    )
    (build / "base.raw").chmod(0o444)  # the shared backing file of every VM overlay: never written
    (build / "recipe.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    unmount_under(rootfs)
    remove_tree(image.dir)
    build.rename(image.dir)


def _customise(rootfs: Path, files: dict[str, str], hint: str) -> None:
    chroot = ["chroot", str(rootfs)]
    # Per-machine identity comes at boot: systemd makes a machine-id, the seed brings the host keys.
    (rootfs / "etc/machine-id").write_text("", encoding="utf-8")
    for stale in ("var/lib/dbus/machine-id", "etc/hostname", "etc/apt/sources.list"):
        (rootfs / stale).unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    sources = "/etc/apt/sources.list.d/debian.sources"
    _write(rootfs, sources, files[sources])
    # Package lists as of the build, so `apt-get install` works at once (roles still update_cache).
    # Done before resolv.conf is replaced: the chroot still resolves with this machine's copy.
    run([*chroot, "apt-get", "-q", "update"], what="apt-get update in the lab image", timeout=900, hint=hint)
    run([*chroot, "apt-get", "clean"], hint=hint)
    for path, text in files.items():
        if path != UPDATE_INITRAMFS_CONF:
            _write(rootfs, path, text)
    run([*chroot, "systemctl", "enable", "systemd-networkd.service", "pyctl-lab-seed.service"], hint=hint)
    # Timers that would take the dpkg lock in the middle of a role run and hit the proxy for nothing, and
    # e2scrub_reap, which costs 15 s of a TCG boot to find no snapshots.
    masked = ["apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service"]
    masked += ["systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount"]
    masked += ["modprobe@drm.service", "modprobe@efi_pstore.service"]
    # No per-user systemd manager: starting one held up the first SSH login by ~7 s under TCG, and no
    # role uses `systemctl --user`. No getty on tty1: VMs have no screen (the serial console keeps one).
    masked += ["user@.service", "getty@tty1.service"]
    run([*chroot, "systemctl", "mask", *masked], hint=hint)
    run([*chroot, "update-initramfs", "-u", "-k", "all"], what="update-initramfs in the lab image", hint=hint)
    _write(rootfs, UPDATE_INITRAMFS_CONF, files[UPDATE_INITRAMFS_CONF])


def _write(rootfs: Path, path: str, text: str) -> None:
    target = rootfs / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # /etc/resolv.conf may be a link
    target.write_text(text, encoding="utf-8")
    target.chmod(0o755 if "/sbin/" in path else 0o644)


def _export_kernel(rootfs: Path, build: Path, hint: str) -> None:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise LabSetupFailed("the lab image has no kernel in /boot", hint=hint)
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{version}"
    if not initrd.exists():
        raise LabSetupFailed(f"the lab image has no initrd for kernel {version}", hint=hint)
    shutil.copyfile(kernels[-1], build / "vmlinuz")
    shutil.copyfile(initrd, build / "initrd.img")


def _suite_of(path: Path) -> str | None:
    try:
        return json.loads((path / "recipe.json").read_text(encoding="utf-8")).get("suite")
    except (OSError, ValueError, AttributeError):
        return None


def prune(settings: Settings, keep: set[str], suite: str | None = None) -> list[str]:
    """Remove images of older recipes that no lab uses (of `suite` only, when given: a Debian 13 build leaves the
    Debian 12 image alone). Returns the hashes removed."""
    removed = []
    root = images_dir(settings)
    for path in root.iterdir() if root.is_dir() else []:
        if suite is not None and _suite_of(path) not in (suite, None):
            continue
        if path.is_dir() and not path.name.startswith(".") and path.name not in keep:
            remove_tree(path)
            path.with_name(f"build-{path.name}.log").unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def seed_files(authorized_keys: str, host_key: Path, hosts: str, apt_proxy: str | None) -> dict[str, tuple[bytes, int]]:
    """The files of one host's seed: name -> (content, mode)."""
    files = {
        "authorized_keys": (authorized_keys.encode(), 0o600),
        "ssh_host_ed25519_key": (host_key.read_bytes(), 0o600),
        "ssh_host_ed25519_key.pub": (host_key.with_name(host_key.name + ".pub").read_bytes(), 0o644),
        "hosts": (hosts.encode(), 0o644),
    }
    if apt_proxy:
        # The lab's own repositories (pyctl.lab.repo) are on the gateway itself: apt reaches them directly.
        gateway = apt_proxy.split("//", 1)[-1].rsplit(":", 1)[0]
        text = f'Acquire::http::Proxy "{apt_proxy}";\nAcquire::http::Proxy::{gateway} "DIRECT";\n'
        files["apt-proxy.conf"] = (text.encode(), 0o644)
    return files
