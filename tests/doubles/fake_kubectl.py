#!/usr/bin/env python3
"""TEST DOUBLE for kubectl (lab control plane host only): every command line goes to the fake cluster
(fake_cluster.py), with the content of any `-f FILE`. Needs the admin kubeconfig kubeadm init wrote. Only labs whose
cluster is the plain-HTTP fake cluster use it (no lab test does any more); labs whose cluster is the HTTPS API double
(fake_apiserver.py) install Debian's real kubectl 1.36 instead (debs.build(settings, kubectl=PATH)).

Upstream contract: kubectl v1.36 against a v1.36 API server. `kubectl apply` sends fieldValidation=Strict
(the default since kubectl 1.27, KEP-2885), so the server refuses unknown fields, wrong types and missing
required fields: the fake cluster validates every applied object against the pinned Kubernetes OpenAPI
schema (openapi_strict.py) and answers with the API server's messages; admission refuses a pod whose
RuntimeClass does not exist. Exit status 1 and the server's message on stderr, as kubectl."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, "/opt/pyctl-test-doubles")
import fake_common


def main() -> int:
    argv = sys.argv[1:]
    fake_common.refuse_tokens_on_argv("kubectl")
    fake_common.record("kubectl", argv)
    if "--kubeconfig" not in argv or not Path(argv[argv.index("--kubeconfig") + 1]).is_file():
        sys.stderr.write("The connection to the server localhost:8080 was refused - did you specify the right host?\n")
        return 1
    files = {}
    if "-f" in argv:
        path = argv[argv.index("-f") + 1]
        files[path] = Path(path).read_text()
    try:
        result = fake_common.post("/kubectl", {"argv": argv, "files": files}, attempts=3)
    except OSError as exc:
        sys.stderr.write(f"The connection to the server was refused: {exc}\n")
        return 1
    if result["stdout"]:
        print(result["stdout"])
    if result["stderr"]:
        sys.stderr.write(result["stderr"] + "\n")
    return int(result["rc"])


if __name__ == "__main__":
    sys.exit(main())
