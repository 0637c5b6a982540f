"""Progress of long commands: a bar on a terminal, plain lines otherwise.

    with Progress(total=40, label="verify") as p:
        for f in files:
            check(f)
            p.advance(note=f)

On a TTY the bar is redrawn in place (at most 20 times a second); when the
stream is a pipe or a file, a plain line is written at most every
``interval`` seconds and at the end, so logs stay readable.  Progress goes to
stderr, leaving stdout to the command's results.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 28
_REDRAW_S = 0.05


class Progress:
    """Counts ``done`` out of ``total`` (None: unknown) and shows it."""

    def __init__(self, total: int | None, label: str, *, stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 1.0, tty: bool | None = None):
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.tty = _isatty(self.stream) if tty is None else tty
        self.done = 0
        self.note = ""
        self._start = time.monotonic()
        self._last = 0.0
        self._width = 0
        self._shown: tuple | None = None  # (done, note) of the last plain line
        self._closed = False

    def advance(self, n: int = 1, note: str = "") -> None:
        """Counts ``n`` more steps; ``note`` says what the last one was."""
        self.update(self.done + n, note)

    def update(self, done: int, note: str = "") -> None:
        """Sets the count; redraws if it is time to."""
        self.done = done
        self.note = note
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if self.tty:
            if finished or now - self._last >= _REDRAW_S:
                self._draw_bar()
                self._last = now
        elif finished or now - self._last >= self.interval:
            self._line()
            self._last = now

    def log(self, text: str) -> None:
        """Writes a line of text without garbling the bar."""
        if self.tty and self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty and self.enabled:
            self._draw_bar()

    def close(self) -> None:
        """Finishes the display (a final newline under the bar)."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.tty:
            self._draw_bar()
            self.stream.write("\n")
            self.stream.flush()
        elif self._shown != (self.done, self.note):
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- drawing -----------------------------------------------------------------

    def _counts(self) -> str:
        return f"{self.done}/{self.total}" if self.total is not None else str(self.done)

    def _draw_bar(self) -> None:
        elapsed = time.monotonic() - self._start
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            eta = (elapsed / frac - elapsed) if 0 < frac < 1 else 0.0
            tail = f" eta {eta:.0f}s" if 0 < frac < 1 and elapsed > 1 else f" {elapsed:.1f}s"
            text = f"{self.label} [{bar}] {self._counts()}{tail}"
        else:
            text = f"{self.label} {self._counts()} {elapsed:.1f}s"
        if self.note:
            text += f"  {self.note}"
        text = text[:_term_width() - 1]
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def _line(self) -> None:
        elapsed = time.monotonic() - self._start
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        note = f" {self.note}" if self.note else ""
        self._shown = (self.done, self.note)
        self.stream.write(f"{self.label}: {self._counts()}{pct} {elapsed:.1f}s{note}\n")
        self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _term_width() -> int:
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)
