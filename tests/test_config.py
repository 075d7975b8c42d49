import math
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byol.config import Config, parse_override, resolve
from byol.core.errors import ByolError

KEYS = [f.name for f in fields(Config)]


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


def test_every_key_has_a_line_in_the_table_of_allowed_values():
    from byol.config import ALLOWED

    assert {f.name for f in fields(Config)} == set(ALLOWED)


def _number_or_none_is_finite(value) -> bool:
    return value is None or isinstance(value, (bool, str)) or math.isfinite(value)


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(key=st.sampled_from(KEYS), value=st.one_of(
    st.integers(), st.floats(), st.text(max_size=8), st.booleans(), st.none(),
    st.sampled_from([0, -1, 10**12, 10**400, 1e300, float("inf"), float("-inf"), float("nan"), "", [1], {"a": 1}])))
def test_any_value_of_any_key_is_refused_in_one_line_or_resolves_to_finite_settings(key, value):
    try:
        config = resolve(overrides={key: value})
    except ByolError as refusal:
        assert len(str(refusal).splitlines()) == 1 and key in str(refusal)
        return
    assert all(_number_or_none_is_finite(v) for v in config.to_dict().values())
