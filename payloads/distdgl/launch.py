"""Per-machine DistDGL launcher: what every machine (Kubernetes pod or SSH host) runs.

    python launch.py --machine-index 0 --machines 10.0.0.1,10.0.0.2 \\
        --part-config /shared/parts/g.json --num-servers 1 --num-trainers 1 --num-samplers 0 \\
        -- train.py --epochs 10

Stages, each logged with the host name:
 1. Local checks: every machine address is a literal IPv4; this machine's address is on a local
    interface at --machine-index (and DGL, which takes the first local entry, agrees); the partition
    config is valid and has one part per machine; ports are free; DGL_NUM_CLIENT arithmetic.
 2. Preflight over a control connection to machine 0 (--control-port): every launcher sends its
    settings, machine 0 compares them (client count, ports, partition, command) and answers. A peer
    that does not check in within --peer-timeout fails the job, naming it.
 3. Servers (DGL_ROLE=server, DGL_SERVER_ID = machine * num_servers + s), then a barrier until every
    machine's servers listen, then the trainers through torchrun (DGL_ROLE=client).
 4. Supervision: a failed child, a peer's failure, SIGTERM or SIGINT stop every child process group
    (servers included) and every process below them here; finished trainers end the job. Each child
    runs under proctree.py's guard, which stops that child's tree if the launcher is killed.

Who stops the other machines: without a supervisor (Kubernetes pods, a launch by hand) the launchers
do, through machine 0's control connection: a failure here tells the others, and a peer's failure or
lost connection stops this machine. Under pyctl's SSH supervisor (--supervised, PYCTL_SUPERVISED=1) the
supervisor alone stops the whole job: a failure here stops only this machine's children, and a peer's
failure is left to the supervisor. The process tree is read and stopped by proctree.py (beside this
file), the same code pyctl's SSH host wrapper uses.

Children's output is passed through prefixed ``[server N]`` / ``[trainer R]`` (R: global rank).
The trainers' ``PYCTL_SUMMARY {...}`` line is repeated unprefixed as the last line on stdout.
Exit codes: 0 done, 1 a local server or trainer failed, 2 bad flags or a failed local check,
3 preflight failed (settings differ between machines, or a peer is unreachable), 4 another machine
failed or was cancelled (never with --supervised), 128+N stopped by signal N (129 SIGHUP, 130 SIGINT,
143 SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import proctree
from partconfig import PartitionConfigError, validate_partition_config

EXIT_OK, EXIT_CHILD, EXIT_CONFIG, EXIT_PREFLIGHT, EXIT_PEER = 0, 1, 2, 3, 4
SUMMARY_PREFIX = "PYCTL_SUMMARY "
HOST = socket.gethostname()


class LaunchError(Exception):
    """A failure with its exit code; the message names the cause in one sentence."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Stopped(Exception):
    """A signal asked the launcher to stop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- output -----------------------------------------------------------------------------------------

_print_lock = threading.Lock()


def emit(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
        sys.stdout.flush()


class Log:
    machine = "?"

    @classmethod
    def info(cls, message: str) -> None:
        emit(f"[launch] {time.strftime('%H:%M:%S')} {HOST} machine {cls.machine}: {message}")


# --- flags --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run this machine's DistDGL servers and trainers and supervise them.",
        usage="launch.py [options] -- SCRIPT.py [script args...]",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env_index = os.environ.get("PYCTL_MACHINE_INDEX", os.environ.get("JOB_COMPLETION_INDEX"))
    parser.add_argument(
        "--machine-index",
        type=int,
        default=None if env_index is None else int(env_index),
        help="this machine's id = its partition id (default $PYCTL_MACHINE_INDEX or $JOB_COMPLETION_INDEX)",
    )
    machines = parser.add_mutually_exclusive_group(required=True)
    machines.add_argument("--machines", help="comma-separated literal IPv4 addresses, machine 0 first")
    machines.add_argument("--machines-file", type=Path, help="one IPv4 address per line, machine 0 first")
    parser.add_argument("--part-config", type=Path, required=True, help="partition config <graph>.json")
    parser.add_argument("--num-servers", type=int, default=1, help="DGL servers per machine")
    parser.add_argument("--num-trainers", type=int, default=1, help="trainer processes per machine")
    parser.add_argument("--num-samplers", type=int, default=0, help="sampler processes per trainer")
    parser.add_argument(
        "--num-clients",
        type=int,
        help="expected DGL_NUM_CLIENT; checked against trainers x (1 + samplers) x machines",
    )
    parser.add_argument("--port", type=int, default=30050, help="first DGL server port (server s: port+s)")
    parser.add_argument("--torch-port", type=int, default=29500, help="torchrun master port on machine 0")
    parser.add_argument("--control-port", type=int, default=30049, help="launcher preflight port on machine 0")
    parser.add_argument("--run-dir", type=Path, help="ip_config.txt and torchrun logs (default: a new temp dir)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for servers and trainers")
    parser.add_argument("--graph-format", default="csc", help="DGL_GRAPH_FORMAT of the servers")
    parser.add_argument("--server-threads", type=int, default=1, help="OMP_NUM_THREADS of each server")
    parser.add_argument("--trainer-threads", type=int, help="OMP_NUM_THREADS of each trainer")
    parser.add_argument(
        "--max-try-times",
        type=int,
        default=15,
        help="DGL_DIST_MAX_TRY_TIMES (DGL default 1024 x 3 s = 51 min; 15 fails in 45 s)",
    )
    parser.add_argument("--peer-timeout", type=float, default=45.0, help="seconds for all launchers to meet")
    parser.add_argument(
        "--server-start-timeout", type=float, default=600.0, help="seconds for the servers to load and listen"
    )
    parser.add_argument(
        "--server-exit-timeout", type=float, default=30.0, help="seconds servers get to exit after training"
    )
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument(
        "--supervised",
        action="store_true",
        default=os.environ.get("PYCTL_SUPERVISED") == "1",
        help="an outer supervisor stops the whole job (pyctl's SSH backend sets PYCTL_SUPERVISED=1): a "
        "failure here stops only this machine's children, another machine's failure is left to it",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT.py [args]")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the training script after --, e.g. -- train.py --epochs 10")
    if args.machine_index is None:
        parser.error("--machine-index is required (or set PYCTL_MACHINE_INDEX / JOB_COMPLETION_INDEX)")
    for name in ("num_servers", "num_trainers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_samplers < 0:
        parser.error("--num-samplers must be 0 or more")
    if args.trainer_threads is None:
        args.trainer_threads = max(1, (os.cpu_count() or 2) // 2 // args.num_trainers)
    return args


# --- local checks -------------------------------------------------------------------------------------


def read_machines(args: argparse.Namespace) -> list[str]:
    if args.machines is not None:
        entries = [item.strip() for item in args.machines.split(",")]
    else:
        try:
            text = args.machines_file.read_text()
        except OSError as exc:
            raise LaunchError(f"cannot read --machines-file: {exc}", EXIT_CONFIG) from exc
        entries = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        entries = [line for line in entries if line]
    if not entries or any(not entry for entry in entries):
        raise LaunchError("the machine list is empty or has an empty entry", EXIT_CONFIG)
    for index, entry in enumerate(entries):
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            raise LaunchError(
                f"machine {index}: {entry!r} is not a literal IPv4 address; DistDGL's ip_config takes "
                "IPv4 only, so resolve host names before calling launch.py",
                EXIT_CONFIG,
            ) from None
        if address.version != 4:
            raise LaunchError(f"machine {index}: {entry!r} is IPv6; DistDGL takes IPv4 only", EXIT_CONFIG)
    duplicates = sorted({entry for entry in entries if entries.count(entry) > 1})
    if duplicates:
        raise LaunchError(f"the machine list repeats {', '.join(duplicates)}", EXIT_CONFIG)
    return entries


def local_addresses() -> dict[str, str]:
    """Every IPv4 address on this host's interfaces -> interface name."""
    import psutil

    found = {}
    for name, addresses in psutil.net_if_addrs().items():
        for item in addresses:
            if item.family == socket.AF_INET:
                found.setdefault(item.address, name)
    return found


