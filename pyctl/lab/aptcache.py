"""apt inside the lab, which has no internet: one caching proxy (apt-cacher-ng) shared by every lab.

Why a caching proxy rather than an offline repository: roles install packages by name from the normal
Debian archive (containerd, nfs-kernel-server, and whatever a later role adds). A proxy serves any of
them with no package list for us to keep in step with the roles, and still downloads each .deb once for
all labs and runs (its cache lives in `settings.state_dir/cache/apt-cacher-ng`, next to the image).

apt-cacher-ng cannot serve its proxy on a unix socket only, and must not listen on this machine's
network addresses, so it listens on 127.0.0.1 (a free port, never 0.0.0.0).
Each lab bridges it into its namespace: socat inside the namespace listens on the gateway
(`http://<gateway>:3142`, the address the hosts' apt uses) and forwards over a unix socket in the lab
directory to a second socat that connects to 127.0.0.1. It has no Remap rules: it fetches exactly the
URLs the hosts ask for, which are this machine's own mirrors (the image's apt sources are copied from
this machine's), so it never rewrites a request to a mirror that does not resolve here.

FreshIndexMaxAge is 180 s (apt-cacher-ng's default 27 s): within that window every host's `apt-get update` gets the
cached index files without a new check upstream. With 50 lab hosts updating over more than 27 s, several refreshes
of the same InRelease ran at once and apt-cacher-ng failed to move the old copy out of the way ("Failure to move
file ... InRelease ... File exists" in its error log), failing those hosts' requests. The window stays within "a
couple of minutes", the bound apt-cacher-ng's own acng.conf gives for consistent responses.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from pathlib import Path

from pyctl.config import Settings
from pyctl.lab.errors import LabSetupFailed
from pyctl.lab.locks import locked
from pyctl.lab.model import APT_PROXY_PORT, Lab, lab_dirs
from pyctl.lab.network import ns_path
from pyctl.lab.processes import alive, pidfile_alive, run, spawn, terminate

ACNG = "/usr/sbin/apt-cacher-ng"
TOOLS = {"apt-cacher-ng": "apt-cacher-ng", "socat": "socat"}


def root(settings: Settings) -> Path:
    return settings.state_dir / "cache" / "apt-cacher-ng"


def _conf(base: Path, port: int) -> str:
    return (
        "# pyctl lab: the lab's apt cache. Loopback only; no Remap rules (fetch what the hosts ask for).\n"
        f"CacheDir: {base / 'cache'}\n"
        f"LogDir: {base / 'log'}\n"
        "SupportDir: /usr/lib/apt-cacher-ng\n"
        f"PidFile: {base / 'run' / 'acng.pid'}\n"
        f"SocketPath: {base / 'run' / 'acng.sock'}\n"
        "BindAddress: 127.0.0.1\n"
        f"Port: {port}\n"
        "ExThreshold: 4\n"
        "FreshIndexMaxAge: 180\n"
        "UnbufferLogs: 1\n"
        "PassThroughPattern: ^$\n"
    )


def ensure(settings: Settings) -> int:
    """Start the shared apt-cacher-ng if it is not running; return the loopback port it listens on."""
    base = root(settings)
    with locked(base / ".lock"):
        pid = pidfile_alive(base / "run" / "acng.pid")
        port = _read_port(base)
        if pid and port and _listening(port):
            return port
        if pid:
            terminate([pid])
        for sub in ("cache", "log", "run", "conf"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # Keep the port of the last run when it is free: labs still up (whose proxy bridge points at it)
        # then work again once the proxy is back.
        port = port if port and _bindable(port) else _free_port()
        (base / "conf" / "acng.conf").write_text(_conf(base, port), encoding="utf-8")
        # It runs as root: its cache sits under the state directory (often in /root, closed to other
        # users), and it listens on loopback only.
        argv = [ACNG, "-c", str(base / "conf"), "ForeGround=0"]
        (base / "run" / "acng.pid").unlink(missing_ok=True)
        run(argv, what="starting apt-cacher-ng", timeout=30, hint=f"see {base / 'log'}")
        deadline = time.monotonic() + 15
        while not _listening(port):
            if time.monotonic() > deadline:
                raise LabSetupFailed(
                    f"apt-cacher-ng did not listen on 127.0.0.1:{port}",
                    hint=f"see {base / 'log' / 'apt-cacher.err'}",
                )
            time.sleep(0.05)
        (base / "run" / "port").write_text(f"{port}\n", encoding="utf-8")
        return port


def bridge(lab: Lab, port: int) -> str:
    """Make the proxy reachable inside the lab at http://<gateway>:3142; returns that URL."""
    sock = lab.dir / "apt-proxy.sock"
    if len(str(sock)) > 100:
        raise LabSetupFailed(f"the lab directory path is too long for a unix socket: {sock}")
    sock.unlink(missing_ok=True)
    spawn(
        ["socat", f"UNIX-LISTEN:{sock},fork,mode=600,unlink-early", f"TCP:127.0.0.1:{port}"],
        log=lab.dir / "apt-proxy.log",
        pidfile=lab.dir / "apt-bridge.pid",
    )
    spawn(
        [
            "nsenter",
            f"--net={ns_path(lab.namespace)}",
            "socat",
            f"TCP-LISTEN:{APT_PROXY_PORT},bind={lab.gateway},fork,reuseaddr",
            f"UNIX-CONNECT:{sock}",
        ],
        log=lab.dir / "apt-proxy.log",
        pidfile=lab.dir / "apt-proxy.pid",
    )
    deadline = time.monotonic() + 10
    while not sock.exists() or not _listening_in(lab, APT_PROXY_PORT):
        if time.monotonic() > deadline:
            raise LabSetupFailed(f"the apt proxy bridge of lab {lab.name} did not start", hint=f"see {lab.dir}")
        time.sleep(0.05)
    return f"http://{lab.gateway}:{APT_PROXY_PORT}"


def release(settings: Settings, leaving: str) -> None:
    """Stop the shared proxy when no other lab with vm or container hosts is left to use it."""
    base = root(settings)
    with locked(base / ".lock"):
        for directory in lab_dirs(settings.labs_dir):
            if directory.name == leaving:
                continue
            lab = Lab.load(directory)
            if lab is not None and lab.uses_services:
                return
        stop(settings)


def stop(settings: Settings) -> None:
    base = root(settings)
    pid = pidfile_alive(base / "run" / "acng.pid")
    if pid and alive(pid):
        terminate([pid], grace=10)


def _read_port(base: Path) -> int | None:
    try:
        return int((base / "run" / "port").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _listening_in(lab: Lab, port: int) -> bool:
    result = run(["ip", "netns", "exec", lab.namespace, "ss", "-Hltn", f"sport = :{port}"], check=False, timeout=10)
    return bool(result.stdout.strip())


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    """A free loopback port below 32768: apt-cacher-ng 3.7 cannot bind higher ports (a signed short)."""
    for port in random.sample(range(20000, 32768), 200):
        if _bindable(port):
            return port
    raise LabSetupFailed("no free loopback port for apt-cacher-ng between 20000 and 32767")
