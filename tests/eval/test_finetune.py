"""Fine-tuning: the schedule cut short is the same run, the encoder moves, the recipe is chosen on validation."""

import copy
import dataclasses
import re
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byol.core.errors import ByolError
from byol.data.folders import list_images
from byol.data.memory import decode_into_memory
from byol.data.views import CIFAR10_MEAN, CIFAR10_STD, ViewSpec
from byol.eval.finetune import (FinetuneSettings, FinetuneJob, choose_rate_and_epochs, finetune_settings, linear_on_subset,
                                train_classifier, train_spec, with_head)
from byol.nets.encoders import build_encoder

SPEC = ViewSpec(size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)


def tiny_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return with_head(build_encoder("resnet18", width=0.125, cifar_stem=True), 4)


def fit_on(data, **changes) -> FinetuneJob:
    settings = FinetuneSettings(**{"epochs": 4, "batch_size": 32, "precision": "fp32", **changes})
    return FinetuneJob(data, train_spec(SPEC, 0.5), settings, 0.05, torch.device("cpu"), seed=0)


def test_the_head_starts_at_zero_in_torchvisions_fc_slot():
    model = tiny_classifier()
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    assert {"fc.weight", "fc.bias", "conv1.weight"} <= set(model.state_dict())


def test_stopping_after_epoch_2_of_a_4_epoch_cosine_is_that_run_cut_short(small_folders):
    """What makes the final model repeat the chosen run: the schedule is the same whatever the stop."""
    data = decode_into_memory(list_images(small_folders[0]), 32)
    snapshots = {}
    train_classifier(tiny_classifier(), fit_on(data), epochs=4,
                     after_epoch=lambda epoch, model: snapshots.setdefault(epoch, copy.deepcopy(model.state_dict())))
    stopped = train_classifier(tiny_classifier(), fit_on(data), epochs=2).state_dict()
    for key, value in stopped.items():
        torch.testing.assert_close(value, snapshots[2][key], rtol=0, atol=0)
    assert not torch.equal(snapshots[2]["fc.weight"], snapshots[4]["fc.weight"])


def test_fine_tuning_moves_the_encoder_and_the_linear_probe_leaves_it_as_it_was(small_folders):
    data = decode_into_memory(list_images(small_folders[0]), 32)
    model = tiny_classifier()
    before = copy.deepcopy(model.state_dict())
    linear_on_subset(model, data, data, SPEC, torch.device("cpu"), seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    train_classifier(model, fit_on(data), epochs=1)
    moved = [k for k, v in model.state_dict().items() if k.endswith("weight") and not torch.equal(before[k], v)]
    assert "conv1.weight" in moved and "layer4.1.conv2.weight" in moved and "fc.weight" in moved


def test_the_recipe_is_the_rate_and_epoch_of_the_best_validation_score(small_folders, monkeypatch):
    data = decode_into_memory(list_images(small_folders[0]), 32)
    scores = iter([10.0, 40.0, 40.0, 20.0,  # rate 0.01: best 40 at epoch 2 (a tie with epoch 3: fewer epochs)
                   30.0, 35.0, 40.0, 39.0,  # rate 0.03: 40 only at epoch 3
                   5.0, 5.0, 5.0, 5.0])
    monkeypatch.setattr("byol.eval.finetune.score", lambda *args, **kwargs: {"top1": next(scores)})
    lr, epochs, curves = choose_rate_and_epochs(tiny_classifier(), fit_on(data), data, "test")
    assert (lr, epochs) == (0.01, 2)
    assert curves == {"0.01": [10.0, 40.0, 40.0, 20.0], "0.03": [30.0, 35.0, 40.0, 39.0], "0.1": [5.0] * 4}


def test_a_diverging_rate_stops_with_one_line_naming_the_fix(small_folders):
    data = decode_into_memory(list_images(small_folders[0]), 32)
    with pytest.raises(ByolError, match=r"diverged .* choose a lower rate with --set lr="):
        train_classifier(tiny_classifier(), replace(fit_on(data), lr=1e30), epochs=2)


def test_streamed_large_images_fine_tune_through_loader_workers(large_folder):
    """One epoch of the 256 streamed images in one batch of 256 (one step, at the cosine's peak
    rate): from a zero head, cross-entropy's gradient is (1/4 - onehot)^T features / 256, and
    Nesterov's first step moves by (1 + momentum) times it; the encoder moves from the next step."""
    listing = list_images(large_folder)
    settings = FinetuneSettings(epochs=1, batch_size=256, workers=1, precision="fp32")
    fit = FinetuneJob(listing, train_spec(ViewSpec(size=96), 0.5), settings, 0.05, torch.device("cpu"), seed=0)
    torch.manual_seed(0)
    model = with_head(build_encoder("resnet18", width=0.125, cifar_stem=False), 4)
    encoder_before = [p.clone() for name, p in model.named_parameters() if not name.startswith("fc.")]
    seen = []
    model.fc.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    labels = []
    cross_entropy = torch.nn.functional.cross_entropy
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.functional, "cross_entropy", lambda logits, y: labels.append(y) or cross_entropy(logits, y))
        train_classifier(model, fit, epochs=1)
    (features,), (y,) = seen, labels
    assert sorted(y.tolist()) == sorted(listing.labels)  # every image once in the epoch
    error = torch.full((256, 4), 0.25) - torch.nn.functional.one_hot(y, 4)
    step = -0.05 * (1 + 0.9)
    torch.testing.assert_close(model.fc.weight, step * error.T @ features / 256, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.fc.bias, step * error.mean(0), rtol=1e-4, atol=1e-6)
    encoder = [p for name, p in model.named_parameters() if not name.startswith("fc.")]
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, encoder))  # a zero head passes back no gradient
    train_classifier(model, fit, epochs=1)  # now through the trained head: the encoder moves
    assert all(not torch.equal(a, b) for a, b in zip(encoder_before, encoder))


