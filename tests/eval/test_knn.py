import pytest
import torch
import torch.nn.functional as F

from byol.eval.knn import knn_accuracy, knn_predict, topk_accuracy


def test_knn_votes_are_weighted_by_exp_similarity_over_temperature():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(bank, labels, query, num_classes=2, k=2, temperature=0.5)
    # the two nearest: similarity 1 (class 0) and 0.8 (class 1); weights exp(s / T) relative to
    # the nearest one's, exp((0.8 - 1) / 0.5) = exp(-0.4)
    torch.testing.assert_close(scores, torch.tensor([[1.0, torch.exp(torch.tensor(-0.4)).item()]]))


def test_knn_votes_stay_finite_at_a_tiny_temperature():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    scores = knn_predict(bank, torch.tensor([0, 1, 1]), torch.tensor([[0.9, 0.1]]), num_classes=2, k=3,
                         temperature=1e-3)  # exp(s / T) alone would be inf for every neighbour
    assert torch.isfinite(scores).all() and scores.argmax().item() == 0


def test_knn_accuracy_is_perfect_on_separated_clusters_and_k_is_capped():
    centres = F.normalize(torch.randn(5, 16), dim=1)
    labels = torch.arange(5).repeat_interleave(20)
    bank = F.normalize(centres[labels] + 0.05 * torch.randn(100, 16), dim=1)
    result = knn_accuracy(bank, labels, centres, torch.arange(5), num_classes=5, k=500)
    assert result == {"top1": 100.0, "top5": 100.0}


def test_topk_accuracy_in_percent():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_accuracy(scores, labels, ks=(1, 2)) == pytest.approx({"top1": 100 / 3, "top2": 200 / 3})


def test_a_bank_read_in_chunks_votes_exactly_as_the_whole_bank_does():
    """300 samples read 7 at a time (fewer than k): each query's 20 nearest, as the full
    similarity matrix gives them, vote with weights exp((s - s_max) / T)."""
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(300, 16, generator=generator), torch.randn(23, 16, generator=generator)
    labels = torch.randint(0, 5, (300,), generator=generator)
    similarity = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    top, index = similarity.topk(20, dim=1)
    expected = torch.zeros(23, 5).scatter_add_(1, labels[index], ((top - top[:, :1]) / 0.1).exp())
    chunked = knn_predict(bank, labels, queries, num_classes=5, k=20, temperature=0.1, chunk=5, bank_chunk=7)
    torch.testing.assert_close(chunked, expected)
