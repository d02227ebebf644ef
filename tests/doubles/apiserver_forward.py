#!/usr/bin/env python3
"""TEST DOUBLE support: the control plane host's port 6443, forwarded to the HTTPS Kubernetes API double.

The kubeadm double starts it on `kubeadm init` when the host's settings name an API double (`api_double`, the
address the test serves tests/doubles/fake_apiserver.py on inside the lab's network namespace), so that every
host reaches the API server where kubeadm puts it (the control plane's advertise address, port 6443) and TLS runs
end to end between the client and the double (bytes are passed through; the double's serving certificate names
this host). Its process is named kube-apiserver, as the real API server's is (what `ss -p` shows), so a re-run's
preflight knows port 6443 as the cluster's own. Upstream contract: what kubeadm 1.36's static kube-apiserver pod
gives the control plane host, the API on the InitConfiguration's localAPIEndpoint (advertiseAddress:bindPort).
Standard library only.
    apiserver_forward.py LISTEN_ADDR:PORT TARGET_ADDR:PORT
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import sys
import threading


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (sink, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def serve(listen: str, target: str) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(b"kube-apiserver"), 0, 0, 0)  # PR_SET_NAME
    host, _, port = listen.rpartition(":")
    to_host, _, to_port = target.rpartition(":")
    server = socket.create_server((host, int(port)), reuse_port=False)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection((to_host, int(to_port)), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
