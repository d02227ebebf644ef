"""TEST DOUBLE support: what the kubeadm, kubectl and nvidia-smi doubles share on a lab host.

Each double records every call (argv, and the checks it made) in CALLS, one JSON line each, and reads
its host's settings from CONFIG (written by tests/doubles/install.py): the Kubernetes version to report,
the GPUs to list, whether nvidia is containerd's default runtime.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HOME = Path("/opt/pyctl-test-doubles")
CONFIG = Path("/etc/pyctl-test-doubles/config.json")
CALLS = Path("/var/log/pyctl-test-doubles/calls.jsonl")
STATE = Path("/var/lib/pyctl-test-doubles/cluster.json")
SERVER_UNIT = "pyctl-test-double-apiserver"
TOKEN_SHAPE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")


def config() -> dict[str, Any]:
    try:
        return json.loads(CONFIG.read_text())
    except (OSError, ValueError):
        return {}


def record(tool: str, argv: list[str], **checks: Any) -> None:
    CALLS.parent.mkdir(parents=True, exist_ok=True)
    entry = {"tool": tool, "argv": argv, "time": time.time(), "pid": os.getpid(), **checks}
    with CALLS.open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def die(tool: str, message: str, code: int = 1) -> None:
    sys.stderr.write(f"{message}\n")
    record(tool, sys.argv[1:], failed=message)
    sys.exit(code)


def refuse_tokens_on_argv(tool: str) -> None:
    """A token on a command line shows in every process listing: the doubles fail loudly if they see one."""
    for arg in sys.argv[1:]:
        if TOKEN_SHAPE.search(arg):
            die(tool, f"TEST DOUBLE: {tool} was given a bootstrap token on its command line", 99)


def server_url(endpoint: str | None = None) -> str:
    return f"http://{endpoint or config().get('api_endpoint', '127.0.0.1:6443')}"


def post(path: str, body: dict[str, Any], endpoint: str | None = None, attempts: int = 1) -> dict[str, Any]:
    data = json.dumps(body).encode()
    for attempt in range(attempts):
        try:
            request = urllib.request.Request(
                server_url(endpoint) + path, data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=20) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise RuntimeError("unreachable")