def primary_addresses() -> set[str]:
    """The addresses DGL sees: SIOCGIFADDR (first address) of each interface, as DGL's client does."""
    found = set()
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                import fcntl

                raw = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
        found.add(socket.inet_ntoa(raw[20:24]))
    return found


def check_own_address(machines: list[str], index: int) -> str:
    """Return the interface carrying machines[index]; fail if DGL would not see this as machine index."""
    if not 0 <= index < len(machines):
        raise LaunchError(f"--machine-index {index} is outside the machine list (0..{len(machines) - 1})", EXIT_CONFIG)
    own = machines[index]
    local = local_addresses()
    if own not in local:
        listing = ", ".join(f"{ip} ({name})" for ip, name in sorted(local.items())) or "none"
        raise LaunchError(
            f"own IP missing: machine {index} is {own} in the machine list, but this host ({HOST}) has "
            f"no interface with that address (it has {listing}); DistDGL would silently run it as "
            "another machine",
            EXIT_CONFIG,
        )
    visible = primary_addresses()
    dgl_index = next((i for i, ip in enumerate(machines) if ip in visible), None)
    if dgl_index != index:
        seen = "no entry" if dgl_index is None else f"machine {dgl_index} ({machines[dgl_index]})"
        raise LaunchError(
            f"DGL would take this host as {seen}, not machine {index}: it uses the first list entry "
            f"that is the primary address of a local interface; make {own} primary on "
            f"{local[own]} and list no other local address before it",
            EXIT_CONFIG,
        )
    return local[own]


