"""What crosses the pipe between a rebuild and the child replaying half its partitions."""

from __future__ import annotations

import base64

from workers.replay import FailedEntry
from workers.replay_split import _Failure, split


def test_the_partitions_are_shared_alternately() -> None:
    assert split([3, 0, 1, 2, 5, 4, 7, 6]) == ([0, 2, 4, 6], [1, 3, 5, 7])
    assert split([0, 1, 2]) == ([0, 2], [1])


def test_a_failed_entry_crosses_the_pipe_with_its_bytes() -> None:
    fields = {b"id": b"e1", b"type": b"OrderBilled", b"aggregate": b"order:1", b"data": b"\xff{"}
    failure = FailedEntry.of(3, "5-1", fields, "bad data", behind="4-0")
    back = _Failure.of(failure).entry()
    assert back == failure
    assert base64.b64decode(_Failure.of(failure).fields[-1][1]) == b"\xff{"
