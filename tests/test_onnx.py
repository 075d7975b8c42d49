"""ONNX exports: the same outputs as torch in onnxruntime, the card in the metadata, predictions
equal to the torch classifier's, and bad places refused in one line with nothing written."""

import csv
import json
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch

import byol
from byol import onnx_model
from byol.classifier import save_classifier
from byol.cli import main
from byol.core.errors import ByolError
from byol.eval.finetune import with_head
from byol.eval.cards import CARD_FORMAT
from tests.conftest import trained_looking

CARD = dict(format=CARD_FORMAT, architecture="resnet18", width=0.125, cifar_stem=True, input_size=32,
            feature_dim=64, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], method="byol")
CLASSES = ["checks", "disc", "horizontal", "vertical"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    out = tmp_path_factory.mktemp("onnx") / "classifier"
    out.mkdir()
    (out / ".byol").write_text("classifier\n")
    torch.manual_seed(0)
    model = trained_looking(with_head(byol.build_encoder("resnet18", 0.125, True), len(CLASSES)), 0.1, seed=0)
    save_classifier(model, CARD, CLASSES, out)
    return out, model


def test_the_onnx_classifier_gives_torchs_logits_at_any_batch_and_carries_its_card(classifier, tmp_path, capsys):
    folder, model = classifier
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "model.onnx")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_abs_difference"] <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["classes"]) == CLASSES and json.loads(metadata["input_size"]) == 32
    assert json.loads(metadata["mean"]) == CARD["mean"] and json.loads(metadata["std"]) == CARD["std"]
    for batch in (1, 3, 17):
        images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        logits = session.run(["logits"], {"images": images.numpy()})[0]
        with torch.no_grad():
            assert torch.allclose(torch.from_numpy(logits), model(images), atol=1e-4, rtol=0)


def test_the_onnx_encoder_of_a_run_gives_its_features(small_folders, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(small_folders[0]), "--out", str(run), "--width", "0.125", "--batch-size",
                 "32", "--set", "steps=3", "--set", "projector_hidden=32", "--set", "predictor_hidden=32", "--set",
                 "projection_dim=16", "--set", "tensorboard=false"]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "encoder.onnx")]) == 0
    encoder = byol.load_encoder(run)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = onnx_model.OnnxModel(tmp_path / "encoder.onnx")(images)
    with torch.no_grad():
        assert features.shape == (4, 64) and torch.allclose(features, encoder(images), atol=1e-4, rtol=0)


def test_predict_with_the_onnx_model_writes_the_torch_classifiers_table(classifier, small_folders, tmp_path):
    folder, _ = classifier
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "model.onnx")]) == 0
    test = str(small_folders[1])
    assert main(["predict", "--model", str(folder), "--data", test, "--out", str(tmp_path / "torch.csv")]) == 0
    assert main(["predict", "--model", str(tmp_path / "model.onnx"), "--data", test, "--out",
                 str(tmp_path / "onnx.csv")]) == 0
    rows = [list(csv.reader((tmp_path / name).open())) for name in ("torch.csv", "onnx.csv")]
    assert len(rows[0]) == 65 and [r[:2] for r in rows[0]] == [r[:2] for r in rows[1]]  # file and label
    assert all(abs(float(a[2]) - float(b[2])) < 1e-4 for a, b in zip(rows[0][1:], rows[1][1:]))


def test_an_onnx_export_into_a_classifier_folder_or_an_unwritable_place_writes_nothing(classifier, tmp_path, capsys,
                                                                                        monkeypatch):
    folder, _ = classifier
    before = sorted(p.name for p in folder.iterdir())
    assert main(["export", "--checkpoint", str(folder), "--out", str(folder / "model.onnx")]) == 2
    assert "is inside a byol classifier folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before
    import tempfile

    def unwritable(*args, **kwargs):  # the place refuses new files, as a read-only or foreign folder does
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", unwritable)
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "model.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "permission denied" in err
    assert list(tmp_path.iterdir()) == []


def test_an_onnx_model_that_differs_from_torch_is_not_written(classifier, tmp_path, monkeypatch):
    folder, _ = classifier
    monkeypatch.setattr(onnx_model, "_difference", lambda model, path, size: 3e-3)
    with pytest.raises(ByolError, match="differs from the torch model by 3.00e-03 .more than 0.0001.: not written"):
        byol.classifier.export_model(folder, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_without_the_onnx_extra_the_export_is_one_line(classifier, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import fails
    assert main(["export", "--checkpoint", str(classifier[0]), "--out", str(tmp_path / "model.onnx")]) == 2
    assert "pip install 'byol[onnx]'" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_predict_refuses_an_onnx_file_byol_did_not_write_and_an_encoder(tmp_path, classifier, small_folders, capsys):
    (tmp_path / "other.onnx").write_bytes(b"not onnx")
    argv = ["predict", "--data", str(small_folders[1]), "--out", str(tmp_path / "p.csv")]
    assert main([*argv, "--model", str(tmp_path / "other.onnx")]) == 2
    assert "is not an ONNX model byol wrote" in capsys.readouterr().err
    encoder = with_head(byol.build_encoder("resnet18", 0.125, True), 2)
    encoder.fc = torch.nn.Identity()
    onnx_model.write_onnx(encoder.eval(), CARD, tmp_path / "encoder.onnx")
    assert main([*argv, "--model", str(tmp_path / "encoder.onnx")]) == 2
    assert "is an encoder, which has no classes" in capsys.readouterr().err
