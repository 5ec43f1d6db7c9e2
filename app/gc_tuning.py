"""The cyclic garbage collector's thresholds in our long-running processes (the API's
workers, ``streamshop project``, ``rebuild`` and the other worker commands).

CPython runs a young-generation collection every 700 net allocations of container objects
(dicts, lists, tuples, instances). A projector or a rebuild holds a few batches of decoded
entries at a time, about fifty containers per entry that live until their batch is applied,
so with the default every batch's objects are traversed again and again, promoted, and
traversed in the older generations too. Measured on a 100 000-event rebuild (bench/PROFILE.md,
"Eighth session"), the collector took about a quarter of the process's CPU: audit 9.2-9.3 s
of CPU with the defaults against 6.6-7.0 s with a young generation of 50 000, the
warehouse 5.8 against 3.7 s, the read models 19.8 against 13.2 s.

Almost nothing we allocate is cyclic garbage (reference counting frees it), so collecting
less often costs little memory; the older generations keep their default ratios apart from
the middle one, so a full collection still runs now and then.
"""

from __future__ import annotations

import gc
import os

YOUNG = 50_000
"""Net container allocations between young-generation collections (CPython's default: 700)."""
MIDDLE = 20
"""Young collections between middle-generation ones (default 10)."""


def tune_gc() -> None:
    """Set the thresholds above for this process (idempotent; call once at start-up), unless
    ``STREAMSHOP_GC=default`` asks for CPython's own."""
    if os.environ.get("STREAMSHOP_GC", "") == "default":
        return
    _, _, old = gc.get_threshold()
    gc.set_threshold(YOUNG, MIDDLE, old)
