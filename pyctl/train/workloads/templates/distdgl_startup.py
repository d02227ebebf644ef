"""The DistDGL start-up step: what every machine of a `pyctl train distdgl` job runs first.

It runs on each SSH host (copied there with the job) and in each pod of the Indexed Job (from the
job's ConfigMap), with the payload's interpreter; standard library only, Python >= 3.8:

    python distdgl_startup.py --spec job.json --payload DIR [--index I] [--own-ip IP]

`job.json` is written by pyctl (the same for every machine); the machine index comes from --index,
else $PYCTL_MACHINE_INDEX, else $JOB_COMPLETION_INDEX (Kubernetes). Steps, each logged as
`[startup] HH:MM:SS <host> machine <i>: ...`:

1. Checks: the index is in range; num_parts equals the number of machines (pods or hosts); the
   client count DGL_NUM_CLIENT = trainers x (1 + samplers) x machines equals the job's.
2. Addresses: the literal IPv4 addresses in the spec (SSH, from the inventory), or (Kubernetes) each
   peer's DNS name `<job>-<i>.<service>` resolved through the headless Service, retried while records
   appear, for at most `resolve_timeout_s` (45 s). This machine's own IP (--own-ip, the pod IP, and
   its interfaces) must be entry i; then `ip_config.txt` is written (line order = machine id =
   partition id) in the machine's run folder on the share.
3. Partition: machine 0 runs partition.py once (its cache is keyed by graph, parts, method, flags and
   dgl version), validates the result and publishes `partition.json` in the job's folder on the share;
   the other machines wait for that file (or machine 0's `partition.failed`).
4. launch.py (servers, then trainers through torchrun), as a child whose output is passed through.
   SIGTERM, SIGINT and SIGHUP are passed on to it.

Any failure prints one `PYCTL_ERROR <cause>` line (pyctl records it as the job's cause) and exits:
2 a check failed (own IP missing, num_parts mismatch, client count), 3 peers did not resolve in time,
4 another machine failed, 5 the partition step failed or did not finish in time; otherwise launch.py's
own exit code (see payloads/distdgl/README.md), 128+N when stopped by signal N.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

HOST = socket.gethostname()
EXIT_CONFIG, EXIT_RESOLVE, EXIT_PEER, EXIT_PARTITION = 2, 3, 4, 5
ERROR_PREFIX = "PYCTL_ERROR "
SIOCGIFADDR = 0x8915


class StartupError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_print_lock = threading.Lock()
_state: dict = {"machine": "?", "child": None, "signal": None}


def emit(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line.rstrip("\n") + "\n")
        sys.stdout.flush()


def log(message: str) -> None:
    emit(f"[startup] {time.strftime('%H:%M:%S')} {HOST} machine {_state['machine']}: {message}")


def _on_signal(signum: int, _frame: object) -> None:
    _state["signal"] = signum
    child = _state["child"]
    if child is not None and child.poll() is None:
        with contextlib.suppress(OSError):
            child.send_signal(signum)


def check_stop() -> None:
    if _state["signal"] is not None and _state["child"] is None:
        raise Stopped(_state["signal"])


def sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check_stop()
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    check_stop()


# --- 1. checks --------------------------------------------------------------------------------------


def machine_index(given: int | None) -> int:
    if given is not None:
        return given
    for name in ("PYCTL_MACHINE_INDEX", "JOB_COMPLETION_INDEX"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    raise StartupError("no machine index: give --index, or set PYCTL_MACHINE_INDEX or JOB_COMPLETION_INDEX", 2)


def machine_count(spec: dict) -> int:
    """How many machines run: the addresses or peer names the job was given (SSH hosts, or the Job's pods)."""
    listed = spec.get("addresses") or spec.get("peer_names") or []
    pods = os.environ.get("PYCTL_MACHINES")
    if pods is not None and pods.strip().isdigit() and int(pods) != len(listed):
        raise StartupError(
            f"the Job runs {int(pods)} pod(s) (completions) but the job lists {len(listed)} machine(s); "
            "render the manifests again instead of editing them",
            EXIT_CONFIG,
        )
    return len(listed)


def check_spec(spec: dict, index: int) -> int:
    machines = machine_count(spec)
    if machines < 1:
        raise StartupError("the job lists no machines", EXIT_CONFIG)
    if not 0 <= index < machines:
        raise StartupError(f"machine index {index} is outside the job's machines 0..{machines - 1}", EXIT_CONFIG)
    parts = int(spec["num_parts"])
    if parts != machines:
        raise StartupError(
            f"num_parts mismatch: the graph is cut into {parts} partition(s) but the job runs {machines} "
            "machine(s); DistDGL needs one partition per machine",
            EXIT_CONFIG,
        )
    trainers, samplers = int(spec["num_trainers"]), int(spec["num_samplers"])
    expected = trainers * (1 + samplers) * machines
    if int(spec["num_clients"]) != expected:
        raise StartupError(
            f"wrong client count: the job expects DGL_NUM_CLIENT={spec['num_clients']} but trainers x "
            f"(1 + samplers) x machines = {trainers} x (1 + {samplers}) x {machines} = {expected}; the "
            "servers would wait for clients that never come",
            EXIT_CONFIG,
        )
    return machines


# --- 2. addresses -----------------------------------------------------------------------------------


def literal_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def resolve_peers(names: list[str], timeout: float) -> list[str]:
    """Each name's IPv4 address, retrying (every second) while records are missing, for at most `timeout` s."""
    started = time.monotonic()
    found: dict[str, str] = {}
    last_report = started - 10  # say so at the first miss, then every 10 s
    while True:
        errors = {}
        for name in names:
            if name in found:
                continue
            try:
                infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
            except OSError as exc:
                errors[name] = exc.strerror or str(exc)
                continue
            addresses = sorted({info[4][0] for info in infos})
            if len(addresses) != 1:
                errors[name] = f"resolves to {len(addresses)} addresses ({', '.join(addresses)})"
                continue
            found[name] = addresses[0]
        if not errors:
            log(
                f"resolved {len(names)} peer(s) after {time.monotonic() - started:.1f} s: "
                + ", ".join(f"{n}={found[n]}" for n in names)
            )
            return [found[n] for n in names]
        waited = time.monotonic() - started
        if waited >= timeout:
            missing = "; ".join(f"{n}: {why}" for n, why in errors.items())
            raise StartupError(
                f"peer DNS: {len(errors)} of {len(names)} machine name(s) did not resolve within {timeout:g} s "
                f"({missing}); is the headless Service there, and did every pod of the Job start?",
                EXIT_RESOLVE,
            )
        if time.monotonic() - last_report >= 10:
            log(f"waiting for DNS of {', '.join(errors)} ({waited:.0f} s of {timeout:g} s)")
            last_report = time.monotonic()
        sleep(1.0)


def interface_addresses() -> dict[str, str]:
    """The primary IPv4 address of every local interface -> its name (what DGL and gloo see)."""
    found = {}
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                raw = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
        found[socket.inet_ntoa(raw[20:24])] = name
    return found


def check_addresses(addresses: list[str], index: int, own_ip: str | None, source: str) -> None:
    for i, address in enumerate(addresses):
        if not literal_ipv4(address):
            raise StartupError(
                f"machine {i}: {address!r} is not a literal IPv4 address; DistDGL's ip_config takes IPv4 only",
                EXIT_CONFIG,
            )
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise StartupError(
            f"two machines have the same address {', '.join(repeated)} ({source}); a stale DNS record?", EXIT_CONFIG
        )
    mine = addresses[index]
    local = interface_addresses()
    if own_ip and own_ip != mine:
        where = f" (it is machine {addresses.index(own_ip)}'s)" if own_ip in addresses else ""
        raise StartupError(
            f"own IP missing: this machine's IP is {own_ip} but machine {index} is {mine} in ip_config "
            f"({source}){where}; DistDGL would run it as another machine",
            EXIT_CONFIG,
        )
    if mine not in local:
        listing = ", ".join(f"{ip} ({name})" for ip, name in sorted(local.items())) or "none"
        raise StartupError(
            f"own IP missing: machine {index} is {mine} in ip_config ({source}) but this host ({HOST}) has no "
            f"interface with that address (it has {listing}); DistDGL would silently run it as another machine",
            EXIT_CONFIG,
        )


def write_ip_config(run_dir: Path, addresses: list[str], port: int) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "ip_config.txt"
    tmp = run_dir / f".ip_config.{os.getpid()}.tmp"
    tmp.write_text("".join(f"{a} {port}\n" for a in addresses))
    tmp.replace(path)
    log(f"wrote {path}: {', '.join(addresses)} port {port}")
    return path


# --- 3. partition -----------------------------------------------------------------------------------


def publish(path: Path, body: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body) + "\n")
    tmp.replace(path)


