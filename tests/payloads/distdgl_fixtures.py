"""Test infrastructure for the DistDGL payload (not product code).

- ``distdgl_python``: the pinned interpreter (PYCTL_DISTDGL_PYTHON, default <repo>/.venv-distdgl);
  tests that need it skip with the reason when it is absent (fail under CI, or when it lacks torch or dgl).
- ``NetnsMachines``: N fake "machines" for a multi-machine DistDGL run on one host. Each machine is a
  network namespace with one veth into a bridge (in its own namespace), an address in 10.231.0.0/24
  that exists only inside these namespaces, and, per process started, its own mount + IPC + UTS
  namespace with a private tmpfs on /dev/shm: DistDGL servers and trainers of one machine meet in
  /dev/shm, and two machines sharing it overwrite each other's partitions (see FIELD_NOTES).
  Teardown kills every process left in the namespaces and deletes them, also after a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = REPO / "payloads" / "distdgl"
SUBNET = "10.231.0"


def load_payload_module(name: str):
    """Import payloads/distdgl/<name>.py (standard-library modules only: partconfig, launch)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PAYLOAD / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # launch.py imports partconfig by this name
    spec.loader.exec_module(module)
    return module


def distdgl_interpreter() -> Path | None:
    path = Path(os.environ.get("PYCTL_DISTDGL_PYTHON", REPO / ".venv-distdgl" / "bin" / "python"))
    return path if path.exists() else None


MISSING_DISTDGL = (
    "the DistDGL environment is missing: run scripts/setup --dev (or python3 -m venv .venv-distdgl && "
    ".venv-distdgl/bin/pip install -r payloads/distdgl/requirements.txt), or point PYCTL_DISTDGL_PYTHON at its python"
)


