"""The request path's cost-saving choices that must not drift: bounded low-priority password
hashing, one access line per request, the log serializer's output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from datetime import UTC, datetime, timedelta

import structlog

from app.logging import _dumps, configure_logging
from app.passwords import HASH_NICE, Passwords
from app.settings import AuthSettings

CHEAP = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


async def test_hashing_runs_in_a_bounded_pool_of_low_priority_threads() -> None:
    passwords = Passwords(CHEAP, threads=2)
    seen: dict[int, int] = {}
    real = passwords._hasher.hash
    active = [0, 0]  # now, most at once
    lock = threading.Lock()

    def spy(password: str) -> str:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        tid = threading.get_native_id()
        seen[tid] = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            return real(password)
        finally:
            with lock:
                active[0] -= 1

    class Spying:
        hash = staticmethod(spy)
        verify = staticmethod(passwords._hasher.verify)

    passwords._hasher = Spying()  # type: ignore[assignment]
    hashes = await asyncio.gather(*(passwords.hash(f"password-{i}") for i in range(12)))
    assert all(
        await asyncio.gather(*(passwords.verify(h, f"password-{i}") for i, h in enumerate(hashes)))
    )
    assert not await passwords.verify(hashes[0], "wrong")
    assert 1 <= len(seen) <= 2 and active[1] <= 2
    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert all(p == min(loop_priority + HASH_NICE, 19) for p in seen.values())


def test_uvicorn_access_log_is_silenced_by_the_app_logging() -> None:
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)  # as uvicorn configures it
    configure_logging("json")
    assert not logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)


def test_json_log_lines_stay_json_with_unencodable_values() -> None:
    line = _dumps({"event": "x", "n": 1, "odd": object()}, default=repr)
    decoded = json.loads(line)
    assert decoded["event"] == "x" and decoded["n"] == 1
    assert decoded["odd"].startswith("<object object")
    configure_logging("json")  # the renderer is wired with it
    renderer = structlog.get_config()["processors"][-1]
    assert json.loads(renderer(None, "info", {"event": "y", "odd": object()}))["event"] == "y"


def test_a_remembered_token_is_still_refused_once_expired_or_tampered() -> None:
    import time as clock

    import jwt
    import pytest
    from litestar.exceptions import NotAuthorizedException

    from app.auth import AccessToken

    secret = "s" * 32
    soon = datetime.now(UTC) + timedelta(seconds=2)
    encoded = AccessToken(sub="a1", exp=soon, role="admin").encode(secret, "HS256")
    first = AccessToken.decode(encoded, secret, "HS256")
    assert (first.sub, first.role) == ("a1", "admin")
    for _ in range(2):  # verified and converted once, then remembered
        assert AccessToken.decode(encoded, secret, "HS256") is first
    head, body, signature = encoded.split(".")
    with pytest.raises(NotAuthorizedException):
        AccessToken.decode(f"{head}.{body}.{signature[:-2]}AA", secret, "HS256")
    with pytest.raises(NotAuthorizedException):
        AccessToken.decode(encoded, "t" * 32, "HS256")
    clock.sleep(max(0.0, soon.timestamp() - clock.time()) + 1.1)
    with pytest.raises(NotAuthorizedException):
        AccessToken.decode(encoded, secret, "HS256")
    with pytest.raises(jwt.ExpiredSignatureError):
        AccessToken.decode_payload(encoded, secret, ["HS256"], options={})