# every setting's range as docs/evaluation.md states it: (low, high, low included, high included,
# whole numbers only, null allowed); precision is a choice of names
RANGES = {"epochs": (1, 10**5, True, True, True, False), "batch_size": (2, 65536, True, True, True, False),
          "lr": (0, 100, False, True, False, True), "head_lr_mult": (0, 1000, False, True, False, False),
          "momentum": (0, 1, True, False, False, False), "weight_decay": (0, 1, True, True, False, False),
          "crop_min_scale": (0, 1, False, True, False, False), "val_fraction": (0, 0.5, False, True, False, False),
          "workers": (0, 256, True, True, True, False)}


REFUSED = object()


def taken_as(key, value):
    """The value the setting holds once `value` is given, or REFUSED."""
    if key == "precision":
        return value if value in ("auto", "fp32", "bf16", "fp16") else REFUSED
    low, high, low_in, high_in, whole, null = RANGES[key]
    if value is None:
        return None if null else REFUSED
    if isinstance(value, str) and not whole:  # YAML 1.1 reads 1e-5 as text: a number field takes it
        try:
            value = float(value)
        except ValueError:
            return REFUSED
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        return REFUSED
    inside = (low <= value if low_in else low < value) and (value <= high if high_in else value < high)
    return value if inside else REFUSED


def test_the_ranges_cover_every_setting():
    assert set(RANGES) | {"precision"} == {f.name for f in dataclasses.fields(FinetuneSettings)}


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted([*RANGES, "precision"])),
       value=st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                       st.sampled_from([0, 1, 0.5, 2, 256, 257, 10**5, 65536, 65537, 100, 1000, "fp16", "bf16"]),
                       st.text(max_size=8)))
def test_every_setting_is_taken_in_its_range_and_refused_outside_in_one_line(key, value):
    try:
        taken = finetune_settings({key: value})
    except ByolError as refusal:
        assert taken_as(key, value) is REFUSED and "\n" not in str(refusal) and key in str(refusal)
    else:
        assert getattr(taken, key) == taken_as(key, value)


@pytest.mark.parametrize(("key", "value", "says"), [("momentum", 1.0, "use a momentum in [0, 1)"),
                                                    ("batch_size", 1, "BatchNorm needs at least 2 images a batch"),
                                                    ("val_fraction", 0.0, "hold out a share in (0, 0.5]")])
def test_a_refusal_states_the_range_that_its_check_applies(key, value, says):
    with pytest.raises(ByolError, match=rf"^invalid fine-tuning setting: {key} is {value!r}: {re.escape(says)}"):
        finetune_settings({key: value})


def test_an_unknown_setting_lists_the_ones_there_are():
    with pytest.raises(ByolError, match="did you mean 'epochs'"):
        finetune_settings({"epoch": 3})
    with pytest.raises(ByolError, match="fine-tuning takes epochs, batch_size"):
        finetune_settings({"tau_base": 0.99})
