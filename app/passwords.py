"""Password hashing with argon2id, in a small bounded pool of low-priority threads.

argon2id keeps its production cost (64 MiB, 3 passes, 4 lanes: the reference code runs each
lane on its own OS thread). On a small machine a login flood would otherwise put dozens of
hashing threads in front of the event loop, and every other route (``/health`` first) would
wait for a CPU. So hashes run in a pool of ``threads`` threads per process (one per two
cores by default), and those threads lower their own scheduling priority (Linux ``nice`` is
per thread and inherited by the lane threads argon2 starts): a hash still gets every idle
cycle, but the event loop is scheduled first. Logins beyond the pool's width queue in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.settings import AuthSettings

HASH_NICE = 10
"""How much lower than the event loop the hashing threads are scheduled (``nice`` steps)."""


def default_threads() -> int:
    return max(1, (os.cpu_count() or 1) // 2)


def _lower_priority() -> None:
    """Thread initializer: lower this thread's priority (a no-op where the OS refuses)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


class Passwords:
    """Hash and verify passwords; an unknown account is checked against a dummy hash so a
    login for an unknown email costs as much time as one with a wrong password."""

    def __init__(self, auth: AuthSettings, threads: int | None = None) -> None:
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_kib,
            parallelism=auth.argon2_parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=threads or default_threads(),
            thread_name_prefix="argon2",
            initializer=_lower_priority,
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; with no hash, burns the same time and says False."""
        target = password_hash or self._dummy
        loop = asyncio.get_running_loop()
        try:
            ok = await loop.run_in_executor(self._pool, self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(ok) and password_hash is not None
