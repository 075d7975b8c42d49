"""The schedules, checked against values worked out by hand."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byol.core.schedules import SIZE_RAMP_END, lr_at, scaled_lr, size_at, tau_at


@pytest.mark.parametrize("progress, tau_base, expected", [
    (0.0, 0.996, 0.996),
    (0.5, 0.996, 0.998),  # cos(pi/2) = 0: halfway from tau_base to 1
    (1 / 3, 0.9, 0.925),  # cos(pi/3) = 1/2: 1 - 0.1 * 3/4
    (0.25, 0.99, 0.99146446609),  # cos(pi/4) = 0.70710678: 1 - 0.01 * 0.85355339
    (1.0, 0.996, 1.0),
    (1.2, 0.996, 1.0),  # past the end (a time budget's last step): stays at 1
])
def test_tau_rises_from_tau_base_to_one_along_the_cosine(progress, tau_base, expected):
    assert tau_at(progress, tau_base) == pytest.approx(expected, abs=1e-10)


def test_constant_tau_schedule_keeps_tau_base_to_the_end():
    assert [tau_at(p, 0.95, "constant") for p in (0, 0.5, 1)] == [0.95, 0.95, 0.95]


@pytest.mark.parametrize("step, expected", [
    (0, 0.0), (5, 0.4), (10, 0.8),  # linear warm-up over 10 steps
    (35, 0.68284271247),  # a quarter into the decay: 0.8 * (1 + cos(pi/4)) / 2
    (60, 0.4),  # halfway: 0.8 * (1 + 0) / 2
    (110, 0.0),
])
def test_lr_of_a_run_of_fixed_length_warms_up_then_decays_to_zero(step, expected):
    total, warmup = 110, 10
    assert lr_at(step, step / total, warmup, warmup / total, 0.8) == pytest.approx(expected, abs=1e-10)


def test_lr_under_a_time_budget_decays_from_where_warm_up_ended():
    # warm-up ended at 20% of the budget; at 60% the decay is halfway
    assert lr_at(500, 0.6, warmup_steps=100, warmup_progress=0.2, peak_lr=1.0) == pytest.approx(0.5)
    assert lr_at(100, 0.2, warmup_steps=100, warmup_progress=0.2, peak_lr=1.0) == pytest.approx(1.0)


def test_lr_scales_linearly_with_batch_size():
    assert scaled_lr(0.2, 4096) == pytest.approx(3.2)
    assert scaled_lr(0.2, 256) == pytest.approx(0.2)


@pytest.mark.parametrize("progress, expected", [(0.0, 16), (0.37, 16), (0.375, 24), (0.74, 24), (0.75, 32), (1.0, 32)])
def test_progressive_resizing_steps_up_at_each_multiple_of_8_and_ends_at_full_size(progress, expected):
    assert size_at(progress, 16, 32) == expected  # 16 -> 32 by 3/4 of the run: 24 from 3/8 on


@settings(max_examples=300, deadline=None, derandomize=True)
@given(start=st.integers(8, 300), extra=st.integers(0, 300),
       progress=st.lists(st.floats(0, 1.2), min_size=2, max_size=2))
def test_progressive_resizing_never_shrinks_stays_in_range_and_holds_full_size_at_the_end(start, extra, progress):
    full = start + extra
    early, late = sorted(progress)
    assert start <= size_at(early, start, full) <= size_at(late, start, full) <= full
    size = size_at(early, start, full)
    assert size in (start, full) or size % 8 == 0
    assert size_at(SIZE_RAMP_END, start, full) == full and size_at(0.0, 0, full) == full
