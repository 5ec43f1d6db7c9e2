"""Start one Procfile process: record its pid, order its start and stop against the others,
and restart it when it crashes.

Usage (from the Procfile):
``python scripts/service.py NAME [--wait] [--restart] [--outlive NAME,...] -- COMMAND ...``

The pid file (``$STREAMSHOP_RUN_DIR/NAME.pid``) lets ``scripts/run.py`` find and stop a
process left over by a run that was killed with ``kill -9``.

``--wait`` holds the API and the workers back until Redis answers (it may still be
loading its AOF), MongoDB answers and PostgreSQL accepts connections, so honcho does not
see them crash on a cold start.

``--restart`` supervises: honcho stops the whole system as soon as one of its processes
exits, so the command runs as a child of this wrapper instead, and when it exits without
being asked to (a crash, a ``kill -9``, a projector refusing a view of another log) it is
started again after a capped exponential backoff (``RESTART_BASE_SECONDS`` doubling up to
``RESTART_MAX_SECONDS``; a child that ran ``RESTART_STABLE_SECONDS`` starts the backoff
over). Every exit and restart is logged (structlog, ``LOG_FORMAT``). On SIGTERM/SIGINT the
wrapper stops the child and exits with it; it never restarts once asked to stop.

``--outlive`` is for the datastores. honcho stops every process at once, but the API and
the workers still write (in-flight commands, checkpoints, lease releases) while they stop.
So the server waits until the named processes are gone (at most ``OUTLIVE_SECONDS``,
below honcho's 5 s before SIGKILL), then stops.

A supervised child runs in its own session, out of reach of honcho's signal to the
wrapper's process group, and its pid is kept in ``NAME-server.pid`` (datastores) or
``NAME-worker.pid``. Should the wrapper be killed, the kernel sends the child SIGTERM
(``PR_SET_PDEATHSIG``). Without ``--restart`` or ``--outlive`` the command replaces this
process (``exec``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from servers import mongo_ready, redis_ready, tcp_ready  # scripts/ is on sys.path

WAIT_SECONDS = float(os.environ.get("STREAMSHOP_WAIT_SECONDS", "120"))
OUTLIVE_SECONDS = 3.5
RESTART_BASE_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
RESTART_STABLE_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parent.parent


def wait_for_datastores(env: dict[str, str]) -> None:
    """Block until every configured datastore answers, or exit after ``WAIT_SECONDS``."""
    checks = {
        "Redis": lambda: redis_ready(env["REDIS_URL"]),
        "MongoDB": lambda: mongo_ready(env["MONGO_URL"]),
        "PostgreSQL": lambda: tcp_ready(env["DATABASE_URL"], 5432),
    }
    deadline = time.monotonic() + WAIT_SECONDS
    for name, ready in checks.items():
        while not ready():
            if time.monotonic() > deadline:
                sys.exit(f"{name} did not become ready within {WAIT_SECONDS:.0f}s")
            time.sleep(0.2)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the wrapper dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids(run_dir: Path | None, names: list[str]) -> list[int]:
    pids = []
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            if run_dir is not None:
                pids.append(int((run_dir / f"{name}.pid").read_text()))
    return pids


def restart_delay(failures: int) -> float:
    """Seconds to wait before start number ``failures + 1`` after ``failures`` quick exits."""
    return float(min(RESTART_MAX_SECONDS, RESTART_BASE_SECONDS * 2 ** max(failures - 1, 0)))


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


class Supervisor:
    """Runs one command as a child: stops it on request, restarts it when it dies."""

    def __init__(
        self,
        name: str,
        command: list[str],
        run_dir: Path | None,
        outlive: list[str],
        restart: bool,
    ) -> None:
        self.name, self.command, self.run_dir = name, command, run_dir
        self.outlive, self.restart = outlive, restart
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.log = _logger()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(self.command, start_new_session=True, preexec_fn=_die_with_parent)
        if self.run_dir is not None:
            kind = "server" if self.outlive else "worker"
            (self.run_dir / f"{self.name}-{kind}.pid").write_text(f"{child.pid}\n")
        return child

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.05)

    def _stop_child(self, child: subprocess.Popen[bytes]) -> int:
        if self.outlive:
            deadline = time.monotonic() + OUTLIVE_SECONDS
            others = _pids(self.run_dir, self.outlive)
            while any(alive(pid) for pid in others) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        return child.wait()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        failures = 0
        while True:
            child = self.child = self._start()
            started = time.monotonic()
            while child.poll() is None and not self.stopping:
                time.sleep(0.1)
            if child.poll() is None:  # asked to stop
                return self._stop_child(child)
            code = child.returncode
            if self.stopping or not self.restart:
                return code
            ran = time.monotonic() - started
            failures = 1 if ran >= RESTART_STABLE_SECONDS else failures + 1
            delay = restart_delay(failures)
            self.log.warning(
                "process_exited",
                process=self.name,
                pid=child.pid,
                status=_exit_text(code),
                ran_s=round(ran, 1),
                restart_in_s=delay,
                failures=failures,
            )
            self._sleep(delay)
            if self.stopping:
                return code
            self.log.info("process_restarting", process=self.name, attempt=failures + 1)


def _logger() -> Any:
    """structlog as the API and the workers configure it (``LOG_FORMAT``)."""
    import structlog

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from app.logging import configure_logging

    configure_logging(os.environ.get("LOG_FORMAT", "json"))
    return structlog.get_logger("supervisor")


def main() -> None:
    parser = argparse.ArgumentParser(
        usage="service.py NAME [--wait] [--restart] [--outlive NAMES] -- COMMAND ...",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("name")
    parser.add_argument("--wait", action="store_true", help="wait for Redis, MongoDB, PostgreSQL")
    parser.add_argument("--outlive", default="", help="stop only after these processes")
    parser.add_argument("--restart", action="store_true", help="restart it when it exits")
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("no command given after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    run_dir = (
        Path(os.environ["STREAMSHOP_RUN_DIR"]) if os.environ.get("STREAMSHOP_RUN_DIR") else None
    )
    if run_dir is not None:
        (run_dir / f"{args.name}.pid").write_text(f"{os.getpid()}\n")
    if args.wait:
        wait_for_datastores(dict(os.environ))
    if args.outlive or args.restart:
        outlive = args.outlive.split(",") if args.outlive else []
        sys.exit(Supervisor(args.name, command, run_dir, outlive, args.restart).run())
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
