import os
import pickle

import pytest
import torch

from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import safe_load, save_torch
from byol.eval.checkpoints import load_run_encoder
from byol.methods import build_learner
from tests.conftest import write_learner_checkpoint


def write_run(tmp_path, **changes):
    config = Config(width=1 / 16, projector_hidden=16, predictor_hidden=16, projection_dim=4, **changes)
    learner = build_learner(config)
    with torch.no_grad():
        for p in learner.online.parameters():
            p.add_(1.0)
    write_learner_checkpoint(learner, config, tmp_path, step=3)
    return learner


def test_the_run_encoder_comes_back_exactly_and_random_init_is_fresh(tmp_path):
    learner = write_run(tmp_path)
    encoder, config, path = load_run_encoder(tmp_path)
    assert path == tmp_path / "checkpoint.pt" and config.width == 1 / 16 and not encoder.training
    for key, value in learner.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)
    fresh, _, _ = load_run_encoder(tmp_path, random_init=True)
    assert not torch.equal(fresh.conv1.weight, learner.encoder.conv1.weight)


def test_the_random_init_learner_is_the_one_pretraining_started_from(tmp_path):
    from byol.core.runtime import seed_everything
    from byol.eval.checkpoints import load_run_learner

    write_run(tmp_path, seed=7)
    start, _, _ = load_run_learner(tmp_path, random_init=True)
    trained, config, _ = load_run_learner(tmp_path)
    seed_everything(config.seed)  # what pretrain() does before it builds the learner
    expected = build_learner(config).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in start.state_dict().items())
    assert not torch.equal(trained.online.encoder.conv1.weight, expected["online.encoder.conv1.weight"])


def test_a_checkpoint_for_another_width_is_refused_naming_the_shapes(tmp_path):
    write_run(tmp_path)
    state = safe_load(tmp_path / "checkpoint.pt")
    state["config"]["width"] = 1 / 8
    save_torch(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ByolError, match=r"does not match this encoder: keys .* of another shape \(e\.g\. conv1\.weight"):
        load_run_encoder(tmp_path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"learner": Exploit()}, f)
    torch.save({"learner": Exploit()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(ByolError, match="refused to load|not a PyTorch checkpoint"):
            safe_load(tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    save_torch({"a": torch.ones(2)}, tmp_path / "c.pt")
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        save_torch({"a": lambda: 0}, tmp_path / "c.pt")  # unpicklable: fails mid-write
    assert torch.equal(safe_load(tmp_path / "c.pt")["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
