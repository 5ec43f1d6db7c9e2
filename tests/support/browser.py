"""A headless Chromium driven over the Chrome DevTools Protocol: the browser tests' one tool.

Only what the tests need: open a page, evaluate script in it, wait for a condition, take a
screenshot, and record the URL of every request the page makes. The protocol is JSON over
a WebSocket (the ``websockets`` package already comes with uvicorn), so no browser driver
or download is needed beyond Debian's ``chromium`` package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``$CHROMIUM`` if set, else the first Chromium on ``PATH``."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(AssertionError):
    pass


class Page:
    """One tab: commands go out with an id, their replies and the events come back."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.requests: list[str] = []
        """Every URL the page asked for (``Network.requestWillBeSent``), in order."""
        self.console: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self.waiting:
                self.waiting.pop(msg["id"]).set_result(msg)
            elif msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(msg["params"]["exceptionDetails"])[:500])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = reply
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        async with asyncio.timeout(30):
            msg = await reply
        if "error" in msg:
            raise BrowserError(f"{method}: {msg['error']}")
        return dict(msg.get("result", {}))

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def eval(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within: float = 30.0, what: str = "") -> Any:
        """The first truthy value of ``expression``, polled (a failure shows the console)."""
        deadline = time.monotonic() + within
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"timed out after {within}s waiting for {what or expression}; "
                    f"console: {self.console[-10:]}"
                )
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(executable: str, width: int = 1280, height: int = 1000) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab, gone afterwards (profile included)."""
    with tempfile.TemporaryDirectory(prefix="streamshop-chromium-") as profile:
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [
                executable,
                "--headless=new",
                "--no-sandbox",  # the test machine runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                f"--window-size={width},{height}",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its helpers (renderer, crashpad) share its group
        )
        try:
            port = await asyncio.to_thread(_devtools_port, proc)
            target = await asyncio.to_thread(_new_tab, port)
            async with connect(target, max_size=None) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send("Network.enable")
                try:
                    yield page
                finally:
                    page.reader.cancel()
        finally:
            await asyncio.to_thread(_stop_group, proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and every helper process it started, and wait until all are gone.

    Waiting for the main process alone is not enough: a helper still writing into the
    profile made the profile's removal fail (``Directory not empty: 'Default'``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    # A helper gone to a zombie has closed its files, and kill(…, 0) still finds it, so
    # the wait is bounded: SIGKILL at 10 s, then 5 s more at most.
    killed_at: float | None = None
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break  # the group is empty
        now = time.monotonic()
        if killed_at is None and now >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            killed_at = now
        elif killed_at is not None and now >= killed_at + 5:
            break
        time.sleep(0.05)
    proc.wait(timeout=10)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _devtools_port(proc: subprocess.Popen[bytes]) -> int:
    """Chromium prints ``DevTools listening on ws://127.0.0.1:<port>/...`` on stderr."""
    assert proc.stderr is not None
    seen: list[str] = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        seen.append(line)
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if found:
            # Keep reading, so a chatty browser never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return int(found.group(1))
    raise BrowserError(f"chromium exited with {proc.wait()}: {''.join(seen)[-2000:]}")


def _new_tab(port: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.loads(resp.read())["webSocketDebuggerUrl"])
