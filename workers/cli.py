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
    "forget": ("workers.commands.forget", "forget a customer: destroy its key, scrub its views"),
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


class MissingCommand(Exception):
    """A sub-command listed in ``COMMANDS`` whose module is not there: a broken install or a
    typo in the table, never a command to leave out quietly."""


def _load(name: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise MissingCommand(
                f"streamshop {name}: its module {module_name} is missing (listed in COMMANDS)"
            ) from exc
        raise


def build_parser(commands: dict[str, tuple[str, str]] = COMMANDS) -> argparse.ArgumentParser:
    """One sub-parser per entry of ``commands``; raises :class:`MissingCommand` for a module
    that is not there."""
    parser = argparse.ArgumentParser(prog="streamshop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in commands.items():
        module = _load(name, module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.gc_tuning import tune_gc
    from app.logging import configure_logging
    from app.settings import Settings
    from app.tracing import tracer_provider

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    tune_gc()
    # Traces (OTEL_EXPORTER_OTLP_ENDPOINT): the projector's apply spans join the API's.
    provider = tracer_provider(settings, service=f"streamshop-{args.command}")
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
    try:
        result = args._module.run(args, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
    finally:
        if provider is not None:
            provider.shutdown()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
