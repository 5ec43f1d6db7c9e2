"""The progress of a long replay (rebuild, verify, state rebuild, export): events done /
total, events/s and ETA, as a bar on a terminal and as log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import structlog

log = structlog.get_logger("workers.rebuild")


class Progress:
    """Events done / total, events/s and ETA: a bar on a terminal, log lines otherwise."""

    def __init__(
        self,
        view: str,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 2.0,
        enabled: bool = True,
    ) -> None:
        self.view = view
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if not self.tty else 0.1
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self.phase = "replay"
        self.started = time.monotonic()
        self._shown = 0.0

    def start(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.show(force=True)

    def set_phase(self, phase: str, total: int | None = None) -> None:
        self.phase = phase
        if total is not None:
            self.total = max(total, self.done)
        self.show(force=True)

    def add(self, count: int) -> None:
        self.done += count
        self.total = max(self.total, self.done)
        self.show()

    def figures(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        return {
            "done": self.done,
            "total": self.total,
            "events_per_s": round(rate, 1),
            "eta_s": round(left / rate, 1) if rate > 0 else None,
        }

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < self.interval:
            return
        self._shown = now
        f = self.figures()
        if not self.tty:
            log.info("rebuild_progress", view=self.view, phase=self.phase, **f)
            return
        width = 30
        share = f["done"] / f["total"] if f["total"] else 1.0
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        eta = "--:--" if f["eta_s"] is None else _clock(f["eta_s"])
        self.stream.write(
            f"\r{self.view:<11} [{bar}] {share:6.1%} {f['done']:>10,}/{f['total']:<10,} "
            f"{f['events_per_s']:>9,.0f} ev/s  ETA {eta}  {self.phase:<10}"
        )
        self.stream.flush()

    def finish(self) -> None:
        self.show(force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
