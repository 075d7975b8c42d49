"""Weighted k-NN classification on frozen features (Wu et al. 2018's protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor, train_labels: torch.Tensor, query_features: torch.Tensor,
    num_classes: int, k: int = 200, temperature: float = 0.1, chunk: int = 1024, bank_chunk: int = 65536,
) -> torch.Tensor:
    """Class scores (queries, classes): each of the k most similar training samples
    votes for its class with weight exp(cosine / temperature).

    The bank is read `bank_chunk` samples at a time, each query keeping its k best so far, so
    memory stays at chunk x (k + bank_chunk) similarities whatever the bank's size."""
    k = min(k, len(train_features))
    query_features = F.normalize(query_features.float(), dim=1)
    scores = []
    for start in range(0, len(query_features), chunk):
        queries = query_features[start:start + chunk]
        top_sim = torch.empty(len(queries), 0)
        top_label = torch.empty(len(queries), 0, dtype=torch.long)
        for first in range(0, len(train_features), bank_chunk):
            bank = F.normalize(train_features[first:first + bank_chunk].float(), dim=1)
            similarity = torch.cat([top_sim, queries @ bank.T], dim=1)
            labels = torch.cat([top_label, train_labels[first:first + bank_chunk].expand(len(queries), -1)], dim=1)
            top_sim, best = similarity.topk(min(k, similarity.shape[1]), dim=1)
            top_label = labels.gather(1, best)
        votes = torch.zeros(len(queries), num_classes)
        # exp((s - s_max) / T): the same relative weights as exp(s / T), finite at any temperature
        votes.scatter_add_(1, top_label, ((top_sim - top_sim[:, :1]) / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent, keyed 'top1', 'top5'."""
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def knn_accuracy(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
    test_labels: torch.Tensor, num_classes: int, k: int = 200, temperature: float = 0.1,
) -> dict[str, float]:
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return topk_accuracy(scores, test_labels)


def with_gain(result: dict) -> dict:
    """`result` with gain_top1, the pretrained encoder's top-1 over the same one at random init
    (the baseline that every pretrained score is read against), where both were scored."""
    if "pretrained" in result and "random_init" in result:
        result["gain_top1"] = result["pretrained"]["top1"] - result["random_init"]["top1"]
    return result
