"""How far a run is, in [0, 1]: what the schedules follow and when the run ends.

A run of fixed length is at steps done / total steps. Under a time budget it is at training
seconds / budget, measured on the lead process's clock alone: the processes agree on that
clock at sync steps (`agree`), and between them every process extrapolates it at the faster
of the last two intervals' paces. So the progress of a step is the same number in every
process, the schedules are the same, and every process stops at the same step; and since
progress never goes back, the schedules move smoothly where a re-estimated step count would
jump. One slow interval (the compiler's first steps, a recompile, a paused machine) never
makes the run end early: extrapolating at its pace would count time that was not spent.
Until two intervals are measured the clock is not extrapolated; an underestimate costs at
most one interval past the budget, an overestimate the rest of the budget.
"""

from __future__ import annotations


class Budget:
    def __init__(self, total_steps: int, seconds: float | None, warmup_steps: int) -> None:
        self.total_steps, self.seconds, self.warmup_steps = total_steps, seconds, warmup_steps
        self.warmup_progress = warmup_steps / total_steps  # re-set where warm-up ends under a time budget
        self.synced_step, self.synced_seconds, self.seconds_per_step = 0, 0.0, 0.0
        self.last_paces: list[float] = []  # seconds a step over the last two intervals between syncs
        self.reached = 0.0

    def agree(self, step: int, lead_seconds: float) -> None:
        """The lead process's training seconds after `step` steps, as every process received them."""
        if self.seconds is None:
            return
        if step > self.synced_step:
            pace = (lead_seconds - self.synced_seconds) / (step - self.synced_step)
            self.last_paces = [*self.last_paces[-1:], pace]
            self.seconds_per_step = min(self.last_paces) if len(self.last_paces) == 2 else 0.0
        self.synced_step, self.synced_seconds = step, lead_seconds

    def progress(self, step: int) -> float:
        """The progress when `step` steps are done, at least what `advance` last reached; it
        changes nothing, so asking is free."""
        done = step / self.total_steps
        if self.seconds is not None:
            elapsed = self.synced_seconds + (step - self.synced_step) * self.seconds_per_step
            done = max(done, elapsed / self.seconds)
        return max(self.reached, min(done, 1.0))

    def advance(self, step: int) -> float:
        """Move on to `step` (steps in order): its progress, which later answers never go below;
        under a time budget, the step where the warm-up ends records its progress."""
        self.reached = self.progress(step)
        if step == self.warmup_steps and self.seconds is not None:
            self.warmup_progress = self.reached
        return self.reached

    def done(self, step: int) -> bool:
        return self.progress(step) >= 1.0

    def expected_steps(self, step: int) -> int:
        """The run's length in steps as it now looks (for the progress bar)."""
        return min(self.total_steps, max(step, round(step / self.reached))) if self.reached else self.total_steps


ESTIMATE_STEPS = (5, 25)  # a run's pace is timed between these of its steps: the first ones warm up
DAY = 86_400.0


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.1f} days"


def length_estimate(budget: Budget, step: int, train_seconds: float, pace: float, device_type: str) -> str:
    """One line: what the rest of the run takes at `pace` seconds a step; a CPU run without a
    time budget that would take more than a day says so, and how to shorten it."""
    remaining = budget.total_steps - step
    if budget.seconds is not None:
        steps = min(remaining, round(max(budget.seconds - train_seconds, 0.0) / pace))
        return (f"estimate: {pace:.3g} s a step, so about {steps} more steps before the run ends "
                f"({duration(steps * pace)} of training)")
    line = f"estimate: {pace:.3g} s a step, so {duration(remaining * pace)} for the {remaining} steps left"
    if device_type == "cpu" and remaining * pace > DAY:
        line += (": more than a day on this CPU; give it a time budget (--minutes 60), fewer --epochs, or a "
                 "smaller network (--width 0.125 --batch-size 32, as in --preset cifar10-cpu)")
    return line
