"""The options `pyctl train ddp` and `pyctl train distdgl` share are one declaration each (pyctl/cli.py):
same flags, help and default in both commands, so the two cannot drift apart."""

from __future__ import annotations

import typer

from pyctl import cli

SHARED = (
    "--inventory",
    "--env",
    "--hosts",
    "--ssh-user",
    "--ssh-key",
    "--namespace",
    "--claim",
    "--claim-mount",
    "--queue",
    "--render",
    "--follow",
    "--start-timeout",
)


def _options(command_name: str) -> dict[str, object]:
    group = typer.main.get_command(cli.app)
    train = group.commands["train"]
    command = train.commands[command_name]
    return {opt: param for param in command.params for opt in getattr(param, "opts", [])}


def test_the_shared_options_are_the_same_in_both_commands():
    ddp, distdgl = _options("ddp"), _options("distdgl")
    for flag in SHARED:
        assert flag in ddp and flag in distdgl, flag
        a, b = ddp[flag], distdgl[flag]
        assert (a.opts, a.help, a.default, a.is_flag) == (b.opts, b.help, b.default, b.is_flag), flag


def test_hosts_are_split_on_commas_in_order_without_blanks():
    assert cli._host_names(" gpu2, gpu1,,") == ("gpu2", "gpu1")
    assert cli._host_names(None) == ()
