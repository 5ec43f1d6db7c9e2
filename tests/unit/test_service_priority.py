"""``make run``'s wrapper (scripts/service.py) starts what produces commands at a lower
priority than the datastores and the projector (``scripts.servers.NICE``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.servers import NICE

ROOT = Path(__file__).resolve().parents[2]


def niceness_under(name: str) -> int:
    """The ``nice`` value of a command the wrapper starts as Procfile process ``name``."""
    done = subprocess.run(
        [
            sys.executable,
            "scripts/service.py",
            name,
            "--",
            sys.executable,
            "-c",
            "import os; print(os.nice(0))",
        ],
        cwd=ROOT,
        env={**os.environ, "STREAMSHOP_RUN_DIR": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("name", ["api", "ingest", "expire"])
def test_command_producers_start_five_steps_nicer(name: str) -> None:
    assert NICE[name] == 5
    assert niceness_under(name) == min(19, os.nice(0) + 5)


@pytest.mark.parametrize("name", ["projector", "mongo", "redis"])
def test_the_views_and_datastores_keep_the_default_priority(name: str) -> None:
    assert niceness_under(name) == os.nice(0)
