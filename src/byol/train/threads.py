"""Threads that fit the machine now: torch's intra-op thread count chosen from the pace of the
run's own steps.

OpenMP threads meet at a barrier after every parallel region, so one thread that shares its
core with another process holds up all of them: on 2 cores beside one busy process, the
cifar10-cpu preset ran 5x slower with 2 threads than alone, and faster with 1. With
`threads: 0` a CPU run times a few of its real steps at each candidate count (all cores,
half of them, one), keeps the fastest, and times them again when its pace falls by a third
or after a while (the other load may have ended). `--threads N` pins N.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from byol.config import Config
from byol.train.recipe import usable_cores

STEPS_EACH = 6  # steps timed at each count (after one step to settle in)
SLOWDOWN = 1.3  # a pace this much slower than the chosen count's starts a new trial
RECHECK_SECONDS = 120.0  # and so does this much training since the last one (at least TRIAL_SHARE of it trialled)
TRIAL_SHARE = 0.05


class ThreadTuner:
    """Feed it each step's seconds; it says when to change the thread count, and to what."""

    def __init__(self, cores: int) -> None:
        self.candidates = sorted({cores, max(1, cores // 2), 1}, reverse=True)
        self.trying: list[int] = list(self.candidates)  # counts still to time in this trial; empty: running
        self.paces: dict[int, list[float]] = {}  # seconds of the steps timed at each count in this trial
        self.chosen = cores
        self.chosen_pace: float | None = None  # median seconds a step at `chosen` when it was chosen
        self.recent: list[float] = []  # the last STEPS_EACH steps' seconds since then
        self.trial_seconds = self.since_trial = 0.0

    @property
    def current(self) -> int:
        return self.trying[0] if self.trying else self.chosen

    def step_took(self, seconds: float) -> int | None:
        """The count to use from the next step on when it differs from the current one, else None."""
        before = self.current
        if self.trying:
            self._time(seconds)
        else:
            self._watch(seconds)
        return self.current if self.current != before else None

    def _time(self, seconds: float) -> None:
        self.trial_seconds += seconds
        timed = self.paces.setdefault(self.trying[0], [])
        timed.append(seconds)
        if len(timed) <= STEPS_EACH:  # the first step at a count is its settling in, not timed
            return
        self.trying.pop(0)
        if not self.trying:
            medians = {count: statistics.median(paces[1:]) for count, paces in self.paces.items()}
            self.chosen = min(medians, key=lambda count: (medians[count], -count))
            self.chosen_pace, self.recent, self.since_trial = medians[self.chosen], [], 0.0

    def _watch(self, seconds: float) -> None:
        self.recent = (self.recent + [seconds])[-STEPS_EACH:]
        self.since_trial += seconds
        slower = len(self.recent) == STEPS_EACH and statistics.median(self.recent) > SLOWDOWN * self.chosen_pace
        if slower or self.since_trial > max(RECHECK_SECONDS, self.trial_seconds / TRIAL_SHARE):
            self.trying = [self.chosen] + [c for c in self.candidates if c != self.chosen]
            self.paces, self.trial_seconds = {}, 0.0

    def why(self) -> str:
        """The last trial's paces, for the run's notice."""
        medians = {count: statistics.median(paces[1:]) for count, paces in self.paces.items() if len(paces) > 1}
        timed = ", ".join(f"{seconds:.3f} s at {count}" for count, seconds in sorted(medians.items(), reverse=True))
        return f"{self.chosen} thread{'s' if self.chosen > 1 else ''} is fastest now (a step takes {timed})"


def within_cores(config: Config) -> tuple[Config, list[str]]:
    """`--threads N` above the cores this process may use would only make threads wait on each
    other (999 on 2 cores stalled a run for minutes): N is cut to the cores, and a line says so."""
    cores = usable_cores()
    if config.threads <= cores:
        return config, []
    return replace(config, threads=cores), [f"threads {config.threads} is more than the {cores} cores this process "
                                            f"may use: {cores} threads instead"]
