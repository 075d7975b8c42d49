"""Exported encoders load into plain torchvision models; embeddings come one row per file."""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torchvision
from safetensors.torch import load_file

import byol
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import name_from_line, name_line
from byol.data.folders import list_images
from byol.data.memory import decode_into_memory
from byol.data.views import eval_transform, view_specs
from byol.eval.checkpoints import load_run_encoder
from byol.export import embed_folder, export_encoder
from byol.methods import build_learner
from tests.conftest import write_learner_checkpoint


def write_run(folder, **changes):
    """A run folder whose checkpoint holds a learner with non-default weights and statistics."""
    config = Config(projector_hidden=16, predictor_hidden=16, projection_dim=8, **changes)
    learner = build_learner(config)
    with torch.no_grad():
        for p in learner.online.parameters():
            p.mul_(1.5).add_(0.01)
        for name, buffer in learner.online.named_buffers():
            if "running" in name:
                buffer.add_(0.3)
    folder.mkdir(parents=True)
    write_learner_checkpoint(learner, config, folder, step=7)
    return folder


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_the_export_loads_strictly_into_torchvision_with_the_cifar_stem_and_gives_the_same_features(
        tmp_path, suffix):
    run = write_run(tmp_path / "run", width=1.0, cifar_stem=True)
    card = export_encoder(run, tmp_path / f"encoder{suffix}")
    assert json.loads((tmp_path / "encoder.json").read_text()) == card
    assert card["feature_dim"] == 512 and card["input_size"] == 32 and card["step"] == 7
    weights = load_file(str(tmp_path / "encoder.safetensors")) if suffix == ".safetensors" else torch.load(
        tmp_path / "encoder.pt", weights_only=True)
    model = torchvision.models.resnet18()  # what a user writes, following card["torchvision"]
    model.fc = torch.nn.Identity()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.load_state_dict(weights, strict=True)
    images = torch.randn(4, 3, 32, 32)
    encoder, _, _ = load_run_encoder(run)
    torch.testing.assert_close(model.eval()(images), encoder(images))
    torch.testing.assert_close(byol.load_encoder(tmp_path / f"encoder{suffix}")(images), encoder(images))
    assert not byol.load_encoder(run).training


