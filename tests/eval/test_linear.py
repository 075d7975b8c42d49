import pytest
import torch

from byol.eval.linear import fit_linear, linear_probe, stratified_split


def clusters(n_per_class: int, classes: int = 3, dim: int = 8, noise: float = 0.3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def test_the_validation_split_takes_the_fraction_of_every_class_and_nothing_twice():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    fit, val = stratified_split(labels, 0.1)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(100))
    assert torch.bincount(labels[val]).tolist() == [5, 3, 2]
    assert torch.equal(val, stratified_split(labels, 0.1)[1])  # same seed, same split


def test_the_classifier_separates_clusters_and_the_penalty_shrinks_its_weights():
    x, y = clusters(40)
    loose, strict = fit_linear(x, y, 3, weight_decay=1e-6), fit_linear(x, y, 3, weight_decay=1.0)
    assert (loose(x).argmax(dim=1) == y).all()
    assert strict.weight.norm() < 0.5 * loose.weight.norm()


def test_the_probe_scores_the_test_split_and_chooses_the_penalty_without_looking_at_it():
    x, y = clusters(60)
    x_test, y_test = clusters(20, seed=0)
    result = linear_probe(x, y, x_test, y_test, 3, weight_decays=(1e-4, 1e-2, 10.0))
    assert result["top1"] == pytest.approx(100.0) and result["top5"] == pytest.approx(100.0)
    assert set(result["val_top1"]) == {"0.0001", "0.01", "10.0"}
    shuffled = linear_probe(x, y, x_test, y_test[torch.randperm(len(y_test))], 3, weight_decays=(1e-4, 1e-2, 10.0))
    assert shuffled["weight_decay"] == result["weight_decay"] and shuffled["val_top1"] == result["val_top1"]
    assert shuffled["top1"] < 60  # the test labels matter only to the final score


def noisy_dimensions(seed: int = 1):
    """60 images, 2 classes: dimension 0 carries the class, 30 noisy ones invite overfitting."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat(30)
    x = torch.randn(60, 31, generator=generator) * 2
    x[:, 0] = y * 1.0 + 0.6 * torch.randn(60, generator=generator)
    return x, y


def test_where_a_weak_penalty_overfits_the_strong_one_is_chosen():
    x, y = noisy_dimensions()
    result = linear_probe(x, y, x, y, 2, weight_decays=(1e-6, 1.0), val_fraction=0.5)
    assert result["weight_decay"] == 1.0
    assert result["val_top1"]["1.0"] > result["val_top1"]["1e-06"] + 10


def test_where_a_strong_penalty_erases_the_weights_the_weak_one_is_chosen():
    # 4 to 1 imbalanced clusters: with its weights erased the classifier predicts the majority (80%)
    x, y = clusters(40, classes=2)
    keep = torch.cat([torch.arange(40), torch.arange(40, 50)])
    result = linear_probe(x[keep], y[keep], x, y, 2, weight_decays=(1e-4, 1e4), val_fraction=0.2)
    assert result["weight_decay"] == 1e-4
    assert result["val_top1"]["0.0001"] == 100.0 and result["val_top1"]["10000.0"] == pytest.approx(80.0)


def test_validation_images_are_held_out_of_the_fit():
    # random labels: a classifier that had seen the validation images would score them perfectly
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(80, 60, generator=generator), torch.randint(0, 2, (80,), generator=generator)
    assert fit_linear(x, y, 2, weight_decay=1e-6)(x).argmax(dim=1).eq(y).all()  # it memorises what it fits
    result = linear_probe(x, y, x, y, 2, weight_decays=(1e-6,), val_fraction=0.5)
    assert result["val_top1"]["1e-06"] < 75


def test_the_probe_counts_its_fits_on_a_progress_bar(capsys):
    x, y = clusters(20)
    linear_probe(x, y, x, y, 3, weight_decays=(1e-4, 1e-2), desc="probe")
    err = capsys.readouterr().err
    assert "probe" in err and "0/3" in err  # two penalties, then the refit
    linear_probe(x, y, x, y, 3, weight_decays=(1e-4, 1e-2))
    assert capsys.readouterr().err == ""  # quiet without a description
