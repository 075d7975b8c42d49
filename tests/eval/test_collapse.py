import math

import pytest
import torch

from byol.eval.collapse import alignment, effective_rank, normalized_std, uniformity


def test_a_collapsed_batch_scores_zero_std_rank_one_and_zero_uniformity():
    constant = torch.randn(1, 32).expand(256, 32)
    assert normalized_std(constant) == pytest.approx(0, abs=1e-6)
    assert uniformity(constant) == pytest.approx(0, abs=1e-6)
    assert alignment(constant, constant) == pytest.approx(0, abs=1e-6)
    line = torch.randn(256, 1) * torch.randn(1, 32)  # every vector on one line: rank 1
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-3)


def test_spread_out_vectors_score_the_healthy_values():
    z = torch.randn(4096, 64)
    assert normalized_std(z) == pytest.approx(1 / math.sqrt(64), rel=0.02)
    assert effective_rank(z) > 60  # close to d = 64
    # |u-v|^2 = 2 - 2cos with cos ~ N(0, 1/d): log E exp(-4 + 4cos) = -4 + 8/d
    assert uniformity(z[:1024]) == pytest.approx(-4 + 8 / 64, abs=0.03)


def test_effective_rank_counts_equally_used_directions():
    basis = torch.zeros(1000, 16)
    basis[:, :4] = torch.randn(1000, 4)  # 4 independent, equally scaled directions
    assert effective_rank(basis) == pytest.approx(4, abs=0.15)


def test_alignment_is_the_mean_squared_distance_of_normalised_pairs():
    z_1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_2 = torch.tensor([[0.0, 3.0], [0.0, 1.0]])
    assert alignment(z_1, z_2) == pytest.approx((2.0 + 0.0) / 2)


def test_alarms_name_the_metric_its_value_and_the_healthy_range():
    from byol.eval.collapse import collapse_alarms

    assert collapse_alarms(dict(proj_std=0.6 / math.sqrt(256), proj_rank=40.0), 256) == []
    assert collapse_alarms(dict(proj_std=0.15 / math.sqrt(256), proj_rank=19.0), 256) == []  # random init
    std, rank = collapse_alarms(dict(proj_std=1e-4, proj_rank=1.2), 256)
    assert std.startswith("proj_std is 0.0001 = 0.0016/sqrt(256), below 0.05/sqrt(d)") and "healthy" in std
    assert rank.startswith("proj_rank is 1.2, below 3.0") and "healthy" in rank
