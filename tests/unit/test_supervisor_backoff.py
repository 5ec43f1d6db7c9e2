"""The restart backoff of ``make run``'s supervisor (scripts/service.py): doubling, capped."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _service() -> ModuleType:
    """scripts/ is not a package (run.py and service.py run as scripts): load it by path."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "service.py"
    spec = importlib.util.spec_from_file_location("streamshop_service_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_restart_delay_doubles_from_one_second_and_stops_at_the_cap() -> None:
    service = _service()
    delays = [service.restart_delay(n) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert service.restart_delay(1000) == service.RESTART_MAX_SECONDS
