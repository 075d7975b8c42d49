import math

import pytest

from byol.train.schedules import lr_at, scaled_lr, tau_at


def test_tau_starts_at_tau_base_ends_at_one_and_never_decreases():
    total = 1000
    taus = [tau_at(k, total, 0.996) for k in range(total + 1)]
    assert taus[0] == pytest.approx(0.996)
    assert taus[-1] == pytest.approx(1.0)
    assert taus[total // 2] == pytest.approx(1 - 0.004 / 2)
    assert all(b >= a for a, b in zip(taus, taus[1:]))


def test_tau_follows_the_papers_formula():
    k, K, base = 123, 500, 0.99
    assert tau_at(k, K, base) == pytest.approx(1 - (1 - base) * (math.cos(math.pi * k / K) + 1) / 2)


def test_lr_warms_up_linearly_then_decays_by_cosine_to_zero():
    peak, warmup, total = 0.8, 10, 110
    assert lr_at(0, total, warmup, peak) == 0
    assert lr_at(5, total, warmup, peak) == pytest.approx(0.4)
    assert lr_at(10, total, warmup, peak) == pytest.approx(peak)
    assert lr_at(60, total, warmup, peak) == pytest.approx(peak / 2)
    assert lr_at(110, total, warmup, peak) == pytest.approx(0)
    decay = [lr_at(k, total, warmup, peak) for k in range(warmup, total + 1)]
    assert all(b <= a for a, b in zip(decay, decay[1:]))


def test_lr_scales_linearly_with_batch_size():
    assert scaled_lr(0.2, 4096) == pytest.approx(3.2)
    assert scaled_lr(0.2, 256) == pytest.approx(0.2)


def test_constant_tau_schedule_keeps_tau_base_to_the_last_step():
    assert [tau_at(k, 100, 0.95, "constant") for k in (0, 50, 100)] == [0.95, 0.95, 0.95]
