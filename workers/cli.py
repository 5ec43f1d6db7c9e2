"""The ``streamshop`` command line: one sub-command per module, listed in ``COMMANDS``.

Each sub-command module defines ``add_arguments(parser)`` and ``run(args, settings) -> int``
(sync or async). The CLI is a composition root: it builds ``Settings`` from the
environment and is the one place in ``workers/`` allowed to reach into ``app/`` (for
``create-admin`` and ``demo``, which go through the real command path).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from types import ModuleType

COMMANDS: dict[str, tuple[str, str]] = {
    "schemas": ("workers.commands.schemas", "write the event JSON Schemas to events/schemas/"),
    "create-admin": ("workers.commands.create_admin", "create an admin account"),
    "project": ("workers.commands.project", "run projectors (all, or the ones named)"),
    "lag": ("workers.commands.lag", "show owner, position and lag per projection and partition"),
    "dlq": ("workers.commands.dlq", "list or re-drive dead-lettered entries"),
    "audit": ("workers.commands.audit", "verify the audit log's hash chains"),
    "rebuild": ("workers.commands.rebuild", "rebuild a view from the log with no downtime"),
    "verify": ("workers.commands.verify", "compare a live view with a fresh fold of the log"),
    "ingest": ("workers.commands.ingest", "run the ingress gateway for external producers"),
    "expire": ("workers.commands.expire", "expire unpaid orders whose stock reservation ran out"),
    "demo": ("workers.commands.demo", "populate a demo shop through the command path"),
    "export": ("workers.commands.export", "export the log and the warehouse to a Parquet lake"),
    "archive": ("workers.commands.archive", "move the log's old part from Redis to Parquet"),
    "check": (
        "workers.commands.check",
        "check Redis (version, eviction, persistence) and load functions",
    ),
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name == COMMANDS[name][0]:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamshop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        module = _load(name)
        if module is None:
            continue
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.logging import configure_logging
    from app.settings import Settings

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    result = args._module.run(args, settings)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
