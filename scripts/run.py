"""``make run``: bring the whole system up on this machine with honcho, and down again on Ctrl-C.

What it starts (each only when its URL is not given in the environment):

- Redis on ``REDIS_PORT`` (6380) under ``$STREAMSHOP_DATA_DIR/redis`` with AOF,
  ``appendfsync always`` and ``noeviction`` (config from ``scripts/redis.conf.template``);
- the embedded MongoDB-protocol server (``secantusd-py``) on ``MONGO_PORT`` (27018) under
  ``$STREAMSHOP_DATA_DIR/mongo``;
- and always the API on ``HOST:PORT`` (127.0.0.1:8000) and the workers of the ``Procfile``.

PostgreSQL is the machine's (``DATABASE_URL``). Provisioning (the datastores' config and
directories, the PostgreSQL database and role, installing missing servers, the JWT and email-digest secrets,
the processes' environment) is ``scripts/provision.py``; this file supervises: it claims
the data directory, hands the Procfile to honcho and checks the system once it is up.
Every Procfile process is started; a ``streamshop`` sub-command whose module is missing is
an error of the CLI, never skipped.

Running it twice is safe: a run still alive is reported, and processes left over by a run
that was killed with ``kill -9`` (found by their pid files and verified by their
environment) are stopped first.

A process that dies while the system runs is restarted with a capped backoff by its
``scripts/service.py`` wrapper (``--restart``); Ctrl-C still stops everything.

Views of another log: PostgreSQL (and MongoDB, when ``MONGO_URL`` is shared) may hold
views that another data directory's log built (two data directories on one database, or
``make clean`` then ``make run``). The projector, ``verify`` and the API refuse those; so
after start this script asks ``streamshop verify all --identity`` and rebuilds each view
it refuses from this log (``streamshop rebuild <view>``), into a version of this log's
own. The other log's view is left as it is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

# scripts/ is on sys.path: run.py, provision.py and service.py run as scripts
from provision import ROOT, VENV_BIN, Layout, RunError, provision, say
from servers import http_ok, mongo_ready, redis_ready
from service import alive

READY_SECONDS = float(os.environ.get("STREAMSHOP_READY_SECONDS", "180"))

# -- processes of earlier runs ------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _started_by(pid: int, run_dir: Path) -> bool:
    """Was ``pid`` started by a run on this data directory? (Its environment names the run dir.)"""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"STREAMSHOP_RUN_DIR={run_dir}".encode() in environ


def _stop(pid: int, name: str, timeout: float = 15.0) -> None:
    say(f"stopping {name} (pid {pid}) left over from an earlier run")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def claim_run_dir(run_dir: Path) -> None:
    """Refuse when a run on this data directory is alive; clean up after one that died."""
    run_dir.mkdir(parents=True, exist_ok=True)
    own = run_dir / "run.pid"
    pid = _read_pid(own)
    if pid and pid != os.getpid() and alive(pid):
        cmdline = Path(f"/proc/{pid}/cmdline")
        if not cmdline.exists() or b"run.py" in cmdline.read_bytes():
            raise RunError(
                f"streamshop is already running on {run_dir.parent} (pid {pid}); "
                f"stop it with Ctrl-C (or `kill -INT {pid}`) first"
            )
    pidfiles = sorted(run_dir.glob("*.pid"), key=lambda p: p.name != "honcho.pid")
    for path in pidfiles:
        if path == own:
            continue
        pid = _read_pid(path)
        if pid and alive(pid) and _started_by(pid, run_dir):
            _stop(pid, path.stem)
        path.unlink(missing_ok=True)
    own.write_text(f"{os.getpid()}\n")


# -- the Procfile ---------------------------------------------------------------------------


def select_processes(local: set[str]) -> dict[str, str]:
    """The Procfile's processes this run needs, in order (``local``: the servers we start)."""
    selected: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if not sep or line.lstrip().startswith("#"):
            continue
        name = name.strip()
        if name in ("redis", "mongo") and name not in local:
            continue
        selected[name] = command.strip()
    return selected


# -- after start: checks, first admin, the banner -----------------------------------------