def listening_ports() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in this network namespace."""
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":
                continue
            address_hex, port_hex = fields[1].split(":")
            if v6:
                address = "::" if int(address_hex, 16) == 0 else "v6"
            else:
                address = socket.inet_ntoa(struct.pack("<I", int(address_hex, 16)))
            found.add((address, int(port_hex, 16)))
    return found


def busy_ports(ports: list[int]) -> list[int]:
    listening = {port for _, port in listening_ports()}
    return [port for port in ports if port in listening]


@dataclass
class Plan:
    """Everything this machine will do, derived from the flags and checked."""

    args: argparse.Namespace
    machines: list[str]
    index: int
    own_ip: str
    ifname: str
    num_clients: int
    part_config: Path
    graph_name: str
    part_sha256: str
    server_ports: list[int] = field(default_factory=list)

    @property
    def num_machines(self) -> int:
        return len(self.machines)

    def facts(self) -> dict:
        """What must be identical on every machine (compared by machine 0 in the preflight)."""
        a = self.args
        return {
            "machines": self.machines,
            "num_servers": a.num_servers,
            "num_trainers": a.num_trainers,
            "num_samplers": a.num_samplers,
            "num_clients": self.num_clients,
            "port": a.port,
            "torch_port": a.torch_port,
            "graph_format": a.graph_format,
            "graph_name": self.graph_name,
            "part_config_sha256": self.part_sha256,
            "command": [Path(a.command[0]).name, *a.command[1:]],
        }


def make_plan(args: argparse.Namespace) -> Plan:
    machines = read_machines(args)
    index = args.machine_index
    ifname = check_own_address(machines, index)
    expected = args.num_trainers * (1 + args.num_samplers) * len(machines)
    if args.num_clients is not None and args.num_clients != expected:
        raise LaunchError(
            f"wrong client count: --num-clients {args.num_clients} but DGL_NUM_CLIENT = trainers x "
            f"(1 + samplers) x machines = {args.num_trainers} x (1 + {args.num_samplers}) x "
            f"{len(machines)} = {expected}",
            EXIT_CONFIG,
        )
    ports = [args.port + s for s in range(args.num_servers)]
    for name in ("port", "torch_port", "control_port"):
        value = getattr(args, name)
        if not 1 <= value <= 65535 or (name == "port" and ports[-1] > 65535):
            raise LaunchError(f"--{name.replace('_', '-')} {value} is not a usable TCP port", EXIT_CONFIG)
    for name in ("torch_port", "control_port"):
        if getattr(args, name) in ports:
            raise LaunchError(
                f"--{name.replace('_', '-')} {getattr(args, name)} collides with the DGL server ports "
                f"{ports[0]}..{ports[-1]}",
                EXIT_CONFIG,
            )
    if args.torch_port == args.control_port:
        raise LaunchError("--torch-port and --control-port must differ", EXIT_CONFIG)
    try:
        info = validate_partition_config(args.part_config, expect_parts=len(machines))
    except PartitionConfigError as exc:
        raise LaunchError(str(exc), EXIT_CONFIG) from exc
    script = Path(args.command[0])
    if not script.is_file():
        raise LaunchError(f"training script {script} does not exist", EXIT_CONFIG)
    args.command[0] = str(script.resolve())  # children run in --run-dir
    taken = busy_ports([*ports, *([args.control_port, args.torch_port] if index == 0 else [])])
    if taken:
        raise LaunchError(
            f"port(s) {', '.join(map(str, taken))} already in use on {HOST} (a job still running, or "
            "a leftover server?)",
            EXIT_CONFIG,
        )
    return Plan(
        args=args,
        machines=machines,
        index=index,
        own_ip=machines[index],
        ifname=ifname,
        num_clients=expected,
        part_config=info.path,
        graph_name=info.graph_name,
        part_sha256=hashlib.sha256(info.path.read_bytes()).hexdigest(),
        server_ports=ports,
    )


# --- control channel (preflight, barrier, failure propagation) ----------------------------------------


def _send(sock: socket.socket, message: dict) -> bool:
    try:
        sock.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        return False
    return True


class LineReader:
    """JSON lines from a socket, with a deadline per read."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def read(self, timeout: float | None) -> dict | None:
        """Next message; None on EOF; TimeoutError when nothing came in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining if remaining is None else min(remaining, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                if StopFlag.signum:
                    raise Stopped(StopFlag.signum) from None
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None


class StopFlag:
    """Set by the SIGTERM/SIGINT handler; every wait loop checks it."""

    signum = 0


def _on_signal(signum, _frame) -> None:
    StopFlag.signum = signum


def check_stop() -> None:
    if StopFlag.signum:
        raise Stopped(StopFlag.signum)


class Control:
    """Launcher-to-launcher messages through machine 0. Events land in ``self.events``."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.events: list[tuple] = []
        self._lock = threading.Lock()
        self.peers: dict[int, socket.socket] = {}  # machine 0: one connection per peer
        self.upstream: socket.socket | None = None  # peers: the connection to machine 0
        self.listener: socket.socket | None = None
        self.done_seen: set[int] = set()

    # events from reader threads
    def _push(self, event: tuple) -> None:
        with self._lock:
            self.events.append(event)

    def drain(self) -> list[tuple]:
        with self._lock:
            events, self.events = self.events, []
        return events

    def _reader(self, machine: int, reader: LineReader) -> None:
        while True:
            try:
                message = reader.read(None)
            except (TimeoutError, Stopped):
                continue
            if message is None:
                self._push(("eof", machine, None))
                return
            self._push((message.get("kind"), machine, message))

    def _start_reader(self, machine: int, reader: LineReader) -> None:
        threading.Thread(target=self._reader, args=(machine, reader), daemon=True).start()

    # preflight
    def preflight(self) -> None:
        if self.plan.num_machines == 1:
            return
        if self.plan.index == 0:
            self._preflight_coordinator()
        else:
            self._preflight_peer()

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.plan.own_ip, self.plan.args.control_port))
        sock.listen(64)
        sock.settimeout(0.5)
        self.listener = sock
        return sock

    def _preflight_coordinator(self) -> None:
        plan, args = self.plan, self.plan.args
        listener = self._listen()
        Log.info(f"preflight: waiting for {plan.num_machines - 1} peer(s) on {plan.own_ip}:{args.control_port}")
        deadline = time.monotonic() + args.peer_timeout
        hellos: dict[int, dict] = {}
        readers: dict[int, LineReader] = {}
        failure = None
        while len(hellos) < plan.num_machines - 1 and failure is None:
            check_stop()
            if time.monotonic() > deadline:
                missing = [i for i in range(1, plan.num_machines) if i not in hellos]
                names = ", ".join(f"machine {i} ({plan.machines[i]})" for i in missing)
                failure = (
                    f"unreachable peer: {names} did not reach this launcher on "
                    f"{plan.own_ip}:{args.control_port} within {args.peer_timeout:g} s"
                )
                break
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            reader = LineReader(conn)
            try:
                hello = reader.read(5.0)
            except TimeoutError:
                hello = None
            if not hello or hello.get("kind") != "hello" or not isinstance(hello.get("machine"), int):
                conn.close()
                continue
            machine = hello["machine"]
            if hello.get("error"):
                failure = f"machine {machine} ({hello.get('host')}) failed its local checks: {hello['error']}"
                self.peers[machine] = conn
                break
            if machine in hellos or not 0 < machine < plan.num_machines:
                _send(conn, {"kind": "verdict", "ok": False, "error": f"machine index {machine} is taken"})
                conn.close()
                continue
            hellos[machine] = hello
            readers[machine] = reader
            self.peers[machine] = conn
            Log.info(f"preflight: machine {machine} ({hello.get('host')}) checked in")
        if failure is None:
            failure = compare_facts(plan.facts(), hellos)
        for machine, conn in self.peers.items():
            _send(conn, {"kind": "verdict", "ok": failure is None, "error": failure})
            if failure is None:
                self._start_reader(machine, readers[machine])
        listener.close()  # a late or duplicate launcher is refused instead of left waiting
        self.listener = None
        if failure is not None:
            raise LaunchError(failure, EXIT_PREFLIGHT)
        Log.info("preflight: all machines agree")

    def _connect(self, timeout: float) -> socket.socket:
        plan, args = self.plan, self.plan.args
        target = (plan.machines[0], args.control_port)
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while True:
            check_stop()
            try:
                return socket.create_connection(target, timeout=2.0)
            except OSError as exc:
                last = exc.strerror or str(exc)
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"unreachable peer: cannot reach machine 0 ({target[0]}:{target[1]}) within {timeout:g} s ({last})",
                    EXIT_PREFLIGHT,
                )
            time.sleep(0.5)

    def _preflight_peer(self) -> None:
        plan, args = self.plan, self.plan.args
        Log.info(f"preflight: contacting machine 0 at {plan.machines[0]}:{args.control_port}")
        sock = self._connect(args.peer_timeout)
        _send(sock, {"kind": "hello", "machine": plan.index, "host": HOST, "facts": plan.facts()})
        reader = LineReader(sock)
        try:
            verdict = reader.read(args.peer_timeout + 10)
        except TimeoutError:
            verdict = None
        if not verdict or verdict.get("kind") != "verdict":
            raise LaunchError("preflight: machine 0 closed the control connection without a verdict", EXIT_PREFLIGHT)
        if not verdict.get("ok"):
            raise LaunchError(f"preflight failed on machine 0: {verdict.get('error')}", EXIT_PREFLIGHT)
        self.upstream = sock
        self._start_reader(0, reader)
        Log.info("preflight: machine 0 confirmed that all machines agree")

    # failure notices when the local checks failed (best effort, bounded)
    @staticmethod
    def report_local_failure(args: argparse.Namespace, machines: list[str] | None, message: str) -> None:
        if not machines or len(machines) < 2 or args.machine_index is None or args.supervised:
            return
        if not 0 <= args.machine_index < len(machines):
            return
        window = min(args.peer_timeout, 15.0)
        if args.machine_index == 0:
            Control._tell_peers(args, machines, message, window)
        else:
            Control._tell_coordinator(args, machines, message, window)

    @staticmethod
    def _tell_coordinator(args, machines, message: str, window: float) -> None:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline and not StopFlag.signum:
            try:
                with socket.create_connection((machines[0], args.control_port), timeout=2.0) as sock:
                    _send(sock, {"kind": "hello", "machine": args.machine_index, "host": HOST, "error": message})
                    with contextlib.suppress(TimeoutError, Stopped):
                        LineReader(sock).read(3.0)  # let machine 0 read it before we close
            except OSError:
                time.sleep(0.5)
            else:
                return

    @staticmethod
    def _tell_peers(args, machines, message: str, window: float) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((machines[0], args.control_port))
            sock.listen(64)
            sock.settimeout(0.5)
        except OSError:
            return
        told: set[int] = set()
        deadline = time.monotonic() + window
        with sock:
            while len(told) < len(machines) - 1 and time.monotonic() < deadline and not StopFlag.signum:
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                with conn:
                    try:
                        hello = LineReader(conn).read(3.0) or {}
                    except (TimeoutError, Stopped):
                        hello = {}
                    error = f"machine 0 ({HOST}) failed its local checks: {message}"
                    _send(conn, {"kind": "verdict", "ok": False, "error": error})
                    if isinstance(hello.get("machine"), int):
                        told.add(hello["machine"])

    # job-time messages
    def tell_peers_failed(self, reason: str) -> None:
        """Ask the other machines to stop (machine 0 passes it on); not when a supervisor owns that."""
        if self.plan.args.supervised:
            Log.info("the supervisor stops the other machines")
            return
        self.send_upstream_or_all({"kind": "abort", "reason": reason})

    def send_upstream_or_all(self, message: dict, exclude: int | None = None) -> None:
        if self.upstream is not None:
            _send(self.upstream, message)
        for machine, conn in self.peers.items():
            if machine != exclude:
                _send(conn, message)

    def close(self) -> None:
        for conn in [*self.peers.values(), self.upstream, self.listener]:
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()


