"""SSH to inventory hosts with fabric: the only module that imports fabric.

A `Target` says how to reach one inventory host the way Ansible would: `ansible_host`, `ansible_port`,
and the OpenSSH options in `ansible_ssh_common_args` / `ansible_ssh_extra_args` (`-F ssh_config`,
`-o ProxyCommand=...`, `-o UserKnownHostsFile=...`, `-i KEY`, `-p PORT`), read through the same
ssh_config lookup OpenSSH does. Host keys are checked strictly: the host must already be in a
known_hosts file (the ssh_config's `UserKnownHostsFile`, else ~/.ssh/known_hosts, plus the global one);
only an explicit `StrictHostKeyChecking no` relaxes that, and pyctl then warns.

Nothing here prints, and no key material is ever read into pyctl's own data: keys are file paths that
paramiko opens.
"""

from __future__ import annotations

import contextlib
import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyctl.errors import PyctlError, UsageError
from pyctl.inventory import Host


class RemoteError(UsageError):
    """A host could not be reached or refused us; raised before anything started (exit 2)."""


class RemoteCommandError(PyctlError):
    """A command on a host failed while a job ran."""


@dataclass(frozen=True)
class Target:
    """Everything needed to open an SSH connection to one inventory host."""

    name: str  # the inventory name
    hostname: str  # what TCP (or the ProxyCommand) connects to
    port: int
    user: str
    key_files: tuple[str, ...] = ()
    proxy_command: str | None = None
    known_hosts: tuple[str, ...] = ()
    strict: bool = True
    connect_timeout: float = 20.0
    notes: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        via = " via ProxyCommand" if self.proxy_command else ""
        return f"{self.user}@{self.hostname}:{self.port}{via}"


def _ssh_options(args: str) -> tuple[str | None, dict[str, str]]:
    """The `-F file` and the `-o`/`-i`/`-p` options of an OpenSSH argument string, keys lower-cased."""
    config_file: str | None = None
    options: dict[str, str] = {}
    words = shlex.split(args or "")
    index = 0
    while index < len(words):
        word = words[index]
        value: str | None = None
        flag = word[:2]
        if flag in ("-F", "-o", "-i", "-p") and len(word) > 2:
            value = word[2:]
        elif flag in ("-F", "-o", "-i", "-p") and index + 1 < len(words):
            index += 1
            value = words[index]
        if value is not None:
            if flag == "-F":
                config_file = value
            elif flag == "-i":
                options.setdefault("identityfile", value)
            elif flag == "-p":
                options["port"] = value
            else:
                key, _, val = value.replace("=", " ", 1).partition(" ")
                options[key.strip().lower()] = val.strip()
        index += 1
    return config_file, options


