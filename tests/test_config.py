import pytest

from byol.config import parse_override, resolve
from byol.errors import ByolError


def test_scientific_notation_without_a_decimal_point_is_a_number():
    key, value = parse_override("weight_decay=1e-5")
    assert value == "1e-5"  # YAML 1.1 reads it as text
    assert resolve(overrides={key: value}).weight_decay == 1e-5


def test_wrong_types_and_unknown_keys_are_refused_with_the_fix():
    with pytest.raises(ByolError, match="'weight_decay' must be float, got 'much'"):
        resolve(overrides={"weight_decay": "much"})
    with pytest.raises(ByolError, match="must be bool"):
        resolve(overrides={"head_batchnorm": 1})
    with pytest.raises(ByolError, match="did you mean 'tau_base'"):
        resolve(overrides={"tau_bas": 0.9})
    with pytest.raises(ByolError, match="tau_schedule is 'linear': choose cosine or constant"):
        resolve(overrides={"tau_schedule": "linear"})
    with pytest.raises(ByolError, match=r"crop_min_scale is 0.0: use a fraction of the area in \(0, 1\]"):
        resolve(overrides={"crop_min_scale": 0})


def test_every_shipped_preset_resolves_to_a_valid_config():
    from byol.config import preset_names

    assert {"cifar10-cpu", "cifar10-resnet18", "imagenet-resnet50", "stl10-resnet18"} <= set(preset_names())
    for name in preset_names():
        resolve(preset=name)
