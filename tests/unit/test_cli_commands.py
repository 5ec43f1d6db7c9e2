"""The ``streamshop`` CLI's route table: every listed sub-command is there, a missing one is an error."""

from __future__ import annotations

import pytest

from workers.cli import COMMANDS, MissingCommand, build_parser


def test_every_listed_sub_command_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)  # type: ignore[arg-type]


def test_a_listed_sub_command_whose_module_is_missing_is_an_error() -> None:
    commands = {
        **COMMANDS,
        "nowhere": ("workers.commands.nowhere", "a sub-command whose module is not there"),
    }
    with pytest.raises(MissingCommand, match=r"nowhere.*workers\.commands\.nowhere"):
        build_parser(commands)
