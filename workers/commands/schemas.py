"""``streamshop schemas``: write the event catalog's JSON Schemas (checked in, tested for staleness)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.settings import Settings
from events.schemas import SCHEMA_DIR, write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=SCHEMA_DIR, help="target directory")


def run(args: argparse.Namespace, settings: Settings) -> int:
    for path in write(args.out):
        print(path)
    return 0
