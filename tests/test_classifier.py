"""byol finetune, predict, load_classifier and the export of a classifier, end to end."""

import csv
import json

import pytest
import torch
import torchvision
from safetensors.torch import load_file

import byol
from byol.classifier import finetune_folder, predict_folder
from byol.cli import main
from byol.config import Config
from byol.core.errors import ByolError

from byol.data.folders import list_images
from byol.data.memory import decode_into_memory
from byol.data.views import CIFAR10_MEAN, CIFAR10_STD, ViewSpec, eval_transform
from byol.eval.finetune import FinetuneSettings, FinetuneJob, train_classifier, train_spec, with_head
from byol.methods import build_learner
from tests.conftest import write_learner_checkpoint

QUICK = FinetuneSettings(epochs=4, batch_size=32, lr=0.05, head_lr_mult=1.0, precision="fp32", workers=0)


def run_with_encoder(folder, encoder_state=None):
    """A run folder whose online encoder is `encoder_state` (or the fresh one)."""
    config = Config(width=0.125, projector_hidden=16, predictor_hidden=16, projection_dim=8)
    learner = build_learner(config)
    if encoder_state is not None:
        learner.online.encoder.load_state_dict(encoder_state)
    folder.mkdir(parents=True)
    write_learner_checkpoint(learner, config, folder)
    return folder


@pytest.fixture(scope="module")
def separating_run(small_folders, tmp_path_factory):
    """A run whose encoder was trained (with labels) to tell the four classes apart: what a
    good pretraining gives, known to be good."""
    torch.manual_seed(0)
    model = with_head(byol.build_encoder("resnet18", width=0.125, cifar_stem=True), 4)
    spec = ViewSpec(size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    fit = FinetuneJob(decode_into_memory(list_images(small_folders[0]), 32), train_spec(spec, 0.5),
              FinetuneSettings(epochs=8, batch_size=32, head_lr_mult=1.0, precision="fp32"), 0.05, torch.device("cpu"),
              seed=0)
    train_classifier(model, fit, epochs=8)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    return run_with_encoder(tmp_path_factory.mktemp("separating") / "run", state)


@pytest.fixture(scope="module")
def finetuned(small_folders, separating_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned") / "classifier"
    result = finetune_folder(separating_run, str(small_folders[0]), str(small_folders[1]), out, "2", QUICK,
                             torch.device("cpu"), seed=0, baseline=True)
    return out, result


def test_from_two_labels_a_class_the_separating_encoder_beats_random_init_by_far(finetuned):
    out, result = finetuned
    assert result["labels"] == 8 and result["classes"] == 4 and result["test_images"] == 64
    scores = {name: result[name]["top1"] for name in ("pretrained", "random_init", "linear")}
    # the encoder itself scores 86%; 4 classes: chance is 25%
    assert scores["pretrained"] >= 65 and scores["linear"] >= 65, scores
    assert scores["pretrained"] - scores["random_init"] >= 35, scores
    assert json.loads((out / "finetune.json").read_text()) == json.loads(json.dumps(result))


def test_labels_txt_names_two_training_images_a_class_and_reproduces_the_subset(finetuned, small_folders):
    out, _ = finetuned
    names = (out / "labels.txt").read_text().splitlines()
    assert sorted(name.split("/")[0] for name in names) == sorted(["checks", "disc", "horizontal", "vertical"] * 2)
    assert all((small_folders[0] / name).is_file() for name in names)


def test_the_test_folder_never_chooses_the_recipe(finetuned, separating_run, small_folders, tmp_path):
    """Scored against another test folder (the training folder itself), the choice is the same."""
    _, result = finetuned
    other = finetune_folder(separating_run, str(small_folders[0]), str(small_folders[0]), tmp_path / "c", "2", QUICK,
                            torch.device("cpu"), seed=0, baseline=False)
    chosen = ("lr", "epochs", "val_top1")
    assert {k: other["pretrained"][k] for k in chosen} == {k: result["pretrained"][k] for k in chosen}
    assert (tmp_path / "c" / "labels.txt").read_text() == (finetuned[0] / "labels.txt").read_text()


def test_predict_writes_one_row_a_file_an_empty_label_for_a_broken_one_and_finetunes_accuracy(
        finetuned, small_folders, tmp_path):
    out, result = finetuned
    test = tmp_path / "test"
    for path in sorted(small_folders[1].rglob("*.jpg")):
        (test / path.parent.name).mkdir(parents=True, exist_ok=True)
        (test / path.parent.name / path.name).write_bytes(path.read_bytes())
    (test / "disc" / "broken.jpg").write_bytes(b"not a jpeg")
    summary = predict_folder(out, test, tmp_path / "labels.csv")
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert len(rows) == 65 and summary["undecodable"] == 1
    broken = [row for row in rows if row["file"] == "disc/broken.jpg"]
    assert broken == [dict(file="disc/broken.jpg", label="", score="")]
    scored = [row for row in rows if row["label"]]
    accuracy = 100 * sum(row["label"] == row["file"].split("/")[0] for row in scored) / len(scored)
    assert accuracy == pytest.approx(result["pretrained"]["top1"], abs=1e-4)
    assert summary["top1"] == pytest.approx(accuracy)
    assert all(0.25 <= float(row["score"]) <= 1 for row in scored)  # the likeliest of 4 classes


def test_load_classifier_gives_the_model_in_eval_mode_and_its_classes(finetuned, small_folders):
    out, _ = finetuned
    loaded = byol.load_classifier(out)
    model, classes = loaded.model, loaded.classes
    assert not model.training and classes == ["checks", "disc", "horizontal", "vertical"]
    card = json.loads((out / "model.json").read_text())
    images = decode_into_memory(list_images(small_folders[1]), 32).images[:8]
    spec = ViewSpec(size=32, mean=tuple(card["mean"]), std=tuple(card["std"]))
    assert model(eval_transform(images, spec)).shape == (8, 4)


def test_a_narrow_classifier_exports_its_weights_and_says_it_needs_byol(finetuned, tmp_path):
    out, _ = finetuned
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "model.safetensors")]) == 0
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["torchvision"] == "width 0.125 has no torchvision counterpart: load it with byol.load_classifier"
    mine = byol.load_classifier(out).model
    exported = load_file(tmp_path / "model.safetensors")
    assert exported.keys() == mine.state_dict().keys() and exported["fc.weight"].shape == (4, 64)


