"""The run's progress: steps for a run of fixed length, the lead process's clock under a time budget."""

import pytest

from byol.train.budget import Budget, length_estimate


def test_a_run_of_fixed_length_is_as_far_as_its_steps():
    budget = Budget(total_steps=1000, seconds=None, warmup_steps=10)
    assert budget.advance(250) == 0.25
    assert budget.warmup_progress == 0.01
    budget.agree(250, lead_seconds=9999.0)  # no time budget: the clock is ignored
    assert budget.progress(500) == 0.5
    assert not budget.done(999) and budget.done(1000)


def test_under_a_time_budget_progress_follows_the_agreed_clock_and_never_goes_back():
    budget = Budget(total_steps=10**6, seconds=60.0, warmup_steps=0)
    budget.agree(10, lead_seconds=3.0)  # 0.3 s a step, warm-up included
    assert budget.advance(10) == pytest.approx(3 / 60)
    assert budget.advance(20) == pytest.approx(3 / 60)  # one interval: not extrapolated
    budget.agree(20, lead_seconds=5.0)  # 0.2 s a step
    assert budget.advance(21) == pytest.approx(5.2 / 60)  # extrapolated at the faster pace
    assert budget.progress(30) == pytest.approx(7 / 60)  # 5 s + 10 steps of 0.2 s
    budget.advance(30)
    budget.agree(30, lead_seconds=6.0)  # faster than extrapolated: 0.1 s a step
    assert budget.progress(30) == pytest.approx(7 / 60)  # 6 / 60 would go back: it holds
    assert budget.progress(50) == pytest.approx(8 / 60)  # 6 s + 20 steps of 0.1 s
    assert not budget.done(569)  # 6 + 539 * 0.1 = 59.9 s
    assert budget.done(570)  # 6 + 540 * 0.1 = 60 s


def test_one_slow_interval_does_not_end_a_time_budgeted_run_early():
    """The compiler's first steps, a recompile or a paused machine: extrapolating at that
    interval's pace would count seconds not spent, and end the run before its budget."""
    budget = Budget(total_steps=10**6, seconds=180.0, warmup_steps=0)
    budget.agree(50, lead_seconds=113.0)  # 110 s of compiling, then 50 steps of 0.06 s
    assert not budget.done(80)  # at 2.26 s a step, 113 + 30 * 2.26 = 180.8 s would end it here
    assert budget.progress(80) == pytest.approx(113 / 180)
    budget.agree(100, lead_seconds=116.0)  # 0.06 s a step
    assert budget.progress(150) == pytest.approx(119 / 180)
    budget.agree(150, lead_seconds=176.0)  # a recompile: 1.2 s a step over this interval
    assert budget.progress(200) == pytest.approx(179 / 180)  # still extrapolated at 0.06 s
    budget.agree(200, lead_seconds=179.0)
    assert budget.done(217) and not budget.done(216)  # 179 + 17 * 0.06 = 180.02 s


def test_under_a_time_budget_the_warm_up_ends_where_its_steps_do():
    budget = Budget(total_steps=10**6, seconds=60.0, warmup_steps=20)
    budget.agree(5, lead_seconds=1.0)
    budget.agree(10, lead_seconds=2.0)
    budget.advance(20)
    assert budget.warmup_progress == pytest.approx(4 / 60)


def test_the_step_count_still_ends_a_time_budgeted_run():
    budget = Budget(total_steps=100, seconds=3600.0, warmup_steps=0)
    budget.agree(50, lead_seconds=1.0)
    assert budget.progress(50) == 0.5 and budget.done(100)


def test_the_expected_length_follows_the_pace():
    budget = Budget(total_steps=10**6, seconds=60.0, warmup_steps=0)
    assert budget.expected_steps(0) == 10**6  # nothing known yet: the step cap
    budget.agree(100, lead_seconds=6.0)
    budget.advance(100)
    assert budget.expected_steps(100) == 1000  # a tenth of the budget in 100 steps


def test_asking_for_progress_or_done_changes_nothing():
    budget = Budget(total_steps=10**6, seconds=60.0, warmup_steps=20)
    budget.agree(5, lead_seconds=1.5)
    budget.agree(10, lead_seconds=3.0)
    before = dict(vars(budget))
    assert budget.progress(20) == pytest.approx(6 / 60) and not budget.done(20) and budget.done(10**6)
    assert vars(budget) == before  # neither `reached` nor the warm-up's end moved
    budget.agree(20, lead_seconds=2.0)  # a faster clock: without an advance, nothing held the old answer
    assert budget.progress(20) == pytest.approx(2 / 60)


def test_the_estimate_of_a_run_of_fixed_length_and_a_cpu_run_over_a_day_says_how_to_shorten_it():
    budget = Budget(total_steps=1025, seconds=None, warmup_steps=0)
    assert length_estimate(budget, 25, 10.0, 0.3, "cpu") == "estimate: 0.3 s a step, so 5 min for the 1000 steps left"
    long = Budget(total_steps=100_025, seconds=None, warmup_steps=0)
    line = length_estimate(long, 25, 10.0, 2.0, "cpu")  # 200,000 s
    assert line.startswith("estimate: 2 s a step, so 2.3 days for the 100000 steps left: more than a day on this CPU;")
    assert "--minutes 60" in line and "\n" not in line
    assert "more than a day" not in length_estimate(long, 25, 10.0, 2.0, "cuda")  # a GPU run is the user's plan


def test_under_a_time_budget_the_estimate_counts_the_steps_the_budget_leaves():
    budget = Budget(total_steps=10**6, seconds=60.0, warmup_steps=0)
    assert length_estimate(budget, 25, 10.0, 0.5, "cpu") == (
        "estimate: 0.5 s a step, so about 100 more steps before the run ends (50 s of training)")
