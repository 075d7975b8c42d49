import numpy as np

from byol.report.embedding import embed_2d


def test_separated_clusters_stay_separated_in_two_dimensions():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (40, 16)), rng.normal(12, 1, (40, 16))]).astype(np.float32)
    xy, method = embed_2d(features)
    assert xy.shape == (80, 2) and method in ("t-SNE", "UMAP")
    a, b = xy[:40], xy[40:]
    gap = np.linalg.norm(a.mean(0) - b.mean(0))
    assert gap > 3 * max(a.std(0).mean(), b.std(0).mean())