def run_child(argv: list[str], prefix: str, stdout_lines: list[str] | None = None) -> int:
    """Run argv, passing its stderr (and its stdout, unless collected) through with `prefix`."""
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise StartupError(f"cannot run {argv[0]}: {exc.strerror or exc}", EXIT_CONFIG) from exc
    _state["child"] = child

    def pump(stream, collect: list[str] | None) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if collect is not None:
                collect.append(line)
            else:
                emit(f"{prefix}{line}")
        stream.close()

    threads = [
        threading.Thread(target=pump, args=(child.stdout, stdout_lines), daemon=True),
        threading.Thread(target=pump, args=(child.stderr, None), daemon=True),
    ]
    for thread in threads:
        thread.start()
    code = child.wait()
    for thread in threads:
        thread.join(timeout=10)
    _state["child"] = None
    if _state["signal"] is not None:
        raise Stopped(_state["signal"])
    return code


def partition(spec: dict, payload: Path, share: Path, python: str) -> dict:
    """Machine 0: run partition.py (cached) and publish its result for the others."""
    part = spec["partition"]
    argv = [
        python,
        str(payload / "partition.py"),
        *part["args"],
        "--num-parts",
        str(spec["num_parts"]),
        "--output",
        part["output"],
    ]
    log(f"partitioning: {' '.join(argv[1:])}")
    lines: list[str] = []
    started = time.monotonic()
    code = run_child(argv, "[partition] ", lines)
    failed = share / "partition.failed"
    if code != 0:
        cause = f"partition.py exited with code {code}"
        raise_partition(failed, cause, lines)
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise_partition(failed, "partition.py printed no result line", lines)
    sys.path.insert(0, str(payload))
    try:
        from partconfig import PartitionConfigError, validate_partition_config

        info = validate_partition_config(result["part_config"], expect_parts=int(spec["num_parts"]))
    except PartitionConfigError as exc:
        raise_partition(failed, f"invalid partition: {exc}", [])
    state = "cached" if result.get("cached") else f"made in {time.monotonic() - started:.1f} s"
    log(
        f"partition {state}: {result['part_config']} ({info.num_parts} parts, {info.num_nodes} nodes, "
        f"{info.num_edges} edges, {info.part_method})"
    )
    publish(share / "partition.json", {**result, "by": HOST})
    return result


