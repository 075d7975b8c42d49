"""A run's clock: training time (k-NN evaluation left out), images a second and the loader's
share of the time between two log lines, and the seconds a step takes once the run is under
way (for the one line that estimates its length)."""

from __future__ import annotations

import time

from byol.train.budget import ESTIMATE_STEPS


class Pace:
    """Read at every step (`tick`), at every log line (`read`), and restarted where time must not count."""

    def __init__(self, step: int, train_seconds: float) -> None:
        self.first_step, self.first_seconds = step, train_seconds  # where this process started (or resumed)
        self.clock = 0.0  # the last tick, or restart
        self.window_start, self.images, self.wait_at_start = 0.0, 0, 0.0  # since the last log line
        self.timed_from: float | None = None  # training seconds at the first of ESTIMATE_STEPS

    def restart(self, wait_seconds: float) -> None:
        """Time counts from now (not the time before it, e.g. on k-NN); `wait_seconds` is the loader's total wait."""
        self.clock = self.window_start = time.perf_counter()
        self.images, self.wait_at_start = 0, wait_seconds

    def tick(self, images: int) -> float:
        """The seconds since the last tick (or restart): the step just taken, `images` more in the window."""
        now = time.perf_counter()
        seconds, self.clock = now - self.clock, now
        self.images += images
        return seconds

    def read(self, wait_seconds: float) -> tuple[float, float]:
        """(images a second, the share of the window spent waiting for the loader) since the last
        log line, given the loader's total wait now; the next window begins."""
        now = time.perf_counter()
        seconds = now - self.window_start
        pace = (self.images / seconds, (wait_seconds - self.wait_at_start) / seconds)
        self.window_start, self.images, self.wait_at_start = now, 0, wait_seconds
        return pace

    def step_seconds(self, step: int, train_seconds: float) -> float | None:
        """The seconds a step took between ESTIMATE_STEPS into this process's run, once, at the second of them."""
        into_run = step - self.first_step
        if into_run == ESTIMATE_STEPS[0]:
            self.timed_from = train_seconds
        elif into_run == ESTIMATE_STEPS[1] and self.timed_from is not None:
            return (train_seconds - self.timed_from) / (ESTIMATE_STEPS[1] - ESTIMATE_STEPS[0])
        return None

    def loader_share(self, wait_seconds: float, train_seconds: float) -> float:
        """The loader's share of this process's training time."""
        return wait_seconds / max(train_seconds - self.first_seconds, 1e-9)
