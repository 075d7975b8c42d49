"""The schedules, checked against values worked out by hand."""

import pytest

from byol.core.schedules import lr_at, scaled_lr, tau_at


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
