"""A run's pace between two log lines: images a second, and the share of that time spent
waiting for the loader."""

from __future__ import annotations

import time


class Throughput:
    """Counts the images trained since the window began; `read` gives the pace and starts the next window."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.images = 0
        self.wait_at_start = 0.0  # the loader's total wait when the window began

    def restart(self, wait_seconds: float) -> None:
        """A new window from now (time before it, e.g. k-NN, does not count)."""
        self.start, self.images, self.wait_at_start = time.perf_counter(), 0, wait_seconds

    def count(self, images: int) -> None:
        self.images += images

    def read(self, wait_seconds: float) -> tuple[float, float]:
        """(images a second, the share of the window the loader was waited for) since the window
        began, given the loader's total wait now; the next window begins."""
        now = time.perf_counter()
        seconds = now - self.start
        pace = (self.images / seconds, (wait_seconds - self.wait_at_start) / seconds)
        self.start, self.images, self.wait_at_start = now, 0, wait_seconds
        return pace
