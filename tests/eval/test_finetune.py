"""Fine-tuning: the schedule cut short is the same run, the encoder moves, the recipe is chosen on validation."""

import copy
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byol.core.errors import ByolError
from byol.data.folders import decode_into_memory, list_images
from byol.data.views import CIFAR10_MEAN, CIFAR10_STD, ViewSpec
from byol.eval.finetune import (ALLOWED, FinetuneSettings, Fit, choose_recipe, finetune_settings, linear_on_subset,
                                train_classifier, train_spec, with_head)
from byol.nets.encoders import build_encoder

SPEC = ViewSpec(size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)


def tiny_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return with_head(build_encoder("resnet18", width=0.125, cifar_stem=True), 4)


def fit_on(data, **changes) -> Fit:
    settings = FinetuneSettings(**{"epochs": 4, "batch_size": 32, "precision": "fp32", **changes})
    return Fit(data, train_spec(SPEC, 0.5), settings, 0.05, torch.device("cpu"), seed=0)


def test_the_head_starts_at_zero_in_torchvisions_fc_slot():
    model = tiny_classifier()
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    assert {"fc.weight", "fc.bias", "conv1.weight"} <= set(model.state_dict())


def test_stopping_after_epoch_2_of_a_4_epoch_cosine_is_that_run_cut_short(small_folders):
    """What makes the final model repeat the chosen run: the schedule is the same whatever the stop."""
    data = decode_into_memory(small_folders[0], 32)
    snapshots = {}
    train_classifier(tiny_classifier(), fit_on(data), epochs=4,
                     after_epoch=lambda epoch, model: snapshots.setdefault(epoch, copy.deepcopy(model.state_dict())))
    stopped = train_classifier(tiny_classifier(), fit_on(data), epochs=2).state_dict()
    for key, value in stopped.items():
        torch.testing.assert_close(value, snapshots[2][key], rtol=0, atol=0)
    assert not torch.equal(snapshots[2]["fc.weight"], snapshots[4]["fc.weight"])


def test_fine_tuning_moves_the_encoder_and_the_linear_probe_leaves_it_as_it_was(small_folders):
    data = decode_into_memory(small_folders[0], 32)
    model = tiny_classifier()
    before = copy.deepcopy(model.state_dict())
    linear_on_subset(model, data, data, SPEC, torch.device("cpu"), seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    train_classifier(model, fit_on(data), epochs=1)
    moved = [k for k, v in model.state_dict().items() if k.endswith("weight") and not torch.equal(before[k], v)]
    assert "conv1.weight" in moved and "layer4.1.conv2.weight" in moved and "fc.weight" in moved


def test_the_recipe_is_the_rate_and_epoch_of_the_best_validation_score(small_folders, monkeypatch):
    data = decode_into_memory(small_folders[0], 32)
    scores = iter([10.0, 40.0, 40.0, 20.0,  # rate 0.01: best 40 at epoch 2 (a tie with epoch 3: fewer epochs)
                   30.0, 35.0, 40.0, 39.0,  # rate 0.03: 40 only at epoch 3
                   5.0, 5.0, 5.0, 5.0])
    monkeypatch.setattr("byol.eval.finetune.score", lambda *args, **kwargs: {"top1": next(scores)})
    lr, epochs, curves = choose_recipe(tiny_classifier(), fit_on(data), data, "test")
    assert (lr, epochs) == (0.01, 2)
    assert curves == {"0.01": [10.0, 40.0, 40.0, 20.0], "0.03": [30.0, 35.0, 40.0, 39.0], "0.1": [5.0] * 4}


def test_a_diverging_rate_stops_with_one_line_naming_the_fix(small_folders):
    data = decode_into_memory(small_folders[0], 32)
    with pytest.raises(ByolError, match=r"diverged .* choose a lower rate with --set lr="):
        train_classifier(tiny_classifier(), replace(fit_on(data), lr=1e30), epochs=2)


def test_streamed_large_images_fine_tune_through_loader_workers(large_folder):
    listing = list_images(large_folder)
    spec = ViewSpec(size=96)
    fit = Fit(listing, train_spec(spec, 0.5), FinetuneSettings(epochs=1, batch_size=64, workers=1, precision="fp32"),
              0.05, torch.device("cpu"), seed=0)
    torch.manual_seed(0)
    model = with_head(build_encoder("resnet18", width=0.125, cifar_stem=False), 4)
    before = model.fc.weight.clone()
    train_classifier(model, fit, epochs=1)
    assert not torch.equal(before, model.fc.weight)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(ALLOWED)),
       value=st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                       st.text(max_size=8)))
def test_every_setting_is_in_range_or_refused_in_one_line(key, value):
    try:
        settings_ = finetune_settings({key: value})
    except ByolError as refusal:
        assert "\n" not in str(refusal) and key in str(refusal)
    else:
        assert ALLOWED[key].ok(getattr(settings_, key))


def test_an_unknown_setting_lists_the_ones_there_are():
    with pytest.raises(ByolError, match="did you mean 'epochs'"):
        finetune_settings({"epoch": 3})
    with pytest.raises(ByolError, match="fine-tuning takes epochs, batch_size"):
        finetune_settings({"tau_base": 0.99})
