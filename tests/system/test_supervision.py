"""``make run`` keeps the system up when one process dies: the dead process is restarted
(with backoff, logged) instead of honcho stopping everything; Ctrl-C still stops all.

And a second data directory on the same PostgreSQL database (two ``make run`` data
directories, or ``make clean`` then ``make run``) does not mix its log into the first's
views: the run rebuilds them from its own log and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.servers import free_port
from tests.system.test_make_run import (  # noqa: F401
    ROOT,
    System,
    assert_stopped_cleanly,
    health,
    system_fixture,
)

COMES_BACK_SECONDS = 90.0


def worker_pids(run_dir: Path, subcommand: str) -> list[int]:
    """Pids of ``streamshop <subcommand>`` processes started by the run on ``run_dir`` (not
    their wrappers), found from /proc whatever the wrapper does."""
    pids = []
    marker = f"STREAMSHOP_RUN_DIR={run_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker not in environ or any(a.endswith(b"service.py") for a in argv):
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg.rsplit(b"/", 1)[-1] == b"streamshop" and argv[i + 1] == subcommand.encode():
                pids.append(int(entry.name))
    return pids


def http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def leases_taken_by(system: System, pid: int) -> bool:
    """The projector ``pid`` owns partitions again (its consumer name carries its pid)."""
    return any(
        '"lease_acquired"' in line and f"-{pid}-" in line for line in system.output().splitlines()
    )


def one_worker(system: System, subcommand: str) -> int:
    run_dir = system.data / "run"
    deadline = time.monotonic() + COMES_BACK_SECONDS
    while time.monotonic() < deadline:
        assert system.process is not None
        if system.process.poll() is not None:
            pytest.fail(f"run.py exited with {system.process.returncode}:\n{system.output()}")
        pids = worker_pids(run_dir, subcommand)
        if len(pids) == 1:
            return pids[0]
        time.sleep(0.2)
    pytest.fail(f"no single `streamshop {subcommand}` process:\n{system.output()[-4000:]}")


def test_a_killed_projector_is_restarted_and_the_system_keeps_answering(system: System) -> None:
    system.start()
    system.wait_until_up()
    first = one_worker(system, "project")

    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + COMES_BACK_SECONDS
    while True:
        assert system.process is not None
        if system.process.poll() is not None:
            pytest.fail(
                f"killing the projector stopped the system (run.py exit "
                f"{system.process.returncode}):\n{system.output()[-4000:]}"
            )
        pids = worker_pids(system.data / "run", "project")
        if pids and first not in pids and leases_taken_by(system, pids[0]):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the projector did not come back:\n{system.output()[-4000:]}")
        time.sleep(0.2)
    assert health(system.api_port) == 200
    assert http_status(system.api_port, "/ready") == 200
    assert http_status(system.api_port, "/products") == 200
    exits = [
        json.loads(line[line.index("{") :])
        for line in system.output().splitlines()
        if '"process_exited"' in line and "{" in line
    ]
    assert any(e["process"] == "projector" and "SIGKILL" in e["status"] for e in exits), exits
    assert_stopped_cleanly(system, system.interrupt())


def test_a_second_data_directory_on_the_same_database_rebuilds_its_own_views(
    system: System, tmp_path: Path
) -> None:
    system.start()
    system.wait_until_up()
    assert_stopped_cleanly(system, system.interrupt())

    other = System(
        tmp_path / "other",
        {**system.env, "STREAMSHOP_DATA_DIR": str(tmp_path / "other")},
        free_port(),
        free_port(),
        free_port(),
    )
    other.env |= {
        "PORT": str(other.api_port),
        "REDIS_PORT": str(other.redis_port),
        "MONGO_PORT": str(other.mongo_port),
    }
    try:
        other.start()
        other.wait_until_up()
        deadline = time.monotonic() + COMES_BACK_SECONDS
        while "rebuild: warehouse: now on version" not in other.output():
            if time.monotonic() > deadline:
                pytest.fail(f"the second run did not rebuild its views:\n{other.output()[-4000:]}")
            time.sleep(0.5)
        assert "warehouse: refused: warehouse view (schema dw) was built from log" in (
            other.output()
        )
        one_worker(other, "project")
        env = {
            **other.env,
            "REDIS_URL": f"redis://127.0.0.1:{other.redis_port}/0",
            "MONGO_URL": f"mongodb://127.0.0.1:{other.mongo_port}",
        }
        verified = subprocess.run(
            [sys.executable, "-m", "workers.cli", "verify", "all", "--identity"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
        assert_stopped_cleanly(other, other.interrupt())
    finally:
        if other.process is not None and other.process.poll() is None:
            other.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                other.process.wait(timeout=30)
        for pid in other.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