class Run:
    """One ``make run``: honcho as a child in its own session, this process as its supervisor."""

    def __init__(self, layout: Layout, env: dict[str, str], processes: dict[str, str]) -> None:
        self.layout = layout
        self.env = env
        self.processes = processes
        self.stopping = threading.Event()
        self.honcho: subprocess.Popen[bytes] | None = None
        self.demo: subprocess.Popen[str] | None = None

    def stop(self, signum: int = signal.SIGINT, reason: str = "") -> None:
        if reason:
            say(reason)
        self.stopping.set()
        if self.demo and self.demo.poll() is None:
            self.demo.terminate()
        if self.honcho and self.honcho.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.honcho.send_signal(signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signum)

    def _wait(self, ready: object, what: str) -> bool:
        deadline = time.monotonic() + READY_SECONDS
        while not self.stopping.is_set():
            if ready():  # type: ignore[operator]
                return True
            if time.monotonic() > deadline:
                self.stop(reason=f"{what} did not come up within {READY_SECONDS:.0f}s; stopping")
                return False
            time.sleep(0.25)
        return False

    def _streamshop(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "streamshop"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    def after_start(self) -> None:
        """Check Redis (refuse an evicting one), create the first admin, then print the URLs."""
        env = self.env
        if not self._wait(lambda: redis_ready(env["REDIS_URL"]), "Redis"):
            return
        check = self._streamshop("check")
        for line in (check.stdout + check.stderr).splitlines():
            say(f"check: {line}")
        if check.returncode != 0:
            self.stop(reason="Redis was refused by `streamshop check`; stopping")
            return
        if not self._wait(lambda: mongo_ready(env["MONGO_URL"]), "MongoDB"):
            return
        self.own_views()
        self.create_admin()
        api = f"http://{self.layout.api_host}:{self.layout.api_port}"
        if "api" in self.processes and not self._wait(lambda: http_ok(f"{api}/health"), "API"):
            return
        lines = ["", "streamshop is up:"]
        if "api" in self.processes:
            lines += [
                f"  API          {api}",
                f"  OpenAPI      {api}/schema/swagger",
                f"  health       {api}/health  (readiness: {api}/ready)",
            ]
        lines += [
            f"  Redis        {env['REDIS_URL']}",
            f"  MongoDB      {env['MONGO_URL']} (database {env.get('MONGO_DB', 'streamshop')})",
            f"  PostgreSQL   {env['DATABASE_URL']}",
            f"  data         {self.layout.data}",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        print("\n".join(lines), flush=True)
        self.populate_demo()

    def own_views(self) -> None:
        """Rebuild, from this log, every view that was built from another log (see the module
        docstring); the projector refuses them meanwhile and is restarted after."""
        check = self._streamshop("verify", "all", "--identity")
        if check.returncode == 0:
            return
        refused = [line for line in check.stdout.splitlines() if ": refused: " in line]
        if check.returncode != 4 or not refused:
            detail = (check.stdout + check.stderr).strip()[-500:]
            say(f"could not check which log the views were built from: {detail}")
            return
        for line in refused:
            view = line.split(":", 1)[0]
            say(line)
            say(f"rebuilding {view} from this log (the other log's view is kept)")
            result = self._streamshop("rebuild", view, "--no-progress")
            for out in result.stdout.splitlines():
                say(f"rebuild: {out}")
            if result.returncode != 0:
                say(
                    f"rebuild of {view} failed (exit {result.returncode}): "
                    f"{result.stderr.strip()[-500:]}; run `streamshop rebuild {view}`"
                )

    def populate_demo(self) -> None:
        """On first start, a demo shop through ``streamshop demo`` (``DEMO=0`` skips it).

        A marker in the data directory keeps later starts from running it again (the command
        itself adds nothing on a re-run either)."""
        marker = self.layout.data / "demo-created"
        if self.env.get("DEMO", "1").lower() in ("0", "false", "no") or marker.exists():
            return
        if self.stopping.is_set():
            return
        say("populating a demo shop (set DEMO=0 to skip)")
        self.demo = subprocess.Popen(
            [str(VENV_BIN / "streamshop"), "demo"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = self.demo.communicate()
        if self.demo.returncode == 0:
            marker.write_text(out)
            for line in out.splitlines():
                say(f"demo: {line}")
        elif not self.stopping.is_set():
            say(f"demo failed (exit {self.demo.returncode}): {err.strip()[-500:]}")

    def create_admin(self) -> None:
        email, password = self.env.get("ADMIN_EMAIL"), self.env.get("ADMIN_PASSWORD")
        marker = self.layout.data / "admin-created"
        if not (email and password) or marker.exists():
            return
        result = self._streamshop("create-admin", "--email", email, "--password", password)
        if result.returncode == 0:
            marker.write_text(f"{email}\n")
            say(f"created admin {email}")
        else:
            say(f"create-admin failed (exit {result.returncode}): {result.stderr.strip()}")

    def reap(self, timeout: float = 20.0) -> None:
        """After honcho: wait for every recorded process (a datastore may still be flushing)."""
        pidfiles = list(self.layout.run_dir.glob("*.pid"))
        deadline = time.monotonic() + timeout
        for path in pidfiles:
            pid = _read_pid(path)
            if pid and pid != os.getpid() and _started_by(pid, self.layout.run_dir):
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if alive(pid):
                    say(f"{path.stem} (pid {pid}) is still running after {timeout:.0f}s")
                    continue
            path.unlink(missing_ok=True)

    def run(self) -> int:
        procfile = self.layout.run_dir / "Procfile"
        procfile.write_text("".join(f"{n}: {c}\n" for n, c in self.processes.items()))
        command = [sys.executable, "-m", "honcho", "start", "-f", str(procfile), "-d", str(ROOT)]
        if not sys.stdout.isatty():
            command.append("--no-colour")
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.honcho = subprocess.Popen(command, env=self.env, cwd=ROOT, start_new_session=True)
        (self.layout.run_dir / "honcho.pid").write_text(f"{self.honcho.pid}\n")
        threading.Thread(target=self.after_start, name="after-start", daemon=True).start()
        returncode = self.honcho.wait()
        if self.demo and self.demo.poll() is None:
            self.demo.terminate()
        self.reap()
        if self.stopping.is_set() and returncode in (0, 130, 143):
            say("stopped")
            return 0
        say(
            f"a process could not be kept running (honcho exit {returncode}); everything was "
            "stopped, see above"
        )
        return returncode or 1


def prepare(env: dict[str, str]) -> tuple[Layout, dict[str, str], dict[str, str]]:
    """Claim the data directory, provision (``scripts/provision.py``), pick the processes."""
    layout = Layout.from_env(env)
    claim_run_dir(layout.run_dir)
    env, local = provision(layout, env)
    return layout, env, select_processes(local)


def main() -> int:
    os.chdir(ROOT)
    try:
        layout, env, processes = prepare(dict(os.environ))
    except KeyboardInterrupt:
        print("make run: interrupted before start", file=sys.stderr)
        return 130
    except RunError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        own = Layout.from_env(dict(os.environ)).run_dir / "run.pid"
        if _read_pid(own) == os.getpid():
            own.unlink()
        return 1
    return Run(layout, env, processes).run()


if __name__ == "__main__":
    sys.exit(main())
