"""Pretrained weights from every source byol takes: files by torchvision's and timm's names,
torchvision's weights API through the torch hub cache, runs and exports; damaged ones are one line."""

import hashlib
import os

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import byol
from byol.config import Config
from byol.core.errors import ByolError
from byol.eval.pretrained import hub_file, read_pretrained, resnet_of
from byol.export import export_encoder
from byol.methods import build_learner
from tests.conftest import trained_looking, write_learner_checkpoint

IMAGENET_RESNET18 = "resnet18-f37072fd.pth"  # the file name of torchvision's resnet18.IMAGENET1K_V1


def torchvision_resnet18(seed: int = 3) -> torch.nn.Module:
    """torchvision's ResNet-18 with its classifier, weights and statistics moved from their init."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return trained_looking(torchvision.models.resnet18(), scale=0.05, seed=seed)


def features_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """torchvision's model without its classifier, as a user writes it."""
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        return model.eval()(images)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_a_torchvision_resnet18_state_dict_loads_by_file_and_gives_torchvisions_features(tmp_path, suffix):
    model = torchvision_resnet18()
    file = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(file)) if suffix == ".safetensors" else torch.save(state, file)
    images = torch.randn(2, 3, 64, 64)
    pretrained = read_pretrained(file)
    assert pretrained.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert (pretrained.card["architecture"], pretrained.card["width"], pretrained.card["cifar_stem"]) == (
        "resnet18", 1.0, False)
    assert any("classifier (2 tensors) left out" in line for line in pretrained.notes)
    with torch.no_grad():
        torch.testing.assert_close(byol.load_encoder(file)(images), features_of(model, images))


def test_torchvision_weights_by_name_are_read_from_a_filled_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = torchvision_resnet18(seed=4)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_RESNET18
    cached.parent.mkdir(parents=True)
    torch.save(model.state_dict(), cached)
    pretrained = read_pretrained("torchvision:resnet18.IMAGENET1K_V1")
    assert pretrained.file == cached
    assert pretrained.sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert pretrained.card["input_size"] == 224 and pretrained.card["mean"] == [0.485, 0.456, 0.406]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(pretrained.encoder()(images), features_of(model, images))


def test_the_download_fills_the_torch_hub_cache_once_and_checks_the_hash_in_the_file_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = tmp_path / "server"
    served.mkdir()
    content = tmp_path / "weights.pth"
    torch.save(torchvision_resnet18().state_dict(), content)
    digest = hashlib.sha256(content.read_bytes()).hexdigest()
    good = served / f"resnet18-{digest[:8]}.pth"
    good.write_bytes(content.read_bytes())
    cached = hub_file(good.as_uri(), "a test")
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / good.name
    assert cached.read_bytes() == good.read_bytes()
    good.unlink()  # a second read is the cache's: nothing is fetched
    assert hub_file(good.as_uri(), "a test") == cached
    wrong = served / "resnet18-00000000.pth"
    wrong.write_bytes(content.read_bytes())
    with pytest.raises(ByolError, match=r"^a test: not in the torch hub cache .* and not downloaded"):
        hub_file(wrong.as_uri(), "a test")
    assert not (cached.parent / wrong.name).exists()
    with pytest.raises(ByolError, match="not in the torch hub cache"):
        hub_file((served / "resnet18-12345678.pth").as_uri(), "a test")


def test_unknown_torchvision_names_and_weights_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ByolError, match="byol's encoders take torchvision's resnet18, resnet34, resnet50"):
        read_pretrained("torchvision:vit_b_16.IMAGENET1K_V1")
    with pytest.raises(ByolError, match="no weights 'IMAGENET1K_V9' for resnet50: choose resnet50.IMAGENET1K_V1, "
                                        "resnet50.IMAGENET1K_V2"):
        read_pretrained("torchvision:resnet50.IMAGENET1K_V9")


@pytest.mark.parametrize("name,width,cifar_stem", [("resnet18", 0.125, True), ("resnet34", 0.25, False),
                                                   ("resnet50", 0.125, False)])
def test_the_architecture_of_a_resnet_state_dict_is_read_from_its_keys(name, width, cifar_stem):
    encoder = byol.build_encoder(name, width, cifar_stem)
    assert resnet_of(encoder.state_dict()) == (name, width, cifar_stem)
    assert resnet_of(byol.build_encoder("timm:resnet18").state_dict()) == ("resnet18", 1.0, False)  # timm names ResNets alike
    assert resnet_of({"blocks.0.weight": torch.ones(2)}) is None


def run_folder(folder, seed: int = 0, **changes):
    config = Config(width=0.125, projector_hidden=16, predictor_hidden=16, projection_dim=8, seed=seed, **changes)
    learner = build_learner(config)
    trained_looking(learner, scale=0.1, seed=seed)
    folder.mkdir(parents=True)
    write_learner_checkpoint(learner, config, folder, step=5)
    return folder, learner


def test_a_run_a_checkpoint_and_its_export_give_the_same_encoder(tmp_path):
    run, learner = run_folder(tmp_path / "run")
    export_encoder(run, tmp_path / "encoder.safetensors")
    images = torch.randn(3, 3, 32, 32)
    expected = learner.encoder.eval()(images)
    for source in (run, run / "checkpoint.pt", tmp_path / "encoder.safetensors", str(run)):
        torch.testing.assert_close(read_pretrained(source).encoder()(images), expected)
    assert set(read_pretrained(run).heads) == {k for k in learner.state_dict()
                                               if k.startswith(("online.projector.", "predictor."))}


def test_damaged_or_foreign_weight_files_are_one_line_and_a_pickle_payload_never_runs(tmp_path):
    state = torchvision_resnet18().state_dict()
    whole = tmp_path / "whole.pt"
    torch.save(state, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ByolError, match="truncated.pt is not a PyTorch checkpoint|truncated.pt is not a readable"):
        read_pretrained(truncated)
    safetensors = tmp_path / "whole.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(safetensors.read_bytes()[:1000])
    with pytest.raises(ByolError, match="cut.safetensors is not a readable safetensors file"):
        read_pretrained(cut)
    marker = tmp_path / "the payload ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    hostile = tmp_path / "hostile.pt"
    torch.save({"conv1.weight": Payload()}, hostile)
    with pytest.raises(ByolError, match="refused to load .*hostile.pt: it holds pickled objects"):
        read_pretrained(hostile)
    assert not marker.exists()
    torch.save({"epochs": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(ByolError, match="no_tensors.pt holds no state_dict"):
        read_pretrained(tmp_path / "no_tensors.pt")
    with pytest.raises(ByolError, match="missing.safetensors does not exist: pass a byol run folder or checkpoint, a byol export"):
        read_pretrained(tmp_path / "missing.safetensors")


def test_a_state_dict_wrapped_by_a_training_script_is_unwrapped(tmp_path):
    model = torchvision_resnet18()
    file = tmp_path / "wrapped.pth"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, file)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(read_pretrained(file).encoder()(images), features_of(model, images))


def test_timm_weights_by_name_are_read_from_a_filled_hugging_face_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # nothing may be fetched
    model = trained_looking(timm.create_model("resnet18", pretrained=False), scale=0.05, seed=6)
    repo = tmp_path / "hub" / ("models--" + model.pretrained_cfg["hf_hub_id"].replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    file = repo / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    pretrained = read_pretrained("timm:resnet18")
    assert pretrained.file == file and pretrained.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert pretrained.card["architecture"] == "timm:resnet18" and pretrained.card["input_size"] == 224
    images = torch.randn(2, 3, 64, 64)
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(pretrained.encoder()(images), model.eval()(images))