def raise_partition(failed: Path, cause: str, lines: list[str]) -> NoReturn:
    detail = next((ln for ln in reversed(lines) if ln.strip()), "")
    message = f"the partition step failed: {cause}" + (f" ({detail})" if detail else "")
    with contextlib.suppress(OSError):
        publish(failed, {"cause": message, "by": HOST})
    raise StartupError(message, EXIT_PARTITION)


def wait_for_partition(share: Path, timeout: float) -> dict:
    """Machines > 0: wait for machine 0's partition.json (or its partition.failed)."""
    started = time.monotonic()
    last_report = started
    done, failed = share / "partition.json", share / "partition.failed"
    log(f"waiting for machine 0's partition ({done})")
    while True:
        for path, failure in ((failed, True), (done, False)):
            try:
                body = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if failure:
                raise StartupError(f"another machine failed: machine 0: {body.get('cause')}", EXIT_PEER)
            log(f"machine 0's partition is ready after {time.monotonic() - started:.1f} s: {body['part_config']}")
            return body
        waited = time.monotonic() - started
        if waited >= timeout:
            raise StartupError(
                f"machine 0's partition did not appear in {share} within {timeout:g} s; is that folder on the "
                "share every machine mounts?",
                EXIT_PARTITION,
            )
        if time.monotonic() - last_report >= 30:
            log(f"still waiting for machine 0's partition ({waited:.0f} s)")
            last_report = time.monotonic()
        sleep(1.0)


