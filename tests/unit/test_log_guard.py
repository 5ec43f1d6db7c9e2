"""The canonical log is never edited: the only code that removes stream entries is the
dead-letter re-drive (its own streams) and the archive's trim of entries a committed,
verified segment holds (``workers/archive.py``, one script). Any other trim, delete or cap
in the code fails here, naming the line, so it gets the same review."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "events", "projections", "workers")
REMOVES = re.compile(r"\b(xtrim|xdel)\b|\b(maxlen|minid)\s*=", re.IGNORECASE)

ALLOWED = {
    (
        "workers/dlq.py",
        "runner would have. Entries are XDEL'd once re-driven; the canonical log never.",
    ),
    ("workers/dlq.py", "if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return -1 end"),
    (
        "workers/archive.py",
        "(``XTRIM MINID =`` its successor) and sets the partition's archive marker.",
    ),
    (
        "workers/archive.py",
        "local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', '=', ms .. '-' .. (tonumber(seq) + 1))",
    ),
}


def removals() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix not in (".py", ".lua"):
                continue
            for line in path.read_text().splitlines():
                if REMOVES.search(line):
                    found.add((str(path.relative_to(ROOT)), line.strip()))
    return found


def test_only_the_dead_letters_and_the_archive_trim_remove_stream_entries() -> None:
    assert removals() - ALLOWED == set()


def test_the_archive_trims_only_inside_its_checked_script() -> None:
    source = (ROOT / "workers/archive.py").read_text()
    script = source.split('TRIM = """', 1)[1].split('"""', 1)[0]
    assert "XTRIM" in script
    assert script.index("XINFO', 'GROUPS'") < script.index("XTRIM")  # groups checked first
    assert source.count("XTRIM") == 2  # the script and the module docstring
