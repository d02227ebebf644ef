set -eu
# Peers wait for node 0's rendezvous port before torchrun starts. With publishNotReadyAddresses the
# name <job>-0.<service> resolves as soon as pod 0 has an address, which is before torchrun listens
# there (and before pod 0 exists it does not resolve at all): retry both instead of dying.
if [ "${PET_NODE_RANK:-0}" != "0" ]; then
  python - <<'PY'
import os, socket, sys, time
host, port = os.environ["PET_MASTER_ADDR"], int(os.environ["PET_MASTER_PORT"])
limit = float(os.environ.get("PYCTL_MASTER_WAIT_S", "600"))
start = time.monotonic()
while True:
    try:
        socket.create_connection((host, port), timeout=5).close()
        break
    except OSError as exc:
        if time.monotonic() - start > limit:
            sys.exit(f"pyctl: node 0 ({host}:{port}) did not listen within {limit:.0f} s: {exc}")
        time.sleep(1)
print(f"pyctl: node 0 ({host}:{port}) is listening after {time.monotonic() - start:.1f} s", flush=True)
PY
fi
# c10d rendezvous (restarts on more than one node): node 0 hosts the store, decided by the completion
# index. Left to itself torchrun guesses by resolving the endpoint's name, pod 0's own headless record,
# which may not be published yet: then no pod hosts it and every node waits for nothing.
if [ "${PET_RDZV_BACKEND:-}" = "c10d" ]; then
  if [ "${PET_NODE_RANK:-0}" = "0" ]; then is_host=1; else is_host=0; fi
  export PET_RDZV_CONF="${PET_RDZV_CONF:+$PET_RDZV_CONF,}is_host=$is_host"
fi
exec "$@"
