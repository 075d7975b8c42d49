"""Linear evaluation on frozen features: multinomial logistic regression.

The features are extracted once without augmentation and standardised with the
training split's statistics; the classifier is fitted by full-batch L-BFGS, the
protocol SimCLR (Chen et al. 2020, appendix B.5) used for its linear transfer
results. The L2 penalty is chosen on a validation split carved from the training
data, then the classifier is refitted on the whole training split: the test
split is never looked at until the one final score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from byol.core.progress import progress
from byol.eval.knn import topk_accuracy
from byol.eval.labels import refuse_without_held_out

WEIGHT_DECAYS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, validation): `fraction` of every class, at least one image, goes to validation."""
    generator = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        val.append(members[:count])
        fit.append(members[count:])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values


def check_probe_labels(labels: torch.Tensor) -> None:
    """The probe chooses its penalty on held-out images."""
    refuse_without_held_out(labels, "the linear probe's penalty", "add images to the training folder")


def fit_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
               max_iter: int = 200) -> torch.nn.Linear:
    """Minimise mean cross-entropy + weight_decay / 2 * |W|^2 from zero weights (a convex
    problem, so the result does not depend on a seed)."""
    head = torch.nn.Linear(features.shape[1], num_classes, device=features.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), labels) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return head.requires_grad_(False)


def best_penalty(validation: dict[float, float]) -> float:
    """The penalty with the best validation top-1; on a tie the stronger one, the simpler model."""
    return max(validation, key=lambda weight_decay: (validation[weight_decay], weight_decay))


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
    test_labels: torch.Tensor, num_classes: int, weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
    val_fraction: float = 0.1, device: torch.device | str = "cpu", seed: int = 0, desc: str | None = None,
) -> dict:
    """Test top-1/top-5 in percent, the chosen weight decay and the validation top-1 of each.
    With `desc`, a progress bar counts the L-BFGS fits (one per penalty, then the refit)."""
    check_probe_labels(train_labels)
    fit_idx, val_idx = stratified_split(train_labels, val_fraction, seed)
    x_fit, x_val = standardise(train_features[fit_idx].to(device), train_features[val_idx].to(device))
    y_fit = train_labels[fit_idx].to(device)
    validation = {}
    bar = progress(total=len(weight_decays) + 1, desc=desc, disable=desc is None, leave=False, unit="fit")
    for weight_decay in weight_decays:
        bar.set_postfix(weight_decay=weight_decay, refresh=False)
        head = fit_linear(x_fit, y_fit, num_classes, weight_decay)
        validation[weight_decay] = topk_accuracy(head(x_val).cpu(), train_labels[val_idx])["top1"]
        bar.update(1)
    chosen = best_penalty(validation)
    x_train, x_test = standardise(train_features.to(device), test_features.to(device))
    bar.set_postfix(refit=chosen, refresh=False)
    head = fit_linear(x_train, train_labels.to(device), num_classes, chosen)
    bar.update(1)
    bar.close()
    result = topk_accuracy(head(x_test).cpu(), test_labels)
    return dict(**result, weight_decay=chosen, val_top1={str(wd): acc for wd, acc in validation.items()})
