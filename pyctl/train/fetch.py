"""`pyctl train fetch JOB DIR`: a job's final checkpoint and metrics, copied and verified.

The DDP payload's rank 0 writes, after each epoch (payloads/ddp/checkpoint.py): `checkpoint.pt`
atomically, then `checkpoint.pt.sha256` (sha256sum format) the same way, and appends `train.jsonl`
(one JSON object per epoch, then the summary). They live in `--checkpoint-dir` when the job was given
one, else in the job's folder on rank 0's host (SSH) or in `<claim mount>/pyctl/jobs/<job>` on the
share (Kubernetes).

- SSH: SFTP from node 0's host, with the job's recorded login (a shared --checkpoint-dir is read there
  too: node 0 sees the share).
- Kubernetes: a short pod in the job's namespace, with the job's image and claim, prints each file as
  one JSON line (base64) to its log; pyctl reads the log and deletes the pod.

The checkpoint is verified against its sidecar before anything is written to DIR. A job still running
may replace the checkpoint between the two reads: a mismatch then is read again (3 times), a mismatch
on a finished job is an error. Nothing here prints; `fetch` returns what it wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyctl.errors import ExitCode, PyctlError, UsageError
from pyctl.train.jobs import JobRecord

CHECKPOINT = "checkpoint.pt"
CHECKSUM = f"{CHECKPOINT}.sha256"
METRICS = "train.jsonl"
NAMES = (CHECKPOINT, CHECKSUM, METRICS)
ATTEMPTS = 3
POD_TIMEOUT_S = 300.0

# The fetch pod's program (python3 in the job's image): one JSON line per file, base64 data or missing.
POD_SCRIPT = (
    "import base64, json, os, sys\n"
    "folder = sys.argv[1]\n"
    "for name in sys.argv[2:]:\n"
    "    try:\n"
    "        with open(os.path.join(folder, name), 'rb') as stream:\n"
    "            data = stream.read()\n"
    "    except FileNotFoundError:\n"
    "        print(json.dumps({'name': name, 'missing': True}), flush=True)\n"
    "        continue\n"
    "    print(json.dumps({'name': name, 'data': base64.b64encode(data).decode()}), flush=True)\n"
)


class FetchError(PyctlError):
    """The files were found but cannot be trusted (a checksum that does not match)."""

    exit_code = ExitCode.HOST_FAILED


@dataclass(frozen=True)
class Fetched:
    where: str  # host:folder or namespace/claim:folder, for messages
    files: dict[str, Path]  # name -> the local copy
    sha256: str


Reader = Callable[[], dict[str, bytes | None]]  # name -> content, None when the file is absent


def results_dir(record: JobRecord) -> str:
    """Where the job's payload keeps its checkpoint and metrics (on node 0's host, or on the share)."""
    if record.workload != "ddp":
        raise UsageError(
            f"job {record.id} is a {record.workload} job: pyctl fetches the DDP payload's checkpoint only",
            hint="copy what your trainer wrote from the shared folder it wrote to",
        )
    if record.options.get("script"):
        raise UsageError(
            f"job {record.id} ran your --script ({record.options['script']}): pyctl does not know where it "
            "keeps its results",
            hint="copy them from where your script writes them",
        )
    if record.options.get("checkpoint_dir"):
        return str(record.options["checkpoint_dir"])
    if record.backend == "k8s":
        mount = str(record.k8s.claim_mount or "/mnt/pyctl-shared").rstrip("/")
        return f"{mount}/pyctl/jobs/{record.id}"
    node0 = record.nodes[0].name
    directory = record.ssh.job_dirs.get(node0)
    if not directory:
        raise UsageError(
            f"job {record.id} never started on {node0}: there is no folder to fetch from",
            hint=f"pyctl train logs {record.id} shows why",
        )
    return str(directory)


def verify(files: dict[str, bytes | None], record: JobRecord, where: str) -> str:
    """The checkpoint's sha256 when its sidecar agrees; UsageError when there is none yet."""
    data, sidecar = files.get(CHECKPOINT), files.get(CHECKSUM)
    if data is None:
        raise UsageError(
            f"job {record.id} has no checkpoint yet in {where} (the payload writes one after each epoch)",
            hint=f"pyctl train status {record.id}; fetch again once an epoch has finished",
        )
    if sidecar is None:
        raise UsageError(
            f"{where}/{CHECKPOINT} has no {CHECKSUM} beside it, so it cannot be verified",
            hint="it was written by an older payload; copy it by hand if you trust it",
        )
    fields = sidecar.decode("utf-8", errors="replace").split()
    expected = fields[0].lower() if fields else ""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise FetchError(
            f"{where}/{CHECKPOINT} does not match its sha256 (read {actual[:12]}..., "
            f"{CHECKSUM} says {expected[:12] or 'nothing'}...): the checkpoint is damaged",
            hint="nothing was written; fetch again, or check the disk it lives on",
        )
    return actual