# --- 4. launch --------------------------------------------------------------------------------------


def launch(  # noqa: PLR0917 - one call site, each argument named there
    spec: dict, payload: Path, python: str, index: int, addresses: list[str], run_dir: Path, part: dict, trainer: Path
) -> int:
    argv = [
        python,
        str(payload / "launch.py"),
        "--machine-index",
        str(index),
        "--machines",
        ",".join(addresses),
        "--part-config",
        part["part_config"],
        "--num-servers",
        str(spec["num_servers"]),
        "--num-trainers",
        str(spec["num_trainers"]),
        "--num-samplers",
        str(spec["num_samplers"]),
        "--num-clients",
        str(spec["num_clients"]),
        "--port",
        str(spec["port"]),
        "--run-dir",
        str(run_dir),
        *spec.get("launch_args", []),
        "--",
        str(trainer),
        *spec.get("train_args", []),
    ]
    log(f"starting launch.py: {' '.join(argv[1:])}")
    causes: list[str] = []

    def watch(line: str) -> None:
        for marker in ("FAILED local checks: ", "FAILED: "):
            if line.startswith("[launch] ") and marker in line and not causes:
                causes.append(line.split(marker, 1)[1])

    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise StartupError(f"cannot run {argv[0]}: {exc.strerror or exc}", EXIT_CONFIG) from exc
    _state["child"] = child
    if _state["signal"] is not None:  # a signal that came in while the child was being created
        with contextlib.suppress(OSError):
            child.send_signal(_state["signal"])
    for raw in iter(child.stdout.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        emit(line)
        watch(line)
    code = child.wait()
    if code != 0 and _state["signal"] is None:  # stopped by a signal: the cause is elsewhere (or a cancel)
        cause = causes[0] if causes else f"launch.py exited with code {code}"
        emit(f"{ERROR_PREFIX}machine {index} ({HOST}): {cause}")
    return code if code >= 0 else 128 - code


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pyctl's DistDGL start-up step (see the module docstring)")
    parser.add_argument("--spec", type=Path, required=True, help="the job's job.json")
    parser.add_argument("--payload", type=Path, required=True, help="folder with partition.py, launch.py, train.py")
    parser.add_argument("--index", type=int, help="machine index (default $PYCTL_MACHINE_INDEX, $JOB_COMPLETION_INDEX)")
    parser.add_argument("--own-ip", help="this machine's IP as the platform sees it (the pod IP)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    spec = json.loads(args.spec.read_text())
    index = machine_index(args.index)
    _state["machine"] = str(index)
    log(f"start-up of job {spec['job']} (pid {os.getpid()})")
    machines = check_spec(spec, index)
    if spec.get("addresses"):
        addresses, source = list(spec["addresses"]), "from the inventory"
    else:
        addresses = resolve_peers(list(spec["peer_names"]), float(spec.get("resolve_timeout_s", 45)))
        source = "resolved from " + ", ".join(spec["peer_names"])
    check_addresses(addresses, index, args.own_ip, source)
    log(
        f"machine {index} of {machines} at {addresses[index]}; DGL_NUM_CLIENT={spec['num_clients']} "
        f"({spec['num_trainers']} trainer(s) x (1 + {spec['num_samplers']} sampler(s)) x {machines} machine(s))"
    )
    share = Path(spec["share"])
    run_dir = share / f"machine-{index}"
    write_ip_config(run_dir, addresses, int(spec["port"]))
    python = spec.get("python") or sys.executable
    if index == 0:
        part = partition(spec, args.payload, share, python)
    else:
        part = wait_for_partition(share, float(spec["partition"].get("timeout_s", 3600)))
    check_stop()
    # The trainer: the user's --script (beside job.json: in the job's folder, or the pod's ConfigMap), or ours.
    trainer = args.spec.parent / spec["script"] if spec.get("script") else args.payload / "train.py"
    return launch(spec, args.payload, python, index, addresses, run_dir, part, trainer)


def main(argv: list[str] | None = None) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except StartupError as exc:
        log(f"FAILED: {exc}")
        emit(f"{ERROR_PREFIX}machine {_state['machine']} ({HOST}): {exc}")
        return exc.code
    except Stopped as exc:
        log(f"received {exc}: stopping")
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
