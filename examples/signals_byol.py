"""BYOL beyond images: a 1-D CNN pretrained on recordings, with a view function of its own.

The learner needs only an encoder and a function that turns a batch into two views. Here
the data are 1-D recordings: each of scikit-learn's bundled handwritten digits (1,797),
read row by row as a 64-sample signal, is placed at a random onset in a 128-sample
recording, as an event in audio or sensor data would be. The views are what should not
matter: a random circular time shift, a gain and a little noise. Labels are used only to
score k-NN (k = 20) on a held-out quarter, against the same CNN at random initialisation
and the raw samples.

    python examples/signals_byol.py
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from byol import BYOL, tau_at
from byol.eval.knn import knn_accuracy

LENGTH = 128


def recordings_of_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(1797, 128) recordings, each digit's 64 samples at a random onset, and the labels."""
    digits = load_digits()
    signals = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    onsets = torch.randint(0, LENGTH - signals.shape[1] + 1, (len(signals),))
    recordings = torch.zeros(len(signals), LENGTH)
    recordings.scatter_(1, onsets[:, None] + torch.arange(signals.shape[1]), signals)
    return recordings, torch.as_tensor(digits.target)


def view(recordings: torch.Tensor) -> torch.Tensor:
    """A random circular shift of up to a quarter, a gain in [0.8, 1.2] and noise; (N, 1, T)."""
    shift = torch.randint(-LENGTH // 4, LENGTH // 4 + 1, (len(recordings),))
    positions = (torch.arange(LENGTH)[None] - shift[:, None]) % LENGTH
    shifted = torch.gather(recordings, 1, positions)
    gain = 0.8 + 0.4 * torch.rand(len(recordings), 1)
    return (shifted * gain + 0.05 * torch.randn_like(shifted)).unsqueeze(1)


def two_views(recordings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return view(recordings), view(recordings)


def cnn() -> nn.Module:
    encoder = nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 64, 5, padding=2, stride=2), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Conv1d(64, 64, 5, padding=2, stride=2), nn.BatchNorm1d(64), nn.ReLU(),
        nn.AdaptiveMaxPool1d(1), nn.Flatten(),
    )
    encoder.feature_dim = 64  # what BYOL needs to size its heads
    return encoder


@torch.no_grad()
def knn_top1(features, train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
             test_labels: torch.Tensor) -> float:
    return knn_accuracy(features(train), train_labels, features(test), test_labels, num_classes=10, k=20,
                        temperature=0.1)["top1"]


def main(steps: int = 1000, batch_size: int = 128) -> None:
    torch.manual_seed(0)
    recordings, labels = recordings_of_digits()
    x_train, x_test, y_train, y_test = train_test_split(recordings, labels, test_size=0.25, stratify=labels,
                                                        random_state=0)
    learner = BYOL(cnn(), views=two_views, projector_hidden=256, projection_dim=64, predictor_hidden=256)
    random_init = cnn().eval()
    optimizer = torch.optim.AdamW(learner.trainable_parameters(), lr=2e-3, weight_decay=1e-4)
    for step in range(steps):
        learner.train()
        loss = learner(x_train[torch.randint(len(x_train), (batch_size,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learner.update_target(tau_at(step / steps, tau_base=0.99))
        if step % 250 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    learner.encoder.eval()
    scores = {name: knn_top1(features, x_train, y_train, x_test, y_test) for name, features in (
        ("BYOL CNN", lambda x: learner.encoder(x.unsqueeze(1))),
        ("same CNN at random init", lambda x: random_init(x.unsqueeze(1))),
        ("raw samples", lambda x: x),
    )}
    print("k-NN top-1 on the held-out quarter: " + ", ".join(f"{k} {v:.2f}%" for k, v in scores.items()))


if __name__ == "__main__":
    main()
