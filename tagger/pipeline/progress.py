"""Progress of a driver's loop: a bar with rate and ETA on a terminal, plain lines when not one.

A job's output is often piped or written to a log, where a redrawn bar leaves a wall of carriage
returns; there the progress is a line at most every ``every_s`` seconds (and at the end), each a
sentence a person can read: ``encode toy-rn: 1,200 / 3,000 images (40 %), 85 images/s, about 21 s left``.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress", "show_progress"]

_SHOWN = False


def show_progress(on: bool = True) -> None:
    """Whether the stages' drivers show their progress when a call does not say (the CLI, and so every
    job, turns it on; a library caller stays quiet unless it asks)."""
    global _SHOWN
    _SHOWN = bool(on)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Counts ``unit`` (plural: ``units``) up to ``total``; ``enabled=False`` shows nothing, None
    follows :func:`show_progress`.

    Used as a context manager; ``update(n)`` after each batch. On a terminal it is a tqdm bar;
    otherwise :meth:`line` sentences go to ``stream`` (standard error by default)."""

    def __init__(self, total: int, desc: str, unit: str, *, units: str | None = None, enabled: bool | None = None,
                 stream: IO[str] | None = None, every_s: float = 30.0, tty: bool | None = None) -> None:
        self.total, self.desc, self.unit, self.units = int(total), desc, unit, units or unit + "s"
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (_SHOWN if enabled is None else enabled) and total > 0
        self.every_s, self.done = every_s, 0
        self.t0 = self._last = time.monotonic()
        self._bar: Any = None
        is_tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        if self.enabled and is_tty:
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, desc=desc, unit=" " + self.units, file=self.stream,
                             dynamic_ncols=True, leave=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(finished=exc[0] is None)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.monotonic()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._write(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress so far as a sentence."""
        elapsed = max((now if now is not None else time.monotonic()) - self.t0, 1e-9)
        noun = self.unit if self.total == 1 else self.units
        text = f"{self.desc}: {self.done:,} / {self.total:,} {noun} ({100 * self.done / self.total:.0f} %)"
        if self.done and self.done < self.total:
            rate = self.done / elapsed
            text += f", {rate:,.1f} {self.units}/s, about {_duration((self.total - self.done) / rate)} left"
        elif self.done >= self.total:
            text += f" in {_duration(elapsed)}"
        return text

    def close(self, finished: bool = True) -> None:
        """End the display: the bar closes; in plain mode a final line when the loop finished."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and finished:
            self.enabled = False
            self._write(self.line())

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
