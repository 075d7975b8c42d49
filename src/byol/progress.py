"""Progress bars that suit both a terminal and a log file."""

import sys

from tqdm.auto import tqdm


def progress(*args, **kwargs) -> tqdm:
    """tqdm that redraws every second on a terminal, and writes a line every 30 s to a log."""
    kwargs.setdefault("mininterval", 1.0 if sys.stderr.isatty() else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(*args, **kwargs)


def note(message: str) -> None:
    """A notice on stderr that does not break a progress bar (stdout carries results)."""
    tqdm.write(message, file=sys.stderr)
