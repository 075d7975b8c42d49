"""`byol pretrain --init`: a new run that starts from weights (continued pretraining), recorded
with its file's digest; never a partial load, never a resume."""

import hashlib
import json
import shutil

import pytest
import torch
import yaml

from byol.cli import main
from byol.config import Config
from byol.core.errors import ByolError
from byol.eval.checkpoints import load_run_learner
from byol.train.start import starting_weights
from byol.train.trainer import Trainer, pretrain

TINY = dict(batch_size=16, width=1 / 16, optimizer="sgd", lr=0.05, projector_hidden=32, predictor_hidden=32,
            projection_dim=8, warmup_epochs=0, tau_base=0.9, collapse_every=0, knn_every=0, log_every=1)


def tiny(data, **changes) -> Config:
    return Config(data=str(data), **{**TINY, "steps": 3, **changes}).checked()


@pytest.fixture(scope="module")
def first(small_folders, tmp_path_factory):
    """A finished run of 3 steps: its weights, heads and optimiser state are not their initial ones."""
    out = tmp_path_factory.mktemp("first") / "run"
    pretrain(tiny(small_folders[0], seed=5), out)
    return out


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def trainer_at_step_0(config: Config, out) -> Trainer:
    start, config = starting_weights(config, None)
    return Trainer(config, out, torch.device("cpu"), start=start)


def test_init_from_a_run_starts_online_and_target_at_its_online_network_with_a_new_optimizer(
        first, small_folders, tmp_path):
    trainer = trainer_at_step_0(tiny(small_folders[0], init=str(first), seed=1), tmp_path / "second")
    source = load_run_learner(first)[0]
    learner = trainer.learner
    assert states_equal(learner.online.state_dict(), source.online.state_dict())
    assert states_equal(learner.predictor.state_dict(), source.predictor.state_dict())
    assert states_equal(learner.target.state_dict(), source.online.state_dict())  # the run's online, not its target
    assert not states_equal(source.target.state_dict(), source.online.state_dict())
    assert trainer.optimizer.state_dict()["state"] == {} and trainer.progress.step == 0
    assert trainer.notices[0].startswith(f"init: encoder, projector and predictor from {first} (sha256 ")


def test_heads_of_other_shapes_start_new_and_the_line_says_which(first, small_folders, tmp_path):
    trainer = trainer_at_step_0(tiny(small_folders[0], init=str(first), projector_hidden=64), tmp_path / "second")
    source = load_run_learner(first)[0]
    assert states_equal(trainer.learner.encoder.state_dict(), source.encoder.state_dict())
    assert states_equal(trainer.learner.predictor.state_dict(), source.predictor.state_dict())
    assert trainer.learner.online.projector[0].weight.shape != source.online.projector[0].weight.shape
    assert states_equal(trainer.learner.target.state_dict(), trainer.learner.online.state_dict())
    assert "init: encoder and predictor from" in trainer.notices[0] and trainer.notices[0].endswith("projector new")


def test_another_width_is_one_line_naming_the_keys_and_the_flags_that_match(first, small_folders, tmp_path):
    with pytest.raises(ByolError) as raised:
        trainer_at_step_0(tiny(small_folders[0], init=str(first), width=0.125), tmp_path / "second")
    message = str(raised.value)
    assert "\n" not in message and "does not match this encoder: keys" in message and "of another shape" in message
    assert message.endswith("(it is resnet18 x0.0625: pass --encoder resnet18 --width 0.0625 --set cifar_stem=true)")


def test_the_run_records_its_init_with_the_files_digest_in_config_summary_and_export(
        first, small_folders, tmp_path, capsys):
    train = str(small_folders[0])
    out = tmp_path / "second"
    flags = ["--data", train, "--batch-size", "16", "--width", "0.0625", "--set", "steps=2", "--set", "knn_every=0",
             "--set", "projector_hidden=32", "--set", "predictor_hidden=32", "--set", "projection_dim=8"]
    assert main(["pretrain", "--init", str(first), "--out", str(out), *flags]) == 0
    digest = hashlib.sha256((first / "checkpoint.pt").read_bytes()).hexdigest()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["init"] == dict(source=str(first), sha256=digest)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["init"], saved["init_sha256"]) == (str(first), digest)
    assert f"init_sha256: {digest}  # from the sha256 of init's file" in (out / "config.yaml").read_text()
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "encoder.safetensors")]) == 0
    card = json.loads((tmp_path / "encoder.json").read_text())
    assert (card["init"], card["init_sha256"]) == (str(first), digest)
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(out), "--init", str(first)]) == 2
    assert "--init starts a new run from weights and --resume continues a run" in capsys.readouterr().err
    other = tmp_path / "encoder.safetensors"  # weights that fit, in a file other than the one recorded
    assert main(["pretrain", "--config", str(out / "config.yaml"), "--set", f"init={other}",
                 "--out", str(tmp_path / "third")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has sha256" in err and "as init_sha256 says" in err


def test_a_resumed_init_run_continues_from_its_checkpoint_without_reading_init_again(first, small_folders, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(first, source)
    out = tmp_path / "second"
    config = tiny(small_folders[0], init=str(source), steps=4, checkpoint_every=2)
    pretrain(config, out)
    digest = yaml.safe_load((out / "config.yaml").read_text())["init_sha256"]
    (out / "summary.json").unlink()  # the run as a kill after its last checkpoint leaves it
    shutil.rmtree(source)  # a resume needs the run's checkpoint, not the weights it started from
    result = pretrain(config, out)
    assert result["steps"] == 4 and result["init"] == dict(source=str(source), sha256=digest)
    assert yaml.safe_load((out / "config.yaml").read_text())["init_sha256"] == digest
    with pytest.raises(ByolError, match="differs from the run's in init"):
        (out / "summary.json").unlink()
        pretrain(tiny(small_folders[0], init=str(first), steps=4, checkpoint_every=2), out)