def test_an_exported_encoder_of_another_width_needs_byol_and_says_so(tmp_path):
    run = write_run(tmp_path / "run", width=0.25)
    card = export_encoder(run, tmp_path / "narrow.safetensors")
    assert "no torchvision counterpart" in card["torchvision"]
    assert byol.load_encoder(tmp_path / "narrow.safetensors")(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    card["width"] = 0.5  # a card that does not match its weights is refused, naming the shapes
    (tmp_path / "narrow.json").write_text(json.dumps(card))
    with pytest.raises(ByolError, match="does not match this encoder: keys .* of another shape"):
        byol.load_encoder(tmp_path / "narrow.safetensors")
    with pytest.raises(ByolError, match="name the file .safetensors"):
        export_encoder(run, tmp_path / "encoder.bin")


def test_embed_writes_one_row_per_file_and_nan_rows_for_undecodable_ones(small_folders, tmp_path):
    run = write_run(tmp_path / "run", width=0.125)
    folder = small_folders[1]
    broken = tmp_path / "mixed"
    for item in sorted(folder.iterdir())[:2]:
        (broken / item.name).mkdir(parents=True)
        for image in sorted(item.iterdir())[:3]:
            (broken / item.name / image.name).write_bytes(image.read_bytes())
    (broken / sorted(folder.iterdir())[0].name / "zz_broken.jpg").write_bytes(b"not an image")
    result = embed_folder(run, broken, tmp_path / "emb.npy", batch_size=4, workers=0)
    rows = np.load(tmp_path / "emb.npy")
    files = (tmp_path / "emb.npy.files.txt").read_text().splitlines()
    assert result == dict(embeddings=str(tmp_path / "emb.npy"), images=7, dim=64, skipped=1)
    assert rows.shape == (7, 64) and len(files) == 7 and files[3].endswith("zz_broken.jpg")
    assert np.isnan(rows[3]).all() and not np.isnan(np.delete(rows, 3, axis=0)).any()
    # the same features as evaluation computes for the same images
    encoder, config, _ = load_run_encoder(run)
    decoded = decode_into_memory(list_images(broken), 32)
    expected = encoder(eval_transform(decoded.images, view_specs(config.augment, 32)[0]))
    np.testing.assert_allclose(np.delete(rows, 3, axis=0), expected.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_file_name_holding_a_newline_keeps_line_i_for_row_i(tmp_path):
    """One name a line: a newline, carriage return or backslash in a name is written escaped."""
    from PIL import Image

    run = write_run(tmp_path / "run", width=0.125)
    names = ["a.png", "two\nlines.png", "back\\slash.png", "carriage\rreturn.png", "z.png"]
    (tmp_path / "photos").mkdir()
    for shade, name in enumerate(names):
        Image.new("RGB", (8, 8), (40 * shade, 0, 0)).save(tmp_path / "photos" / name, format="PNG")
    embed_folder(run, tmp_path / "photos", tmp_path / "emb.npy", batch_size=2, workers=0)
    lines = (tmp_path / "emb.npy.files.txt").read_text().split("\n")[:-1]
    assert len(lines) == len(np.load(tmp_path / "emb.npy")) == 5
    assert [name_from_line(line) for line in lines] == sorted(names)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_every_name_is_one_line_and_reads_back(name):
    assert "\n" not in name_line(name) and "\r" not in name_line(name)
    assert name_from_line(name_line(name)) == name


def test_the_export_and_embed_commands(small_folders, tmp_path, capsys):
    from byol.cli import main

    run = write_run(tmp_path / "run", width=0.125)
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "e.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["feature_dim"] == 64
    assert main(["embed", "--checkpoint", str(tmp_path / "e.safetensors"), "--data", str(small_folders[1]),
                 "--out", str(tmp_path / "e.npy"), "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 64
    assert np.load(tmp_path / "e.npy").shape == (64, 64)
    assert main(["embed", "--checkpoint", str(tmp_path / "nothing.safetensors"), "--data", str(small_folders[1]),
                 "--out", str(tmp_path / "x.npy")]) == 2
    assert "nothing.safetensors does not exist: pass a byol run folder or checkpoint" in capsys.readouterr().err


def test_embed_writes_the_same_rows_as_a_parquet_table(small_folders, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    run = write_run(tmp_path / "run", width=0.125)
    embed_folder(run, small_folders[1], tmp_path / "e.npy", batch_size=24, workers=0)
    result = embed_folder(run, small_folders[1], tmp_path / "e.parquet", batch_size=24, workers=0)
    table = pq.read_table(tmp_path / "e.parquet")
    assert result["images"] == table.num_rows == 64
    assert pq.ParquetFile(tmp_path / "e.parquet").num_row_groups == 3  # one per batch of 24
    assert table.column("file").to_pylist() == (tmp_path / "e.npy.files.txt").read_text().splitlines()
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
                                  np.load(tmp_path / "e.npy"))


def test_embed_refuses_an_unknown_output_format(small_folders, tmp_path):
    with pytest.raises(ByolError, match=r"name the file \.npy .* or \.parquet"):
        embed_folder(write_run(tmp_path / "run"), small_folders[1], tmp_path / "e.csv")


def test_parquet_without_pyarrow_names_the_fix(small_folders, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    with pytest.raises(ByolError, match=r"Parquet needs pyarrow \(pip install pyarrow\), or name the file \.npy"):
        embed_folder(write_run(tmp_path / "run"), small_folders[1], tmp_path / "e.parquet")


@pytest.mark.parametrize("exported", [False, True])
def test_load_encoder_leaves_the_callers_random_stream_alone(tmp_path, exported):
    source = write_run(tmp_path / "run", width=0.125)
    if exported:
        export_encoder(source, tmp_path / "enc.safetensors")
        source = tmp_path / "enc.safetensors"
    torch.manual_seed(99)
    expected = torch.rand(4)
    torch.manual_seed(99)
    byol.load_encoder(source)
    assert torch.equal(torch.rand(4), expected)
