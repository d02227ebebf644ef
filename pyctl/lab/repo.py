"""The lab's own signed apt repositories, shaped like the upstream ones the roles add (issue 14).

The lab has no internet, so pkgs.k8s.io, Docker's and NVIDIA's repositories are served from inside the lab's
network namespace by a plain HTTP server on the gateway (`http://<gateway>:8080`), under paths that copy
the upstream hosts':

    /pkgs.k8s.io/core:/stable:/v1.36/deb/                     flat suite "/" (+ Release.key)
    /download.docker.com/linux/debian/dists/<codename>/stable  suite <codename>, component stable (+ ../gpg)
    /nvidia.github.io/libnvidia-container/stable/deb/amd64/    flat suite "/" (+ ../../../gpgkey)

Each is signed (InRelease and Release.gpg) with a key the lab makes at `up` (ed25519, in the lab's own
GNUPGHOME, root-only inside the root-only lab directory and gone with the lab); its fingerprint goes into
the lab's inventory, where the roles check it as they check the upstream keys. apt-cacher-ng stays for the
distribution's own packages.

Contents: real packages from the configured Debian mirror, repackaged under the names the roles install
(`REAL`): Docker's `containerd.io` wraps Debian's containerd 2.x (sid), pkgs.k8s.io's `kubernetes-cni` holds
Debian's CNI plugins. The packages that cannot be real here (kubelet, kubeadm, the NVIDIA toolkit) are built
by the tests from tests/doubles and added with `publish` (pyctl itself never serves a double).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from pyctl.config import Settings
from pyctl.lab import image
from pyctl.lab.errors import LabSetupFailed
from pyctl.lab.locks import locked
from pyctl.lab.model import Lab
from pyctl.lab.network import ns_path
from pyctl.lab.processes import run, spawn

TOOLS = {"dpkg-scanpackages": "dpkg-dev", "dpkg-deb": "dpkg", "gpg": "gnupg"}
PORT = 8080
ARCH = "amd64"
# Debian's own builds, taken as they are from the configured mirror (`apt-cache madison` there, 2026-12):
# the distributions' stable suites carry containerd 1.x only, sid carries 2.1.
REAL = {"containerd": "2.1.9+ds1-5", "containernetworking-plugins": "1.9.1+ds1-1"}
REAL_SUITE = "sid"
# Where each repository lives under the server's root (upstream host + path), and where its key is served.
K8S_MINOR = "1.36"
K8S_PATH = f"pkgs.k8s.io/core:/stable:/v{K8S_MINOR}/deb"
DOCKER_PATH = "download.docker.com/linux"
NVIDIA_PATH = "nvidia.github.io/libnvidia-container"
# Packages by repository (names as upstream spells them); anything else published goes to pkgs.k8s.io.
DOCKER_PACKAGES = ("containerd.io",)
NVIDIA_PACKAGES = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
CODENAMES = tuple(image.OPERATING_SYSTEMS.values())
EPOCH = 1764547200  # 2025-12-01: every file of a repackaged .deb gets this mtime (byte-identical rebuilds)


@dataclass(frozen=True)
class Served:
    """What the inventory needs to know about the lab's repositories."""

    url: str
    fingerprint: str
    containerd_io_version: str | None  # None: Debian's containerd 2.x could not be had (see note)
    note: str = ""

    def to_dict(self) -> dict[str, str | None]:
        return {
            "url": self.url,
            "fingerprint": self.fingerprint,
            "containerd_io_version": self.containerd_io_version,
            "note": self.note,
        }


def cache(settings: Settings) -> Path:
    return settings.state_dir / "cache" / "lab-repo"


# --- real packages, repackaged ----------------------------------------------------------------------


def containerd_io_version(containerd: str = REAL["containerd"]) -> str:
    """Debian's containerd 2.1.9+ds1-5 -> containerd.io 2.1.9-1 (Docker's scheme: upstream version, build 1)."""
    return _upstream(containerd) + "-1"


def kubernetes_cni_version(plugins: str = REAL["containernetworking-plugins"]) -> str:
    """Debian's CNI plugins 1.9.1+ds1-1 -> kubernetes-cni 1.9.1-1.1 (pkgs.k8s.io's scheme)."""
    return _upstream(plugins) + "-1.1"


