"""The restart backoff of ``make run``'s supervisor (scripts/service.py): doubling, capped."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _service() -> ModuleType:
    """service.py runs as a script, importing its siblings (``servers``) from scripts/: load
    it by path, with scripts/ on ``sys.path`` as when it runs."""
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    spec = importlib.util.spec_from_file_location(
        "streamshop_service_script", scripts / "service.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(scripts))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    return module


def test_restart_delay_doubles_from_one_second_and_stops_at_the_cap() -> None:
    service = _service()
    delays = [service.restart_delay(n) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert service.restart_delay(1000) == service.RESTART_MAX_SECONDS
