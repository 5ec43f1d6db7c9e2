"""The fault suite runs only when asked for (``make faults`` = ``pytest -m faults``).

``make test`` runs ``pytest`` without ``-m``: the ``faults`` tests are then deselected here,
so the suite is not run twice in CI. Any ``-m`` expression is left to pytest.
"""

from __future__ import annotations

import json

import pytest

from tests.faults.scenario import RESULTS, format_figures

_RAN: list[str] = []
"""The runs made (``single``, ``cluster``)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: the fault-injection suite (real processes, kill -9); make faults"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr"):
        return
    deselected = [item for item in items if item.get_closest_marker("faults")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("faults")]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures of the run that just finished (``.data/faults/latest.json``)."""
    for run in _RAN:
        path = RESULTS / ("cluster.json" if run == "cluster" else "latest.json")
        logs = RESULTS / ("logs-cluster" if run == "cluster" else "logs")
        if path.exists():
            terminalreporter.section(f"fault run figures ({run})")
            terminalreporter.write_line(format_figures(json.loads(path.read_text())))
            terminalreporter.write_line(f"  figures: {path}; process logs: {logs}")
