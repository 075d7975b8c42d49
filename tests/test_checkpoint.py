"""What a checkpoint holds, written and read back through one type."""

import shutil

import pytest
import torch

from byol.checkpoint import HISTORY, LATEST, Checkpoint, read_checkpoint
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import safe_load, save_torch
from byol.eval.checkpoints import load_run_encoder
from byol.train.trainer import pretrain

# every entry of a checkpoint file, as docs/cli.md lists them
ENTRIES = {"learner", "config", "optimizer", "scaler", "budget", "step", "epoch", "batch_in_epoch", "skipped_steps",
           "train_seconds", "collapse_strikes", "data_changes", "metrics_bytes", "rng", "data", "format"}


@pytest.fixture(scope="module")
def run(small_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    config = Config(data=str(small_folders[0]), image_size=16, width=0.0625, projector_hidden=16, predictor_hidden=16,
                    projection_dim=8, batch_size=16, steps=3, optimizer="adamw", lr=1e-3, warmup_epochs=0,
                    knn_every=0, collapse_every=0, checkpoint_every=1, keep_checkpoints=2, threads=1, device="cpu")
    pretrain(config.checked(), out)
    return out


def test_a_checkpoint_file_holds_exactly_the_fields_of_the_type_and_reads_back_whole(run):
    content = safe_load(run / LATEST)
    assert set(content) == ENTRIES
    checkpoint, file = read_checkpoint(run)
    assert file == run / LATEST
    assert (checkpoint.progress.step, checkpoint.progress.epoch, checkpoint.progress.batch_in_epoch) == (
        content["step"], content["epoch"], content["batch_in_epoch"]) == (3, 0, 3)
    again = checkpoint.to_dict()
    assert set(again) == ENTRIES
    assert all(torch.equal(again["learner"][k], v) for k, v in content["learner"].items())
    assert {k: again[k] for k in ENTRIES - {"learner", "optimizer", "rng"}} == {
        k: content[k] for k in ENTRIES - {"learner", "optimizer", "rng"}}


def test_a_run_killed_before_its_checkpoint_pt_was_linked_is_read_from_its_newest_history_file(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / LATEST).unlink()  # the kill came between the history file and the link
    checkpoint, file = read_checkpoint(copy)
    assert file == copy / HISTORY / "step-00000003.pt" and checkpoint.progress.step == 3
    encoder, _, _ = load_run_encoder(copy)
    assert torch.equal(encoder.conv1.weight, load_run_encoder(run)[0].conv1.weight)


def test_a_checkpoint_from_before_runs_recorded_their_data_reads_with_no_data_and_no_changes(run, tmp_path):
    older = {k: v for k, v in safe_load(run / LATEST).items() if k not in ("data", "data_changes")}
    save_torch(older, tmp_path / LATEST)
    checkpoint, _ = read_checkpoint(tmp_path)
    assert checkpoint.data is None and checkpoint.progress.data_changes == []


@pytest.mark.parametrize("missing", ["optimizer", "step", "rng"])
def test_a_checkpoint_missing_an_entry_is_one_line_naming_the_file(run, tmp_path, missing):
    damaged = {k: v for k, v in safe_load(run / LATEST).items() if k != missing}
    save_torch(damaged, tmp_path / "c.pt")
    with pytest.raises(ByolError, match=rf"^{tmp_path / 'c.pt'} is not a byol checkpoint \(or one written by an "
                                        r"older byol\): pass the checkpoint.pt of a byol run folder$"):
        Checkpoint.from_dict(safe_load(tmp_path / "c.pt"), tmp_path / "c.pt")