def require_distdgl_python() -> Path:
    """The DistDGL interpreter, checked once: skip when it is absent (fail where CI is set: CI must run these
    tests), and fail with one line when it is there without torch or dgl (a half-made environment)."""
    path = distdgl_interpreter()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING_DISTDGL} (CI must not skip the DistDGL tests)")
        pytest.skip(MISSING_DISTDGL)
    probe = "import importlib.metadata as m; print(m.version('torch'), m.version('dgl'))"
    result = subprocess.run([str(path), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.fail(f"the DistDGL environment {path} lacks torch or dgl ({last}): run scripts/setup --dev again")
    return path


@pytest.fixture(scope="session")
def distdgl_python() -> Path:
    return require_distdgl_python()


def require_namespaces() -> None:
    """Skip (fail under CI, see tests.conftest.require_root) unless network namespaces can be made here."""
    from tests.conftest import require_root

    require_root("needs root for network namespaces")
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs the {tool!r} tool")


def run_payload(python: Path, script: str, *args: str, timeout: float = 300, **kwargs):
    # One OpenMP thread, as launch.py gives each trainer on a 2-core host: more threads than free
    # cores make every sampling step spin (a 20000-node epoch took 7 s instead of 0.5 s here).
    env = {"OMP_NUM_THREADS": "1", **os.environ, "DGLBACKEND": "pytorch", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [str(python), str(PAYLOAD / script), *args],
        cwd=PAYLOAD,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class NetnsMachines:
    """N machines as network namespaces behind a bridge; see the module docstring."""

    def __init__(self, count: int):
        tag = uuid.uuid4().hex[:6]
        self.count = count
        self.prefix = f"pdgl{tag}"  # interface names stay under 15 characters
        self.switch = f"{self.prefix}-sw"
        self.names = [f"{self.prefix}-m{i}" for i in range(count)]
        self.ips = [f"{SUBNET}.{i + 1}" for i in range(count)]
        self.procs: list[subprocess.Popen] = []

    def up(self) -> NetnsMachines:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, ns in enumerate(self.names):
            _ip("netns", "add", ns)
            inner, outer = f"{self.prefix}h{i}", f"{self.prefix}s{i}"
            _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.ips[i]}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
        return self

    def command(self, index: int, argv: list[str], shm_size: str = "2g") -> list[str]:
        """argv run as machine ``index``: its netns, own mount/IPC/UTS namespaces, private /dev/shm."""
        script = f'mount -t tmpfs -o size={shm_size} tmpfs /dev/shm && hostname m{index} && exec "$@"'
        return [
            "ip", "netns", "exec", self.names[index],
            "unshare", "--mount", "--ipc", "--uts", "--propagation", "private",
            "sh", "-c", script, "sh", *argv,
        ]  # fmt: skip

    def start(self, index: int, argv: list[str], log: Path) -> subprocess.Popen:
        """Start argv on machine ``index`` with stdout+stderr to ``log``; the pid is argv's own."""
        handle = log.open("w")
        env = {**os.environ, "DGLBACKEND": "pytorch", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            self.command(index, argv), stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=PAYLOAD
        )
        handle.close()
        self.procs.append(proc)
        return proc

    def run(self, index: int, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.names[index], *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pids(self, index: int) -> list[int]:
        out = _ip("netns", "pids", self.names[index], check=False).stdout
        return [int(pid) for pid in out.split()]

    def listening(self, index: int, port: int) -> bool:
        out = self.run(index, ["ss", "-Htln", f"sport = :{port}"]).stdout
        return bool(out.strip())

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for _ in range(3):
            leftovers = [pid for i in range(self.count) for pid in self.pids(i)]
            for pid in leftovers:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not leftovers:
                break
            time.sleep(0.5)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for ns in [*self.names, self.switch]:
            _ip("netns", "del", ns, check=False)


def launcher_argv(
    python: Path, ips: list[str], index: int, part_config: str, *extra: str, train_args=None
) -> list[str]:
    """launch.py for machine ``index`` of ``ips``, running train.py with ``train_args``."""
    return [
        str(python), str(PAYLOAD / "launch.py"),
        "--machine-index", str(index),
        "--machines", ",".join(ips),
        "--part-config", part_config,
        *extra,
        "--", "train.py", *(TRAIN_ARGS if train_args is None else train_args),
    ]  # fmt: skip


@pytest.fixture
def netns_machines(request):
    """Two namespace "machines" (see NetnsMachines); deleted after the test, pass or fail."""
    require_namespaces()
    count = getattr(request, "param", 2)
    lab = NetnsMachines(count)
    try:
        lab.up()
    except subprocess.CalledProcessError as exc:
        lab.down()
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    try:
        yield lab
    finally:
        lab.down()


# --- the graph, split and hyper-parameters every DistDGL test shares ---------------------------------
# 4000-node, 4-class SBM (see graphs.SyntheticSpec); full-neighbour evaluation keeps the test accuracy
# steady between runs, so single-process and 2-machine results can be compared within 2 points.
GRAPH_ARGS = ["--graph", "synthetic", "--nodes", "4000", "--classes", "4", "--seed", "0"]
TRAIN_ARGS = ["--epochs", "20", "--batch-size", "256", "--fanouts", "10,10", "--eval-fanouts=-1,-1"]
SUMMARY_PREFIX = "PYCTL_SUMMARY "


def parse_summary(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith(SUMMARY_PREFIX):
            return json.loads(line[len(SUMMARY_PREFIX) :])
    return None


@pytest.fixture(scope="session")
def distdgl_partitions(distdgl_python, tmp_path_factory) -> Path:
    """The shared output directory with the test graph cut into 2 parts (METIS)."""
    out = tmp_path_factory.mktemp("distdgl-partitions")
    result = run_payload(distdgl_python, "partition.py", *GRAPH_ARGS, "--num-parts", "2", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def two_part_config(distdgl_python, distdgl_partitions) -> str:
    result = run_payload(
        distdgl_python, "partition.py", *GRAPH_ARGS, "--num-parts", "2", "--output", str(distdgl_partitions)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)["part_config"]


@pytest.fixture(scope="session")
def local_summary(distdgl_python) -> dict:
    """Single-process GraphSAGE on the whole test graph (same model, sampler, split, flags)."""
    result = run_payload(distdgl_python, "train.py", "--mode", "local", *GRAPH_ARGS, *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = parse_summary(result.stdout)
    assert summary is not None, result.stdout[-3000:]
    return summary