def fetch(record: JobRecord, dest: Path, read: Reader, where: str) -> Fetched:
    """Read the files (again while a running job replaces them), verify, then write them into dest."""
    for attempt in range(ATTEMPTS):
        files = read()
        try:
            digest = verify(files, record, where)
            break
        except FetchError:
            if record.final or attempt == ATTEMPTS - 1:
                raise
            time.sleep(1.0)  # the payload renames the sidecar right after the checkpoint
    dest.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in NAMES:
        content = files.get(name)
        if content is not None:
            written[name] = _write_atomic(dest / name, content)
    return Fetched(where=where, files=written, sha256=digest)


def _write_atomic(path: Path, content: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(content)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- SSH: node 0's host ------------------------------------------------------------------------------


def ssh_reader(record: JobRecord, directory: str) -> tuple[Reader, Callable[[], None], str]:
    """A reader over SFTP to node 0's host (connected now: an unreachable host fails here)."""
    from pyctl import remote

    targets = {t.name: t for t in record.ssh.targets}
    node0 = record.nodes[0].name
    if node0 not in targets:
        raise UsageError(f"job {record.id}: no SSH login recorded for {node0}")
    conn = remote.connect(targets[node0])

    def read() -> dict[str, bytes | None]:
        sftp = conn.sftp()
        files: dict[str, bytes | None] = {}
        for name in NAMES:
            try:
                with sftp.open(f"{directory}/{name}", "rb") as stream:
                    files[name] = stream.read()
            except FileNotFoundError:
                files[name] = None
            except OSError as exc:
                raise UsageError(f"host {node0}: cannot read {directory}/{name}: {exc}") from exc
        return files

    return read, lambda: remote.close(conn), f"{node0}:{directory}"


# --- Kubernetes: a pod on the claim ------------------------------------------------------------------


def pod_manifest(record: JobRecord, directory: str, name: str) -> dict[str, Any]:
    """The fetch pod: the job's image and claim, python3 printing the files, nothing else."""
    mount = str(record.k8s.claim_mount or "/mnt/pyctl-shared")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": record.k8s.namespace,
            "labels": {"app.kubernetes.io/managed-by": "pyctl", "pyctl.io/fetch-of": record.id},
        },
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "fetch",
                    "image": str(record.k8s.image or "pyctl-ddp:cpu"),
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", POD_SCRIPT, directory, *NAMES],
                    "volumeMounts": [{"name": "shared", "mountPath": mount, "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": "shared",
                    "persistentVolumeClaim": {"claimName": str(record.k8s.claim or "pyctl-shared")},
                }
            ],
        },
    }


def parse_pod_log(text: str) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        files[item["name"]] = None if item.get("missing") else base64.b64decode(item["data"])
    missing = [name for name in NAMES if name not in files]
    if missing:
        raise UsageError(f"the fetch pod's log lacks {', '.join(missing)}: it did not finish")
    return files


def k8s_reader(record: JobRecord, directory: str) -> tuple[Reader, Callable[[], None], str]:
    from pyctl.train.backends import kubeclient

    client = kubeclient.Client(Path(record.k8s.kubeconfig))
    namespace = record.k8s.namespace

    def read() -> dict[str, bytes | None]:
        name = f"{record.id[:50]}-fetch-{os.urandom(3).hex()}"
        log = client.run_pod(pod_manifest(record, directory, name), timeout=POD_TIMEOUT_S)
        return parse_pod_log(log)

    claim = record.k8s.claim or "pyctl-shared"
    return read, lambda: None, f"{namespace}/{claim}:{directory}"


def fetch_job(record: JobRecord, dest: Path) -> Fetched:
    directory = results_dir(record)
    opener = k8s_reader if record.backend == "k8s" else ssh_reader
    read, close, where = opener(record, directory)
    try:
        return fetch(record, dest, read, where)
    finally:
        close()
