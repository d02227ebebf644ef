"""vm hosts: QEMU virtual machines with their own kernel, booted from the shared lab image.

Per VM: a qcow2 overlay on the image's base.raw (the base is never written), a swap disk, virtio disks,
network and RNG, the guest kernel booted directly (-kernel/-initrd), the console on a log file, a
monitor socket, -daemonize with a pidfile. QEMU runs inside the lab namespace, where its tap sits on
the bridge and the lab's dnsmasq hands each VM its fixed address by MAC. Disks are throw-away: teardown
is a kill.

Acceleration: KVM where /dev/kvm really runs guests, found by trying (a short boot of the guest kernel,
remembered until the next reboot of this machine), otherwise TCG. PYCTL_LAB_ACCEL=kvm|tcg overrides.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from pyctl.config import Settings
from pyctl.errors import UsageError
from pyctl.lab import aptcache, image, network, repo
from pyctl.lab.errors import LabSetupFailed
from pyctl.lab.model import BRIDGE, Lab, LabHost
from pyctl.lab.netns import TOOLS as NETNS_TOOLS
from pyctl.lab.processes import kill_now, pidfile_alive, run, spawn, wait_for_pidfile
from pyctl.lab.ssh import HOST_KEY

TOOLS = {
    **NETNS_TOOLS,
    **aptcache.TOOLS,
    **repo.TOOLS,
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "mkswap": "util-linux",
}
SYSTEMD = True
BOOT_TIMEOUT = 600.0  # TCG on two shared cores: a boot takes 20-60 s, much more when the machine is busy
SWAP_SIZE = "1G"
QEMU = "qemu-system-x86_64"
# Under TCG, `-cpu max` offers AVX/AVX2, which guest glibc and kernel then use and QEMU emulates slowly:
# a Nehalem (x86-64-v2, SSE4.2, no AVX) guest booted in half the time here (37 s against 67-131 s).
TCG_CPU = "Nehalem"


def prepare(lab: Lab, settings: Settings, progress: Callable[[str], None]) -> None:
    """The shared image (built if needed), the accelerator, and the shared apt proxy."""
    built = image.ensure(settings, progress, lab.os)
    lab.image = built.hash
    lab.extra["image_dir"] = str(built.dir)
    lab.accel = accelerator(settings, built, progress)
    lab.extra["apt_cache_port"] = aptcache.ensure(settings)


def start_lab(lab: Lab, hosts: list[LabHost]) -> None:
    """A tap per VM on the lab bridge, and dnsmasq there handing each VM its fixed address."""
    network.create_taps(lab.namespace, [tap_name(h) for h in hosts])
    _start_dnsmasq(lab, hosts)


def tap_name(host: LabHost) -> str:
    return f"t-{host.name}"


def _start_dnsmasq(lab: Lab, hosts: list[LabHost]) -> None:
    conf = lab.dir / "dnsmasq.conf"
    lines = [
        "# pyctl lab: fixed addresses by MAC on the lab bridge; no DNS (port=0), no lease file.",
        f"interface={BRIDGE}",
        "bind-interfaces",
        "except-interface=lo",
        "port=0",
        f"dhcp-range={lab.network.network_address},static,{lab.network.netmask},infinite",
        "dhcp-authoritative",
        "leasefile-ro",
        "dhcp-option=option:router",  # no default route: the lab has no way out
        "dhcp-option=option:dns-server",
        f"pid-file={lab.dir / 'dnsmasq.pid'}",
        f"log-facility={lab.dir / 'dnsmasq.log'}",
        "log-dhcp",
        "user=nobody",
    ]
    lines += [f"dhcp-host={h.mac},{h.address},{h.name},infinite" for h in hosts]
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(
        ["nsenter", f"--net={network.ns_path(lab.namespace)}", "dnsmasq", f"--conf-file={conf}"],
        what="starting dnsmasq in the lab namespace",
        timeout=30,
        hint=f"see {lab.dir / 'dnsmasq.log'}",
    )
    if wait_for_pidfile(lab.dir / "dnsmasq.pid", timeout=10) is None:
        raise LabSetupFailed("dnsmasq did not start in the lab namespace", hint=f"see {lab.dir / 'dnsmasq.log'}")


def _seed_tar(lab: Lab, host: LabHost) -> Path:
    authorized = (lab.dir / "authorized_keys").read_text(encoding="utf-8")
    files = image.seed_files(authorized, lab.host_dir(host) / HOST_KEY, lab.etc_hosts(), lab.apt_proxy)
    path = lab.host_dir(host) / "seed.tar"
    with tarfile.open(path, "w") as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    path.chmod(0o600)
    return path


def start(lab: Lab, host: LabHost) -> None:
    built = image.Image(Path(lab.extra["image_dir"]))
    directory = lab.host_dir(host)
    disk, swap = directory / "disk.qcow2", directory / "swap.img"
    run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(built.raw), "-F", "raw", str(disk)],
        what="qemu-img",
    )
    swap.unlink(missing_ok=True)
    run(["truncate", "-s", SWAP_SIZE, str(swap)])
    run(["mkswap", "-q", str(swap)], what="mkswap")
    _seed_tar(lab, host)
    (directory / "qemu.pid").unlink(missing_ok=True)
    run(
        [
            "nsenter",
            f"--net={network.ns_path(lab.namespace)}",
            *qemu_argv(lab, host, built),
        ],
        what=f"starting QEMU for lab host {host.name}",
        timeout=60,
        hint=f"see {console_log(lab, host)}",
    )
    if wait_for_pidfile(directory / "qemu.pid", timeout=10) is None:
        raise LabSetupFailed(f"QEMU for lab host {host.name} did not start", hint=f"see {console_log(lab, host)}")


def qemu_argv(lab: Lab, host: LabHost, built: image.Image) -> list[str]:
    directory = lab.host_dir(host)
    disk, swap, seed = directory / "disk.qcow2", directory / "swap.img", directory / "seed.tar"
    kvm = lab.accel == "kvm"
    append = " ".join(
        part
        for part in [
            "root=/dev/vda rw console=ttyS0 quiet mitigations=off",
            # No crypto self-tests, no PS/2 probing: 7 of the 15 s the kernel took to boot under TCG.
            "net.ifnames=0 fsck.mode=skip cryptomgr.notests i8042.noaux i8042.nokbd",
            "" if kvm else "tsc=reliable",
            f"systemd.hostname={host.name}",
        ]
        if part
    )
    return [
        QEMU,
        "-name", f"pyctl-{lab.name}-{host.name},process=pyctl-{lab.name}-{host.name}",
        "-machine", "pc",  # fewer emulated devices than q35 (no AHCI, no ICH9): a faster boot under TCG
        "-accel", "kvm" if kvm else "tcg,tb-size=256",
        "-cpu", "host" if kvm else TCG_CPU,
        "-smp", str(lab.vm_cpus),
        "-m", str(lab.vm_memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-kernel", str(built.kernel),
        "-initrd", str(built.initrd),
        "-append", append,
        "-drive", f"file={disk},format=qcow2,if=virtio,cache=unsafe,discard=unmap",
        "-drive", f"file={swap},format=raw,if=virtio,cache=unsafe",
        "-netdev", f"tap,id=net0,ifname={tap_name(host)},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={host.mac}",
        "-device", "virtio-rng-pci",
        "-fw_cfg", f"name={image.FW_CFG_NAME},file={seed}",
        "-serial", f"file:{console_log(lab, host)}",
        "-monitor", f"unix:{directory / 'monitor.sock'},server=on,wait=off",
        "-pidfile", str(directory / "qemu.pid"),
        "-daemonize",
    ]  # fmt: skip


def pid(lab: Lab, host: LabHost) -> int | None:
    return pidfile_alive(lab.host_dir(host) / "qemu.pid")


def console_log(lab: Lab, host: LabHost) -> Path:
    return lab.host_dir(host) / "console.log"


# --- KVM or TCG ---------------------------------------------------------------------------------------


def accelerator(settings: Settings, built: image.Image, progress: Callable[[str], None]) -> str:
    forced = os.environ.get("PYCTL_LAB_ACCEL", "").strip().lower()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise UsageError(f"PYCTL_LAB_ACCEL={forced!r}: use kvm or tcg")
        return forced
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError:
        return "tcg"
    cache = settings.state_dir / "cache" / "accel.json"
    key = {"boot_id": _boot_id(), "kernel": built.hash}
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
        if {k: known.get(k) for k in key} == key and known.get("accel") in ("kvm", "tcg"):
            return known["accel"]
    except (OSError, ValueError):
        pass
    progress("trying KVM (a short boot of the guest kernel)")
    accel = "kvm" if _kvm_boots(built, settings.state_dir / "cache") else "tcg"
    cache.write_text(json.dumps({**key, "accel": accel}) + "\n", encoding="utf-8")
    return accel


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"


def _kvm_boots(built: image.Image, scratch: Path, timeout: float = 30.0) -> bool:
    """Boot the guest kernel under KVM until it panics for want of a root disk (proof that it ran).

    A nested or paravirtual /dev/kvm that cannot run stock kernels aborts QEMU or hangs instead.
    """
    log = scratch / "kvm-probe.log"
    log.unlink(missing_ok=True)
    pidfile = scratch / "kvm-probe.pid"
    argv = [
        QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot", "-serial", f"file:{log}",
        "-kernel", str(built.kernel), "-append", "console=ttyS0 panic=-1 rdinit=/nonexistent root=/dev/null",
    ]  # fmt: skip
    qemu = spawn(argv, log=scratch / "kvm-probe.err", pidfile=pidfile)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            if "Kernel panic" in text or "VFS:" in text:
                return True
            if pidfile_alive(pidfile) is None:
                return False
            time.sleep(0.1)
        return False
    finally:
        kill_now([qemu])
        pidfile.unlink(missing_ok=True)
