"""A damaged or edited card (model.json, an export's .json) is one line naming the file, the
field and the fix, or is accepted and gives a model whose scores are finite: never a
traceback, a huge allocation or NaN scores."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byol
from byol.classifier import CARD, save_classifier
from byol.cli import main
from byol.core.errors import ByolError
from byol.eval.finetune import with_head
from byol.eval.cards import CARD_FORMAT, CLASSIFIER_FIELDS
from byol.export import write_weights_and_card

CARD_VALUES = dict(architecture="resnet18", width=0.125, cifar_stem=True, input_size=16, feature_dim=64,
                   mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], method="byol")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cards") / "classifier"
    out.mkdir()
    torch.manual_seed(0)
    model = with_head(byol.build_encoder("resnet18", 0.125, True), 3)
    save_classifier(model, dict(CARD_VALUES, format=CARD_FORMAT), ["cat", "dog", "fox"], out)
    return out


def _edited(classifier: Path, where: Path, field: str, value=..., remove: bool = False) -> Path:
    folder = where / "edited"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(classifier, folder)
    card = json.loads((folder / CARD).read_text())
    if remove:
        del card[field]
    else:
        card[field] = value
    (folder / CARD).write_text(json.dumps(card))
    return folder


def _one_line_naming(err: ByolError, *words: str) -> None:
    assert "\n" not in str(err) and all(word in str(err) for word in words), str(err)


@pytest.mark.parametrize("field,value,says", [
    ("input_size", -3, "input_size is -3 (use 8 to 4096 pixels)"),
    ("input_size", 10**9, "input_size is 1000000000"),
    ("width", "0.125", "width is '0.125'"),
    ("width", 1e6, "width is 1000000.0 (the width multiplier must be positive (at most 8))"),
    ("std", [0, 0.25, 0.25], "std is [0, 0.25, 0.25] (three channel deviations in (0, 10])"),
    ("classes", ["cat", "cat", "fox"], "classes is ['cat', 'cat', 'fox']"),
    ("feature_dim", 65, "feature_dim is 65, but its encoder gives 64 features"),
    ("architecture", "0", "architecture is '0' (unknown encoder '0'"),  # found by the property below
])
def test_the_damages_seen_are_one_line_naming_the_field(classifier, tmp_path, field, value, says):
    folder = _edited(classifier, tmp_path, field, value)
    with pytest.raises(ByolError) as err:
        byol.load_classifier(folder)
    _one_line_naming(err.value, str(folder / CARD), says)


def test_a_missing_field_is_named(classifier, tmp_path):
    with pytest.raises(ByolError) as err:
        byol.load_classifier(_edited(classifier, tmp_path, "mean", remove=True))
    _one_line_naming(err.value, "is damaged: it has no mean; fine-tune it again with `byol finetune`")


@pytest.mark.parametrize("command", ["predict", "export"])
def test_predict_and_export_refuse_a_damaged_card_in_one_line(classifier, tmp_path, capsys, command):
    folder = _edited(classifier, tmp_path, "std", [0.25, 0.0, 0.25])
    argv = (["predict", "--model", str(folder), "--data", str(tmp_path), "--out", str(tmp_path / "p.csv")]
            if command == "predict" else ["export", "--checkpoint", str(folder), "--out", str(tmp_path / "e.pt")])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "std is [0.25, 0.0, 0.25]" in err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "e.pt").exists()


def test_an_export_card_is_checked_by_the_same_table(classifier, tmp_path):
    torch.manual_seed(0)
    encoder = byol.build_encoder("resnet18", 0.125, True)
    write_weights_and_card(encoder, dict(CARD_VALUES, format=CARD_FORMAT, input_size="16"), tmp_path / "e.pt")
    with pytest.raises(ByolError) as err:
        byol.load_encoder(tmp_path / "e.pt")
    _one_line_naming(err.value, "e.json is damaged: input_size is '16'", "export the encoder again")


ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.floats(-20, 20), max_size=4),
                     st.lists(st.text(max_size=4), max_size=4), st.dictionaries(st.text(max_size=3), st.integers()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(sorted(CLASSIFIER_FIELDS) + ["format"]), value=ANY_JSON, remove=st.booleans())
def test_any_edit_of_any_field_is_refused_in_one_line_or_scores_finite(classifier, tmp_path, field, value, remove):
    folder = _edited(classifier, tmp_path, field, value, remove)
    try:
        loaded = byol.load_classifier(folder)
        model, classes = loaded.model, loaded.classes
    except ByolError as err:
        assert "\n" not in str(err) and str(folder) in str(err)
        return
    card = json.loads((folder / CARD).read_text())
    side = min(card["input_size"], 32)  # any accepted size: the network pools to one vector
    images = torch.rand(2, 3, side, side)
    mean, std = torch.tensor(card["mean"]).view(1, 3, 1, 1), torch.tensor(card["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((images - mean) / std)
    assert logits.shape == (2, len(classes)) and torch.isfinite(logits).all()