def target_for(
    host: Host,
    *,
    user: str | None = None,
    key_files: list[Path] | None = None,
    connect_timeout: float = 20.0,
) -> Target:
    """How to reach `host`, from its inventory variables (and the ssh_config they name).

    `user` overrides the inventory's `ansible_user`; `key_files` are tried before the identity files
    the inventory or ssh_config name.
    """
    import paramiko

    hvars = host.vars
    args = " ".join(str(hvars.get(name, "") or "") for name in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    config_file, options = _ssh_options(args)
    address = str(hvars.get("ansible_host") or host.name)
    config = paramiko.SSHConfig()
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise RemoteError(
                f"host {host.name}: the ssh_config {path} named in ansible_ssh_common_args does not exist"
            )
        config = paramiko.SSHConfig.from_path(str(path))
    else:
        default = Path("~/.ssh/config").expanduser()
        if default.is_file():
            config = paramiko.SSHConfig.from_path(str(default))
    looked = dict(config.lookup(address))
    looked.update(options)
    port = hvars.get("ansible_port") or hvars.get("ansible_ssh_port") or looked.get("port") or 22
    login = user or hvars.get("ansible_user") or hvars.get("ansible_ssh_user") or looked.get("user") or "root"
    keys = [str(k) for k in key_files or []]
    inventory_key = hvars.get("ansible_ssh_private_key_file") or hvars.get("ansible_private_key_file")
    if inventory_key:
        keys.append(str(Path(str(inventory_key)).expanduser()))
    configured = looked.get("identityfile") or []
    for item in [configured] if isinstance(configured, str) else configured:
        keys.append(str(Path(item).expanduser()))
    keys = list(dict.fromkeys(k for k in keys if Path(k).is_file()))
    known = []
    for name, fallback in (
        ("userknownhostsfile", "~/.ssh/known_hosts"),
        ("globalknownhostsfile", "/etc/ssh/ssh_known_hosts"),
    ):
        for item in str(looked.get(name) or fallback).split():
            path = Path(item).expanduser()
            if str(path) != "/dev/null" and path.is_file():
                known.append(str(path))
    strict = str(looked.get("stricthostkeychecking", "yes")).lower() not in ("no", "off")
    proxy = looked.get("proxycommand")
    if proxy and proxy.lower() == "none":
        proxy = None
    return Target(
        name=host.name,
        hostname=str(looked.get("hostname") or address),
        port=int(port),
        user=str(login),
        key_files=tuple(keys),
        proxy_command=proxy,
        known_hosts=tuple(known),
        strict=strict,
        connect_timeout=connect_timeout,
    )


def connect(target: Target) -> Any:
    """An open fabric Connection to `target`; RemoteError with a one-line reason when it fails."""
    import paramiko
    from fabric import Config, Connection

    if not target.key_files:
        raise RemoteError(
            f"host {target.name}: no SSH key to log in as {target.user}",
            hint="run 'pyctl bootstrap --phases ssh_trust' (the training user's key), or give --ssh-key",
        )
    conn = Connection(
        target.hostname,
        user=target.user,
        port=target.port,
        gateway=target.proxy_command,
        connect_timeout=target.connect_timeout,
        config=Config(overrides={"load_ssh_configs": False}),
        connect_kwargs={
            "key_filename": list(target.key_files),
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": target.connect_timeout,
            "auth_timeout": target.connect_timeout,
        },
    )
    for path in target.known_hosts:
        with contextlib.suppress(OSError):
            conn.client.load_host_keys(path)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy() if target.strict else paramiko.WarningPolicy())
    try:
        conn.open()
    except paramiko.BadHostKeyException as exc:
        raise RemoteError(
            f"host {target.name}: its host key differs from the one in known_hosts ({target.describe()})",
            hint="if the host was reinstalled, update known_hosts; otherwise stop: this may be an impostor",
        ) from exc
    except paramiko.SSHException as exc:
        text = str(exc)
        if "not found in known_hosts" in text:
            raise RemoteError(
                f"host {target.name}: its host key is not in known_hosts ({target.describe()})",
                hint="add it (ssh-keyscan after checking the fingerprint), or name the file with UserKnownHostsFile",
            ) from exc
        if isinstance(exc, paramiko.AuthenticationException):
            raise RemoteError(
                f"host {target.name}: SSH login as {target.user} was refused ({target.describe()})",
                hint="check the user and key (--ssh-user, --ssh-key); the training user comes from "
                "'pyctl bootstrap --phases ssh_trust'",
            ) from exc
        raise RemoteError(f"host {target.name}: SSH failed: {_first_line(text)} ({target.describe()})") from exc
    except (TimeoutError, OSError, EOFError) as exc:
        raise RemoteError(
            f"host {target.name} is unreachable: {_first_line(str(exc)) or type(exc).__name__} ({target.describe()})"
        ) from exc
    return conn


def keep_alive(conn: Any, seconds: int = 15) -> None:
    """Send SSH keepalives, so a connection that died silently is noticed (the transport closes)."""
    transport = conn.client.get_transport()
    if transport is not None:
        transport.set_keepalive(seconds)


def alive(conn: Any) -> bool:
    """Whether the connection still works. A ProxyCommand whose process has exited counts as dead, and
    its transport is closed here: paramiko would otherwise spin reading from it forever."""
    transport = conn.client.get_transport() if conn is not None else None
    if transport is None or not transport.is_active():
        return False
    process = getattr(transport.sock, "process", None)
    if process is not None and process.poll() is not None:
        with contextlib.suppress(Exception):
            transport.close()
        return False
    return True


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def run(conn: Any, command: str, timeout: float = 120) -> tuple[int, str]:
    """Run a short command; return its exit code and its output (stdout and stderr together)."""
    result = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout, pty=False)
    return result.exited, (result.stdout + result.stderr)


def put_bytes(conn: Any, remote_path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a file on the host through SFTP (no shell quoting involved)."""
    conn.put(io.BytesIO(data), remote=remote_path)
    conn.sftp().chmod(remote_path, mode)


def start(conn: Any, command: str) -> Any:
    """Start `command` on its own SSH channel, stdout and stderr combined; returns the paramiko channel.

    The remote side's standard input stays open until `stop_input(channel)` or the connection closes.
    """
    transport = conn.client.get_transport()
    if transport is None or not transport.is_active():
        raise RemoteCommandError(f"the SSH connection to {conn.host} is closed")
    channel = transport.open_session()
    channel.set_combine_stderr(True)
    channel.exec_command(command)
    return channel


def stop_input(channel: Any) -> None:
    """Send EOF on the channel's standard input."""
    with contextlib.suppress(OSError, EOFError, Exception):
        channel.shutdown_write()


def close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def quote(words: list[str]) -> str:
    return shlex.join(words)