def compare_facts(mine: dict, hellos: dict[int, dict]) -> str | None:
    """Machine 0's check that every peer was given the same job; returns the failure or None."""
    problems = []
    for machine, hello in sorted(hellos.items()):
        theirs = hello.get("facts") or {}
        if theirs.get("num_clients") != mine["num_clients"]:
            problems.append(
                f"wrong client count: machine 0 computes DGL_NUM_CLIENT={mine['num_clients']} "
                f"({mine['num_trainers']} trainer(s) x (1 + {mine['num_samplers']} sampler(s)) x "
                f"{len(mine['machines'])} machine(s)) but machine {machine} computes "
                f"{theirs.get('num_clients')} ({theirs.get('num_trainers')} x (1 + "
                f"{theirs.get('num_samplers')}) x {len(theirs.get('machines') or [])}); give every "
                "machine the same --num-trainers, --num-samplers and machine list"
            )
        differing = [
            f"{key} {mine[key]!r} vs {theirs.get(key)!r}"
            for key in mine
            if key != "num_clients" and theirs.get(key) != mine[key]
        ]
        if differing:
            problems.append(f"machine {machine} differs from machine 0: {'; '.join(differing)}")
    return " | ".join(problems) if problems else None


# --- children ----------------------------------------------------------------------------------------