def test_a_full_width_classifier_exports_into_torchvision_resnet18_with_the_same_logits(small_folders, tmp_path):
    config = Config(width=1.0, projector_hidden=16, predictor_hidden=16, projection_dim=8)
    run = tmp_path / "run"
    run.mkdir()
    write_learner_checkpoint(build_learner(config), config, run)
    quick = FinetuneSettings(epochs=1, batch_size=32, lr=0.01, precision="fp32", workers=0)
    finetune_folder(run, str(small_folders[0]), str(small_folders[1]), tmp_path / "c", "4", quick,
                    torch.device("cpu"), seed=0, baseline=False)
    assert main(["export", "--checkpoint", str(tmp_path / "c"), "--out", str(tmp_path / "m.safetensors")]) == 0
    recipe = json.loads((tmp_path / "m.json").read_text())["torchvision"]
    assert recipe.startswith("model = torchvision.models.resnet18(num_classes=4); model.conv1 = ")
    tv = torchvision.models.resnet18(num_classes=4)
    tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool = torch.nn.Identity()
    tv.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
    mine = byol.load_classifier(tmp_path / "c").model
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(tv.eval()(x), mine(x))


@pytest.mark.parametrize("args, says", [
    (["--labels", "0%"], "above 0%"),
    (["--labels", "101%"], "at most 100%"),
    (["--labels", "65"], "class 'checks' has only 64 images"),
    (["--test", "{single}"], "differ from those of"),
    (["--train", "{single}"], "has a single class"),
    (["--train", "{flat}"], "has no class sub-folders"),
    (["--labels", "1"], "choosing the fine-tuning rate needs a class with 2 or more labelled images"),
    (["--set", "epochs=0"], "epochs is 0"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_training(small_folders, separating_run, tmp_path, capsys,
                                                              args, says):
    single, flat = tmp_path / "single", tmp_path / "flat"
    (single / "checks").mkdir(parents=True)
    flat.mkdir()
    for i, path in enumerate(sorted(small_folders[1].rglob("*.jpg"))[:6]):
        (single / "checks" / path.name).write_bytes(path.read_bytes())
        (flat / f"{i}.jpg").write_bytes(path.read_bytes())
    base = {"--checkpoint": str(separating_run), "--train": str(small_folders[0]), "--test": str(small_folders[1]),
            "--out": str(tmp_path / "out")}
    pairs = dict(zip(args[::2], [a.format(single=single, flat=flat) for a in args[1::2]]))
    argv = ["finetune", *[x for k, v in {**base, **pairs}.items() if k != "--set" for x in (k, v)],
            *(["--set", pairs["--set"]] if "--set" in pairs else []), "--set", "workers=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_predict_refuses_a_file_it_did_not_write_and_a_folder_that_is_no_classifier(finetuned, small_folders,
                                                                                   tmp_path):
    out, _ = finetuned
    (tmp_path / "mine.csv").write_text("name,score\nx,1\n")
    with pytest.raises(ByolError, match="not a prediction table byol wrote"):
        predict_folder(out, small_folders[1], tmp_path / "mine.csv")
    assert (tmp_path / "mine.csv").read_text() == "name,score\nx,1\n"
    with pytest.raises(ByolError, match="is not a classifier folder"):
        predict_folder(tmp_path, small_folders[1], tmp_path / "p.csv")
