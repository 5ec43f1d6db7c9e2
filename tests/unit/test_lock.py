"""The environment the suite runs in is exactly what ``uv.lock`` pins.

``make`` installs with ``uv sync --frozen``; this checks the result from the inside, so a
version that drifted (a hand install, a stale venv) fails the suite instead of hiding.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def locked_versions() -> dict[str, set[str]]:
    """Name → the versions the lock pins (several where markers split by Python version)."""
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads(LOCK.read_text())["package"]:
        if "version" in package:
            versions.setdefault(_norm(package["name"]), set()).add(package["version"])
    return versions


def installed_versions() -> dict[str, str]:
    return {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}


def drift(installed: dict[str, str], locked: dict[str, set[str]]) -> list[str]:
    """Installed distributions that the lock does not pin, or pins at another version."""
    return sorted(
        f"{name} {version} (lock: {', '.join(sorted(locked.get(name, {'absent'})))})"
        for name, version in installed.items()
        if version not in locked.get(name, set())
    )


def test_drift_is_detected() -> None:
    locked = {"msgspec": {"0.19.0"}, "redis": {"5.2.1"}}
    assert drift({"msgspec": "0.23.0", "redis": "5.2.1", "six": "1.16.0"}, locked) == [
        "msgspec 0.23.0 (lock: 0.19.0)",
        "six 1.16.0 (lock: absent)",
    ]


def test_installed_versions_equal_the_lock() -> None:
    installed = installed_versions()
    if "uv" in installed or "pip" in installed:
        pytest.fail(
            "this environment was not made by `uv sync --frozen` (it has pip or uv in it); "
            "run the suite through `make test`"
        )
    assert drift(installed, locked_versions()) == []