class Child:
    """One process group started by the launcher, its output passed through with a prefix. It runs under
    proctree.py's guard, which stops its whole tree if the launcher dies without cleaning up (SIGKILL,
    OOM) and is otherwise transparent (same process group, same exit status)."""

    def __init__(self, name: str, argv: list[str], env: dict, cwd: Path, grace: float, rewrite=None):
        self.name = name
        self.proc = subprocess.Popen(
            proctree.guard_argv(sys.executable, grace, argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
        self.rewrite = rewrite or (lambda line: f"[{name}] {line}")
        self.summary: str | None = None
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if SUMMARY_PREFIX in line:
                self.summary = line[line.index(SUMMARY_PREFIX) :]
            emit(self.rewrite(line))
        self.proc.stdout.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()


def trainer_line(machine: str):
    """torchrun tees worker lines as '[trainer R] ...' (our template); its own lines get a prefix."""

    def rewrite(line: str) -> str:
        return line if line.startswith("[trainer ") else f"[torchrun {machine}] {line}"

    return rewrite


def stop_all(children: list[Child], grace: float, why: str) -> None:
    """SIGTERM every child process group and every descendant, then SIGKILL what is left."""
    for child in children:
        child.poll()
    left = len(proctree.descendants())
    if left:
        Log.info(f"stopping {left} process(es) ({why})")
        killed = proctree.stop_tree([child.proc for child in children], grace)
        if killed:
            Log.info(f"{killed} process(es) ignored SIGTERM for {grace:g} s: SIGKILL")
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=1)
        child.thread.join(timeout=5)  # the last lines (the summary) are read before we exit


# --- the job --------------------------------------------------------------------------------------------


class Job:
    def __init__(self, plan: Plan, control: Control):
        self.plan = plan
        self.control = control
        self.children: list[Child] = []
        self.servers: list[Child] = []
        self.trainers: Child | None = None
        self.ready: set[int] = set()  # machine 0: peers whose servers listen
        args = plan.args
        self.run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix=f"pyctl-distdgl-m{plan.index}-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ip_config = self.run_dir / "ip_config.txt"

    def env(self) -> dict:
        plan, args = self.plan, self.plan.args
        # Inherited DGL_* settings (a stale DGL_ROLE, say) must not leak into a child's role.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DGL_") or k == "DGL_DIST_DEBUG"}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "DGLBACKEND": "pytorch",
                "DGL_IP_CONFIG": str(self.ip_config),
                "DGL_CONF_PATH": str(plan.part_config),
                "DGL_NUM_SERVER": str(args.num_servers),
                "DGL_NUM_CLIENT": str(plan.num_clients),
                "DGL_NUM_SAMPLER": str(args.num_samplers),
                "DGL_GRAPH_FORMAT": args.graph_format,
                "DGL_DIST_MAX_TRY_TIMES": str(args.max_try_times),
            }
        )
        env.setdefault("GLOO_SOCKET_IFNAME", plan.ifname)
        return env

    def write_ip_config(self) -> None:
        text = "".join(f"{ip} {self.plan.args.port}\n" for ip in self.plan.machines)
        tmp = self.ip_config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.ip_config)
        Log.info(f"wrote {self.ip_config}: {', '.join(self.plan.machines)} port {self.plan.args.port}")

    def start_servers(self) -> None:
        plan, args = self.plan, self.plan.args
        for s in range(args.num_servers):
            server_id = plan.index * args.num_servers + s
            env = self.env()
            env.update({"DGL_ROLE": "server", "DGL_SERVER_ID": str(server_id)})
            env["OMP_NUM_THREADS"] = str(args.server_threads)
            child = Child(f"server {server_id}", [args.python, *args.command], env, self.run_dir, args.grace)
            self.children.append(child)
            self.servers.append(child)
            Log.info(f"started server {server_id} (pid {child.pid}) for port {plan.server_ports[s]}")

    def start_trainers(self) -> None:
        plan, args = self.plan, self.plan.args
        env = self.env()
        env.update(
            {
                "DGL_DIST_MODE": "distributed",
                "DGL_ROLE": "client",
                "DGL_GROUP_ID": "0",
                "OMP_NUM_THREADS": str(args.trainer_threads),
                "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[trainer ${rank}] ",
            }
        )
        argv = [
            args.python,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={args.num_trainers}",
            f"--nnodes={plan.num_machines}",
            f"--node-rank={plan.index}",
            f"--master-addr={plan.machines[0]}",
            f"--master-port={args.torch_port}",
            "--max-restarts=0",
            "--role=trainer",
            "--tee=3",
            f"--log-dir={self.run_dir / 'torchrun'}",
            *args.command,
        ]
        self.trainers = Child("torchrun", argv, env, self.run_dir, args.grace, rewrite=trainer_line(str(plan.index)))
        self.children.append(self.trainers)
        Log.info(
            f"started {args.num_trainers} trainer(s) via torchrun (pid {self.trainers.pid}), "
            f"node rank {plan.index} of {plan.num_machines}, master {plan.machines[0]}:{args.torch_port}, "
            f"DGL_NUM_CLIENT={plan.num_clients}, GLOO_SOCKET_IFNAME={self.env()['GLOO_SOCKET_IFNAME']}"
        )

    # supervision helpers
    def _check_servers(self, any_exit: bool = False) -> None:
        """Fail on a server that exited non-zero (or at all, before the trainers started)."""
        for child in self.servers:
            code = child.poll()
            if code is not None and (code != 0 or any_exit):
                raise LaunchError(f"{child.name} exited with code {code} before training ended", EXIT_CHILD)

    def _check_control(self, waiting_for_go: bool = False) -> bool:
        """Handle control events; return True when 'go' arrived (peers) or every peer is ready (machine 0)."""
        plan = self.plan
        go = False
        for kind, machine, message in self.control.drain():
            if kind == "ready":
                self.ready.add(machine)
            elif kind == "go":
                go = True
            elif kind == "done":
                self.control.done_seen.add(machine)
            elif kind == "abort" or (kind == "eof" and machine not in self.control.done_seen):
                reason = (message or {}).get("reason") or "its launcher went away"
                if plan.args.supervised:  # the supervisor stops this machine too; nothing to pass on
                    Log.info(f"machine {machine}: {reason}; left to the supervisor")
                    continue
                if plan.index == 0:
                    # tell the others before stopping here
                    self.control.send_upstream_or_all(
                        {"kind": "abort", "reason": f"machine {machine}: {reason}"}, exclude=machine
                    )
                    raise LaunchError(f"machine {machine} failed: {reason}", EXIT_PEER)
                raise LaunchError(f"another machine failed: {reason}", EXIT_PEER)
        if plan.index == 0 and waiting_for_go:
            return len(self.ready) >= plan.num_machines - 1
        return go

    def wait_servers_listening(self) -> None:
        plan, args = self.plan, self.plan.args
        deadline = time.monotonic() + args.server_start_timeout
        wanted = set(plan.server_ports)
        while True:
            check_stop()
            self._check_servers(any_exit=True)
            self._check_control()
            listening = {port for ip, port in listening_ports() if ip in (plan.own_ip, "0.0.0.0", "::")}
            if wanted <= listening:
                Log.info(f"servers listen on {plan.own_ip}:{min(wanted)}..{max(wanted)}")
                return
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"servers did not listen on {sorted(wanted - listening)} within "
                    f"{args.server_start_timeout:g} s (still loading the partition?)",
                    EXIT_CHILD,
                )
            time.sleep(0.2)

    def barrier(self) -> None:
        """Start trainers only when every machine's servers listen (clients would retry otherwise)."""
        plan, args = self.plan, self.plan.args
        if plan.num_machines == 1:
            return
        Log.info("barrier: waiting until every machine's servers listen")
        if plan.index != 0:
            _send(self.control.upstream, {"kind": "ready", "machine": plan.index})
        deadline = time.monotonic() + args.server_start_timeout + args.peer_timeout
        while True:
            check_stop()
            self._check_servers(any_exit=True)
            if self._check_control(waiting_for_go=True):
                break
            if time.monotonic() > deadline:
                raise LaunchError("barrier: not every machine's servers were ready in time", EXIT_PREFLIGHT)
            time.sleep(0.1)
        if plan.index == 0:
            self.control.send_upstream_or_all({"kind": "go"})
        Log.info("barrier: all servers listen")

    def supervise(self) -> int:
        args = self.plan.args
        while True:
            check_stop()
            self._check_control()
            self._check_servers()
            proctree.reap([child.proc for child in self.children])
            code = self.trainers.poll()
            if code is not None:
                if code != 0:
                    raise LaunchError(f"trainers (torchrun) exited with code {code}", EXIT_CHILD)
                break
            time.sleep(0.2)
        Log.info("trainers finished; waiting for the servers to exit")
        self.control.send_upstream_or_all({"kind": "done", "machine": self.plan.index})
        deadline = time.monotonic() + args.server_exit_timeout
        while any(child.poll() is None for child in self.servers) and time.monotonic() < deadline:
            check_stop()
            time.sleep(0.2)
        for child in self.servers:
            code = child.poll()
            if code not in (None, 0):
                Log.info(f"{child.name} exited with code {code} after training")
        return EXIT_OK

    def run(self) -> int:
        self.write_ip_config()
        self.control.preflight()
        self.start_servers()
        self.wait_servers_listening()
        self.barrier()
        self.start_trainers()
        return self.supervise()

    def summary(self) -> str | None:
        return self.trainers.summary if self.trainers else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Log.machine = str(args.machine_index)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the SSH session dropped
        signal.signal(signum, _on_signal)
    proctree.become_subreaper()  # orphaned torchrun workers and samplers stay ours to stop
    started = time.monotonic()
    Log.info(f"launcher starting (pid {os.getpid()}), python {args.python}")
    machines = None
    try:
        machines = read_machines(args)
        plan = make_plan(args)
    except LaunchError as exc:
        Log.info(f"FAILED local checks: {exc}")
        Control.report_local_failure(args, machines, str(exc))
        return exc.code
    Log.info(
        f"machine {plan.index} of {plan.num_machines} at {plan.own_ip} ({plan.ifname}); partition "
        f"{plan.part_config} ({plan.graph_name}); {args.num_servers} server(s), {args.num_trainers} "
        f"trainer(s), {args.num_samplers} sampler(s) per trainer, DGL_NUM_CLIENT={plan.num_clients}"
    )
    control = Control(plan)
    job = Job(plan, control)
    code = EXIT_OK
    try:
        code = job.run()
    except LaunchError as exc:
        Log.info(f"FAILED: {exc}")
        code = exc.code
        if code != EXIT_PEER:
            control.tell_peers_failed(f"{HOST}: {exc}")
    except Stopped as exc:
        Log.info(f"received {exc}: stopping the job")
        code = 128 + exc.signum
        control.tell_peers_failed(f"{HOST}: launcher received {exc}")
    finally:
        stop_all(job.children, args.grace, "job over" if code == EXIT_OK else f"exit code {code}")
        control.close()
    summary = job.summary()
    Log.info(f"exit code {code} after {time.monotonic() - started:.1f} s (run dir {job.run_dir})")
    if summary and code == EXIT_OK:
        emit(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
