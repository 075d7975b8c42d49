"""BYOL beyond images: pretraining an MLP on tabular rows with a view function of our own.

The learner only needs an encoder and a function that turns a batch into two views.
For table rows the views are SCARF-style corruptions (Bahri et al. 2022): a random 40%
of each row's features are replaced by the same features of other rows, plus a little
noise. Data: scikit-learn's bundled breast-cancer table (569 rows, 30 features, 2 classes),
labels used only to score k-NN on a held-out quarter.

    python examples/tabular_byol.py
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

from byol import BYOL, tau_at
from byol.eval.knn import knn_accuracy


def corrupt(rows: torch.Tensor, fraction: float = 0.4, noise: float = 0.1) -> torch.Tensor:
    """Each row with `fraction` of its features taken from random other rows of the batch."""
    replace = torch.rand_like(rows) < fraction
    donors = rows[torch.randint(len(rows), (len(rows),))]
    return torch.where(replace, donors, rows) + noise * torch.randn_like(rows)


def two_views(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return corrupt(rows), corrupt(rows)


def mlp(features: int, width: int = 128) -> nn.Module:
    encoder = nn.Sequential(nn.Linear(features, width), nn.BatchNorm1d(width), nn.ReLU(),
                            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU())
    encoder.feature_dim = width  # what BYOL needs to size its heads
    return encoder


@torch.no_grad()
def knn_top1(encoder: nn.Module, train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
             test_labels: torch.Tensor) -> float:
    encoder.eval()
    return knn_accuracy(encoder(train), train_labels, encoder(test), test_labels, num_classes=2, k=20,
                        temperature=0.1)["top1"]


def main(steps: int = 1500, batch_size: int = 128, seed: int = 0) -> None:
    torch.manual_seed(seed)
    table = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        torch.as_tensor(table.data, dtype=torch.float32), torch.as_tensor(table.target), test_size=0.25,
        stratify=table.target, random_state=seed)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    learner = BYOL(mlp(x_train.shape[1]), views=two_views, projector_hidden=256, projection_dim=64,
                   predictor_hidden=256)
    random_init = knn_top1(mlp(x_train.shape[1]).requires_grad_(False), x_train, y_train, x_test, y_test)
    optimizer = torch.optim.AdamW(learner.trainable_parameters(), lr=1e-3, weight_decay=1e-4)
    for step in range(steps):
        learner.train()
        loss = learner(x_train[torch.randint(len(x_train), (batch_size,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learner.update_target(tau_at(step, steps, tau_base=0.99))
        if step % 500 == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    raw = knn_accuracy(x_train, y_train, x_test, y_test, num_classes=2, k=20, temperature=0.1)["top1"]
    pretrained = knn_top1(learner.encoder, x_train, y_train, x_test, y_test)
    print(f"k-NN top-1 on the held-out quarter: BYOL encoder {pretrained:.2f}%, same MLP at random init "
          f"{random_init:.2f}%, raw standardised features {raw:.2f}%")


if __name__ == "__main__":
    main()