def _upstream(version: str) -> str:
    """The upstream part of a Debian version: 2.1.9+ds1-5 -> 2.1.9."""
    return re.match(r"(?:\d+:)?([0-9.]+)", version)[1]


def real_packages(settings: Settings) -> list[Path]:
    """containerd.io and kubernetes-cni, made once per cache from Debian's packages (downloaded once)."""
    base = cache(settings) / "real"
    with locked(cache(settings) / ".lock"):
        wanted = [
            base / f"containerd.io_{containerd_io_version()}_{ARCH}.deb",
            base / f"kubernetes-cni_{kubernetes_cni_version()}_{ARCH}.deb",
        ]
        if all(p.exists() for p in wanted):
            return wanted
        debs = _download(settings, base / "debian")
        work = Path(tempfile.mkdtemp(prefix="repack-", dir=base))
        try:
            _repack(
                debs["containerd"],
                wanted[0],
                work / "containerd",
                package="containerd.io",
                version=containerd_io_version(),
                fields={"Provides": "containerd", "Conflicts": "containerd", "Replaces": "containerd"},
                description=(
                    "pyctl lab: Debian's containerd (repackaged under Docker's name)\n"
                    f" Debian's containerd {REAL['containerd']} ({REAL_SUITE}), unchanged, under the package name\n"
                    " of Docker's repository so that the containerd role's Docker path (repository, key check,\n"
                    " pin, hold) runs in the lab. Unlike Docker's containerd.io it does not bundle runc: it\n"
                    " depends on the distribution's runc (sid's runc needs a newer glibc than Debian 12 has)."
                ),
            )
            _repack(
                debs["containernetworking-plugins"],
                wanted[1],
                work / "cni",
                package="kubernetes-cni",
                version=kubernetes_cni_version(),
                fields={},
                move=("usr/lib/cni", "opt/cni/bin"),
                description=(
                    "pyctl lab: Debian's CNI plugins (repackaged under pkgs.k8s.io's name)\n"
                    f" Debian's containernetworking-plugins {REAL['containernetworking-plugins']} ({REAL_SUITE}),\n"
                    " moved to /opt/cni/bin where pkgs.k8s.io's kubernetes-cni puts them."
                ),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return wanted


def _download(settings: Settings, into: Path) -> dict[str, Path]:
    """Debian's packages of `REAL` from the configured mirror's sid, with a private apt state."""
    into.mkdir(parents=True, exist_ok=True)
    found = {name: into / f"{name}_{version.split(':')[-1]}_{ARCH}.deb" for name, version in REAL.items()}
    if all(p.exists() for p in found.values()):
        return found
    apt = cache(settings) / "apt"
    for sub in ("lists/partial", "archives/partial", "etc"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    mirror = image.mirror()
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (apt / "etc" / "sources.list").write_text(f"deb [signed-by={keyring}] {mirror} {REAL_SUITE} main\n")
    options = [
        f"-oDir::Etc::SourceList={apt / 'etc' / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt}",
        "-oDir::Etc::Preferences=/dev/null",
        "-oDir::Etc::PreferencesParts=/dev/null",
        f"-oAPT::Architecture={ARCH}",
        "-oAPT::Architectures::=",
        "-oAcquire::Languages=none",
    ]
    hint = f"the lab repository takes {', '.join(REAL)} from {mirror} {REAL_SUITE}: check that the mirror has them"
    run(["apt-get", *options, "update"], what=f"apt-get update ({mirror} {REAL_SUITE})", timeout=300, hint=hint)
    specs = [f"{name}={version}" for name, version in REAL.items()]
    result = subprocess.run(
        ["apt-get", *options, "download", *specs], cwd=into, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise LabSetupFailed(f"could not download {' '.join(specs)}: {result.stderr.strip()[-300:]}", hint=hint)
    missing = [str(p) for p in found.values() if not p.exists()]
    if missing:
        raise LabSetupFailed(f"apt-get download left no {', '.join(missing)}", hint=hint)
    return found


def _repack(
    source: Path,
    dest: Path,
    work: Path,
    *,
    package: str,
    version: str,
    fields: dict[str, str],
    description: str,
    move: tuple[str, str] | None = None,
) -> None:
    run(["dpkg-deb", "-R", str(source), str(work)], what=f"unpacking {source.name}")
    control = parse_control((work / "DEBIAN" / "control").read_text(encoding="utf-8"))
    control.update({"Package": package, "Version": version, **fields})
    control.pop("Source", None)
    control.pop("Built-Using", None)
    control.pop("Static-Built-Using", None)
    control["Description"] = description
    if move:
        old, new = work / move[0], work / move[1]
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        (work / "DEBIAN" / "md5sums").unlink(missing_ok=True)
    (work / "DEBIAN" / "control").write_text(format_control(control), encoding="utf-8")
    build_deb(work, dest)


def parse_control(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def format_control(fields: dict[str, str]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def build_deb(tree: Path, dest: Path) -> Path:
    """`dpkg-deb --build` with fixed owners and mtimes, so the same tree gives the same bytes."""
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            os.utime(path, (EPOCH, EPOCH))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(tmp)],
        what=f"building {dest.name}",
        env={"SOURCE_DATE_EPOCH": str(EPOCH)},
    )
    tmp.replace(dest)
    return dest


# --- the repositories -------------------------------------------------------------------------------


def root(lab: Lab) -> Path:
    return lab.dir / "repo"


def _gnupg(lab: Lab) -> Path:
    return lab.dir / "repo-gnupg"


def make_key(lab: Lab) -> str:
    """The lab's signing key (made once per lab); returns its fingerprint. Nothing secret leaves GNUPGHOME."""
    home = _gnupg(lab)
    home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o700)
    with gnupg_env(lab) as env:
        listed = run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], check=False, env=env)
        if "fpr:" not in listed.stdout:
            run(
                [
                    "gpg",
                    "--batch",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                    "--quick-gen-key",
                    f"pyctl lab {lab.name} repository signing key <lab-{lab.name}@pyctl.invalid>",
                    "ed25519",
                    "sign",
                    "never",
                ],
                what="making the lab repository's signing key",
                env=env,
            )
            listed = run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env)
    return next(line.split(":")[9] for line in listed.stdout.splitlines() if line.startswith("fpr:"))


