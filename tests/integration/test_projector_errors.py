"""Which failures are the sink's (wait, keep everything) and which are the entry's (retry,
then dead-letter): the runtime's one classification, checked without any server."""

from __future__ import annotations

import asyncpg
import pymongo.errors

from projections.base import SinkUnavailable
from workers.runner import _backoff, is_sink_error


def test_store_outages_are_sink_errors() -> None:
    for exc in (
        SinkUnavailable("down"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        asyncpg.exceptions.CannotConnectNowError("starting"),
        pymongo.errors.ServerSelectionTimeoutError("no server"),
        pymongo.errors.AutoReconnect("reconnect"),
    ):
        assert is_sink_error(exc), exc


def test_a_wrapped_outage_is_still_a_sink_error() -> None:
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as cause:
            raise RuntimeError("view write failed") from cause
    except RuntimeError as exc:
        assert is_sink_error(exc)


def test_bad_data_is_not_a_sink_error() -> None:
    for exc in (
        ValueError("bad amount"),
        KeyError("missing"),
        asyncpg.exceptions.UniqueViolationError("dup"),
        pymongo.errors.DuplicateKeyError("dup"),
    ):
        assert not is_sink_error(exc), exc


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = [_backoff(n, 100, 1_000, jitter=False) for n in range(1, 7)]
    assert delays == [100, 200, 400, 800, 1_000, 1_000]
    assert all(750 <= _backoff(9, 100, 1_000) <= 1_000 for _ in range(50))
