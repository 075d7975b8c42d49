"""Progress bars that suit both a terminal and a log file."""

import sys
from typing import TextIO

from tqdm.auto import tqdm


class LogLines:
    """A stream for tqdm that turns its in-place redraws ("\\r" + bar) into whole lines, so
    that a log file holds one readable line per refresh instead of one endless line (and
    not twice the same line: tqdm redraws the final state when it closes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.last = stream, None

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress(*args, **kwargs) -> tqdm:
    """tqdm that redraws every second on a terminal, and writes a line every 30 s to a log."""
    if sys.stderr.isatty():
        kwargs.setdefault("mininterval", 1.0)
        kwargs.setdefault("dynamic_ncols", True)
    else:
        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("file", LogLines(sys.stderr))
        kwargs.setdefault("ncols", 100)
    return tqdm(*args, **kwargs)


def note(message: str) -> None:
    """A notice on stderr that does not break a progress bar (stdout carries results)."""
    tqdm.write(message, file=sys.stderr)