@contextlib.contextmanager
def gnupg_env(lab: Lab) -> Iterator[dict[str, str]]:
    """The environment gpg runs in for this lab: GNUPGHOME is the lab's key directory reached through a short
    path (a symbolic link in a private temporary directory), and the gpg-agent signing starts is stopped at the
    end (it would outlive the command).

    Where /run/user/<uid> is absent (root, CI, cron) gpg-agent's sockets live in GNUPGHOME itself, and a Unix
    socket's path is limited to 107 bytes: from a deep lab directory (a long $HOME or state directory) gpg
    fails with "No agent running". The link keeps the socket path short wherever the lab lives.
    """
    short = Path(tempfile.mkdtemp(prefix="pyctl-gpg-"))  # 0700, owned by us
    link = short / "h"
    link.symlink_to(_gnupg(lab))
    env = {"GNUPGHOME": str(link)}
    try:
        yield env
    finally:
        run(["gpgconf", "--kill", "gpg-agent"], check=False, env=env)
        shutil.rmtree(short, ignore_errors=True)


def _gpg(lab: Lab, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if env is None:
        with gnupg_env(lab) as own:
            return _gpg(lab, *args, env=own)
    return run(["gpg", "--batch", "--yes", *args], what="signing the lab repository", env=env)


def write_repositories(lab: Lab, debs: list[Path]) -> None:
    """Lay out, index and sign the three repositories with `debs` (hard-linked in); the keys beside them."""
    top = root(lab)
    public = _gpg(lab, "--armor", "--export").stdout
    layout = {
        "k8s": top / K8S_PATH,
        "docker": top / DOCKER_PATH / "debian" / "pool" / "stable",
        "nvidia": top / NVIDIA_PATH / "stable" / "deb" / ARCH,
    }
    for directory in layout.values():
        directory.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        name = deb.name.split("_")[0]
        kind = "docker" if name in DOCKER_PACKAGES else "nvidia" if name in NVIDIA_PACKAGES else "k8s"
        target = layout[kind] / deb.name
        if not target.exists():
            try:
                os.link(deb, target)  # the cache and the labs share a file system: no copy per lab
            except OSError:
                shutil.copyfile(deb, target)
    # pkgs.k8s.io and NVIDIA: flat repositories (suite "/"), Packages and Release beside the .debs.
    _flat(lab, layout["k8s"], origin=f"obs://build.opensuse.org/isv:kubernetes:core:stable:v{K8S_MINOR}/deb")
    _flat(lab, layout["nvidia"], origin="https://nvidia.github.io/libnvidia-container")
    (layout["k8s"] / "Release.key").write_text(public, encoding="utf-8")
    (top / NVIDIA_PATH / "gpgkey").write_text(public, encoding="utf-8")
    # Docker: one pool, a dists/<codename>/stable/binary-amd64 index per Debian release the lab runs.
    debian = top / DOCKER_PATH / "debian"
    packages = _scan(debian, "pool/stable")
    for codename in CODENAMES:
        dist = debian / "dists" / codename
        index = dist / "stable" / f"binary-{ARCH}" / "Packages"
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(packages, encoding="utf-8")
        _release(lab, dist, ["stable/binary-amd64/Packages"], suite=codename, components="stable", origin="Docker")
    (debian / "gpg").write_text(public, encoding="utf-8")


def _scan(directory: Path, subdir: str) -> str:
    result = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", subdir, "/dev/null"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise LabSetupFailed(f"dpkg-scanpackages failed in {directory}: {result.stderr.strip()[-300:]}")
    return result.stdout


def _flat(lab: Lab, directory: Path, origin: str) -> None:
    (directory / "Packages").write_text(_scan(directory, "."), encoding="utf-8")
    _release(lab, directory, ["Packages"], suite=None, components=None, origin=origin)


def _release(
    lab: Lab, directory: Path, indexes: list[str], *, suite: str | None, components: str | None, origin: str
) -> None:
    lines = [f"Origin: {origin}", "Label: pyctl lab repository", f"Date: {formatdate(usegmt=True)}"]
    if suite:
        lines += [f"Suite: {suite}", f"Codename: {suite}", f"Components: {components}"]
    lines.append(f"Architectures: {ARCH}")
    lines.append("SHA256:")
    for index in indexes:
        data = (directory / index).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {index}")
    release = directory / "Release"
    release.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _gpg(lab, "--clearsign", "-o", str(directory / "InRelease"), str(release))
    _gpg(lab, "--armor", "--detach-sign", "-o", str(directory / "Release.gpg"), str(release))


def serve(lab: Lab) -> str:
    """Start the HTTP server on the lab's gateway, inside its namespace; returns the base URL."""
    spawn(
        [
            "nsenter",
            f"--net={ns_path(lab.namespace)}",
            "python3",
            "-m",
            "http.server",
            str(PORT),
            "--bind",
            lab.gateway,
            "--directory",
            str(root(lab)),
        ],
        log=lab.dir / "repo.log",
        pidfile=lab.dir / "repo.pid",
    )
    deadline = time.monotonic() + 15
    while not _listening_in(lab, PORT):
        if time.monotonic() > deadline:
            raise LabSetupFailed(
                f"the repository server of lab {lab.name} did not start", hint=f"see {lab.dir / 'repo.log'}"
            )
        time.sleep(0.05)
    return f"http://{lab.gateway}:{PORT}"


def _listening_in(lab: Lab, port: int) -> bool:
    result = run(["ip", "netns", "exec", lab.namespace, "ss", "-Hltn", f"sport = :{port}"], check=False, timeout=10)
    return bool(result.stdout.strip())


def ensure(lab: Lab, settings: Settings) -> Served:
    """Make the lab's key and repositories with the real packages, and serve them (at `pyctl lab up`)."""
    fingerprint = make_key(lab)
    try:
        real, version, note = real_packages(settings), containerd_io_version(), ""
    except LabSetupFailed as exc:
        # A mirror without sid (or without these versions): the lab still comes up, its hosts on the
        # distribution's containerd, as before the lab had its own repositories.
        real, version, note = [], None, str(exc)
        (lab.dir / "repo-note.txt").write_text(note + "\n", encoding="utf-8")
    write_repositories(lab, real)
    url = serve(lab)
    return Served(url, fingerprint, version, note)


def publish(lab: Lab, debs: list[Path]) -> None:
    """Add packages (the tests' doubles) to the lab's repositories and sign them again."""
    write_repositories(lab, debs)
