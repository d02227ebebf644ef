"""What this machine needs for a lab: root, and the tools each kind runs (installed from Debian when root).

Packages are installed with a policy-rc.d that returns 101, so no daemon (sshd, dnsmasq, apt-cacher-ng)
starts from its package scripts and starts listening on this machine's addresses: the lab runs its own
instances, bound inside its namespaces.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from pyctl.lab.errors import MissingTools, NotRoot
from pyctl.lab.model import is_root
from pyctl.lab.processes import run, tool_env

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_POLICY = "#!/bin/sh\n# pyctl lab: do not start daemons from package scripts\nexit 101\n"


def missing(tools: dict[str, str]) -> dict[str, str]:
    """The tools (name -> Debian package) not found on PATH or in the sbin directories."""
    path = tool_env()["PATH"]
    return {tool: pkg for tool, pkg in tools.items() if shutil.which(tool, path=path) is None}


def ensure(tools: dict[str, str], *, what: str, progress: Callable[[str], None] | None = None) -> None:
    """Require root, then install the packages of missing tools (or name them when that is impossible)."""
    absent = missing(tools)
    packages = sorted(set(absent.values()))
    if not is_root():
        if packages:
            raise MissingTools(
                f"{what} needs root and these missing programs: {', '.join(sorted(absent))}",
                hint=f"run as root, which installs them, or: sudo apt-get install {' '.join(packages)}",
            )
        raise NotRoot(f"{what} needs root (network namespaces, bridges, mounts)", hint="run it with sudo")
    if not packages:
        return
    if shutil.which("apt-get") is None:
        raise MissingTools(
            f"{what} needs these missing programs: {', '.join(sorted(absent))}",
            hint=f"install the packages {' '.join(packages)} (or your system's equivalent)",
        )
    if progress:
        progress(f"installing {' '.join(packages)} (apt-get)")
    install(packages)
    still = missing(tools)
    if still:
        raise MissingTools(
            f"{what} still misses {', '.join(sorted(still))} after installing {' '.join(packages)}",
            hint=f"check 'apt-get install {' '.join(sorted(set(still.values())))}'",
        )


def install(packages: Iterable[str]) -> None:
    names = sorted(set(packages))
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600", "-o", "Dpkg::Use-Pty=0"]
    hint = f"install them yourself: apt-get install {' '.join(names)}"
    created = _block_daemons()
    try:
        run([*apt, "update"], what="apt-get update", env=env, timeout=900, hint=hint)
        run(
            [*apt, "install", "--no-install-recommends", *names],
            what=f"apt-get install {' '.join(names)}",
            env=env,
            timeout=1800,
            hint=hint,
        )
    finally:
        if created:
            POLICY_RC_D.unlink(missing_ok=True)


def _block_daemons() -> bool:
    """Install a policy-rc.d that refuses every start, unless one is there already. True if we made it."""
    try:
        with POLICY_RC_D.open("x", encoding="utf-8") as out:
            out.write(_POLICY)
    except FileExistsError:
        return False
    POLICY_RC_D.chmod(0o755)
    return True
