"""A 2-D picture of what the encoder learned: t-SNE (or UMAP, if installed) of test features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from byol.data.sources import is_named, sample_images
from byol.eval.checkpoints import load_run_encoder
from byol.eval.features import extract_features, run_transform


def embed_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, 2) coordinates and the method's name."""
    try:
        import umap
    except ImportError:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(features) - 1) / 3)
        tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
        return tsne.fit_transform(features), "t-SNE"
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(features), "UMAP"


def sample_test_features(run_dir: Path, limit: int = 2000,
                         device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, np.ndarray, list[str]] | str:
    """Features of up to `limit` images of the run's --test folder (a fixed random subset),
    their labels and class names; or the reason there are none."""
    encoder, config, _ = load_run_encoder(run_dir)
    if not config.test:
        return "the run had no --test folder"
    if not is_named(config.test) and not Path(config.test).exists():
        return f"its test folder {config.test} is not on this machine"
    data = sample_images(config.test, config.image_size, limit, config.seed)  # decodes the sample alone
    if not data.labelled:
        return f"its test folder {config.test} has no class sub-folders"
    features = extract_features(encoder.to(device), data.images, run_transform(config), device=device, desc="features")
    return features.numpy(), data.labels.numpy(), data.classes
