import math

import pytest
import torch

from byol.losses import byol_loss, regression_loss


def test_regression_loss_is_two_minus_two_cosine_on_hand_made_vectors():
    p = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 0.0], [-1.0, 0.0]])
    # cosines: 1, 0, 1/sqrt(2), -1; scale of either vector does not matter
    expected = torch.tensor([0.0, 2.0, 2 - 2 / math.sqrt(2), 4.0])
    torch.testing.assert_close(regression_loss(p, z), expected)


def test_regression_loss_matches_cosine_similarity_on_random_vectors():
    p, z = torch.randn(16, 8), torch.randn(16, 8)
    torch.testing.assert_close(regression_loss(p, z), 2 - 2 * torch.nn.functional.cosine_similarity(p, z))


def test_symmetric_loss_sums_both_directions_and_averages_over_the_batch():
    p1, z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # cosines 1, 0
    p2, z1 = torch.tensor([[1.0, 1.0], [0.0, -1.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # 1/sqrt(2), -1
    # image 1: 0 + (2 - sqrt 2); image 2: 2 + 4; the mean of the two
    assert byol_loss(p1, p2, z1, z2).item() == pytest.approx((2 - math.sqrt(2) + 6) / 2)
    # a pair of orthogonal predictions costs 2 + 2 = 4, not the average 2
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert byol_loss(e1, e1, e1, e2).item() == 2.0  # view 1 -> target 2 orthogonal (2), view 2 -> target 1 aligned (0)
    assert byol_loss(e1, e2, e1, e2).item() == 4.0


def test_loss_is_fp32_even_for_bf16_inputs():
    p, z = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    assert regression_loss(p, z).dtype == torch.float32


def slow_nt_xent(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out term by term from the SimCLR paper's equation 1."""
    views = [v / v.norm() for v in torch.cat([z_1, z_2]).double()]
    n, total = len(z_1), 0.0
    for i, anchor in enumerate(views):
        partner = (i + n) % (2 * n)
        numerator = math.exp(float(anchor @ views[partner]) / temperature)
        denominator = sum(math.exp(float(anchor @ other) / temperature) for k, other in enumerate(views) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def test_nt_xent_matches_a_direct_computation():
    from byol.losses import nt_xent

    z_1, z_2 = torch.randn(5, 7), torch.randn(5, 7)
    for temperature in (0.1, 0.5):
        assert nt_xent(z_1, z_2, temperature).item() == pytest.approx(slow_nt_xent(z_1, z_2, temperature), rel=1e-5)


def test_nt_xent_for_identical_and_for_orthogonal_views():
    from byol.losses import nt_xent

    n, t = 4, 0.5
    basis = torch.eye(2 * n)
    # identical views of mutually orthogonal images: positive cosine 1, 2n - 2 negatives at 0
    same = nt_xent(basis[:n], basis[:n], t).item()
    assert same == pytest.approx(-math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2)))
    # every view orthogonal to every other, its partner too: all 2n - 1 candidates tie
    assert nt_xent(basis[:n], basis[n:], t).item() == pytest.approx(math.log(2 * n - 1))


def test_multi_crop_loss_averages_all_prediction_target_pairs_on_the_scale_of_eq_2():
    """Every crop predicts every other large view's target: 2 + 2k terms of 2 - 2 cos, averaged, doubled."""
    torch.manual_seed(0)
    n, k, d = 5, 3, 6
    p_1, p_2, t_1, t_2 = torch.randn(4, n, d)
    p_small = torch.randn(k, n, d)
    terms = [regression_loss(p_1, t_2), regression_loss(p_2, t_1)]
    terms += [regression_loss(p, t) for p in p_small for t in (t_1, t_2)]
    expected = 2 * torch.stack(terms).mean()
    torch.testing.assert_close(byol_loss(p_1, p_2, t_1, t_2, p_small), expected)
    # no small crops is eq. 2 exactly, and crops that predict perfectly pull the loss down by the share of their terms
    torch.testing.assert_close(byol_loss(p_1, p_2, t_1, t_2, p_small[:0]), byol_loss(p_1, p_2, t_1, t_2))
    perfect = t_1.expand(k, n, d)  # aligned with t_1, and with t_2 where t_1 is
    assert byol_loss(t_2, t_1, t_1, t_2, perfect).item() == pytest.approx(
        2 * (regression_loss(t_1, t_2).mean().item() * k) / (2 + 2 * k), abs=1e-5)


def test_multi_crop_nt_xent_averages_the_views_pair_and_each_small_crop_against_each_view():
    from byol.losses import nt_xent

    torch.manual_seed(1)
    z_1, z_2, z_small = torch.randn(4, 5), torch.randn(4, 5), torch.randn(2, 4, 5)
    pairs = [(z_1, z_2), (z_small[0], z_1), (z_small[0], z_2), (z_small[1], z_1), (z_small[1], z_2)]
    expected = sum(slow_nt_xent(a, b, 0.5) for a, b in pairs) / len(pairs)
    assert nt_xent(z_1, z_2, 0.5, z_small).item() == pytest.approx(expected, rel=1e-5)
