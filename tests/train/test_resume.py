"""Never lose a run: killed, stopped or crashed runs resume onto the same trajectory."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from byol.config import Config
from byol.errors import ByolError
from byol.methods import BYOL
from byol.train.checkpoint import safe_load
from byol.train.loop import pretrain

SETTINGS = dict(image_size=16, width=0.125, projector_hidden=32, predictor_hidden=32, projection_dim=16,
                batch_size=16, epochs=6, optimizer="adamw", lr=0.004, warmup_epochs=0.5, tau_base=0.9,
                deterministic=True, threads=1, checkpoint_every=5, log_every=1, collapse_every=10, knn_every=2)
TOTAL_STEPS = 6 * 256 // 16  # small_cifar: 256 training images


def start(data, out, *extra):
    command = [sys.executable, "-m", "byol", "pretrain", "--data", str(data), "--out", str(out)]
    for key, value in SETTINGS.items():
        command += ["--set", f"{key}={value}"]
    return subprocess.Popen(command + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def resume(out):
    return subprocess.run([sys.executable, "-m", "byol", "pretrain", "--resume", str(out)],
                          capture_output=True, text=True)


def wait_for(path, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} appeared: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.002)


def trajectory(out):
    """Every logged loss, lr, tau, collapse statistic and k-NN score, without the timings."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("img_s", "time_s")} for r in records]


def assert_bit_identical(out, reference):
    a, b = safe_load(out / "checkpoint.pt"), safe_load(reference / "checkpoint.pt")
    assert a["step"] == b["step"] == TOTAL_STEPS
    assert a["learner"].keys() == b["learner"].keys()
    for key in a["learner"]:
        assert torch.equal(a["learner"][key], b["learner"][key]), key
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert trajectory(out) == trajectory(reference)


@pytest.fixture(scope="module")
def reference(small_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    process = start(small_cifar[0], out)
    assert process.wait() == 0, process.stderr.read()
    return out


def test_a_run_killed_with_sigkill_and_resumed_ends_bit_identical(small_cifar, reference, tmp_path):
    out = tmp_path / "run"
    process = start(small_cifar[0], out)
    wait_for(out / "checkpoints" / "step-00000010.pt", process)
    process.kill()  # SIGKILL: no handler, no cleanup, possibly in the middle of a write
    process.wait()
    killed_at = safe_load(out / "checkpoint.pt")["step"]
    # step 10's file is complete once it appears; a kill before checkpoint.pt is linked to it
    # leaves the previous checkpoint (step 5) as the last good one, which is as correct
    assert 5 <= killed_at < TOTAL_STEPS and not (out / "summary.json").exists()
    finished = resume(out)
    assert finished.returncode == 0, finished.stderr
    assert f"resuming {out} at step {killed_at}" in finished.stderr
    assert_bit_identical(out, reference)
    assert_tensorboard_matches_the_metrics(out)  # the steps the killed run logged twice are purged


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_resume_continues(small_cifar, reference, tmp_path):
    out = tmp_path / "run"
    process = start(small_cifar[0], out)
    wait_for(out / "checkpoints" / "step-00000005.pt", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 128 + signal.SIGTERM
    message = process.stderr.read().strip().split("\n")[-1]
    stopped_at = safe_load(out / "checkpoint.pt")["step"]
    assert message == (f"byol: error: stopped by SIGTERM at step {stopped_at}; the checkpoint is written: "
                       f"resume with `byol pretrain --resume {out}`")
    finished = resume(out)
    assert finished.returncode == 0, finished.stderr
    assert_bit_identical(out, reference)


def test_only_the_newest_checkpoints_are_kept_and_the_latest_is_the_last(reference):
    kept = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert kept == ["step-00000095.pt", "step-00000096.pt"]  # every 5 steps and each epoch's end; keep 2
    latest, newest = reference / "checkpoint.pt", reference / "checkpoints" / kept[-1]
    assert os.path.samefile(latest, newest)


def test_resuming_with_another_config_is_refused_naming_the_difference(small_cifar, reference, tmp_path):
    out = tmp_path / "run"
    process = start(small_cifar[0], out)
    wait_for(out / "checkpoints" / "step-00000005.pt", process)
    process.kill()
    process.wait()
    changed = start(small_cifar[0], out, "--set", "lr=0.1")
    assert changed.wait() == 2
    assert "the config differs from the run's in lr (run: 0.004, now: 0.1)" in changed.stderr.read()


def tiny_config(data, **changes):
    settings = {**SETTINGS, "epochs": 1, "knn_every": 0, "collapse_every": 0, "checkpoint_every": 1, **changes}
    return Config(data=str(data), **settings).validate()


def nan_on_call(monkeypatch, bad_call):
    """BYOL's loss, made NaN on its `bad_call`-th call (counting from 1)."""
    original, calls = BYOL.loss, []

    def loss(self, view_1, view_2):
        calls.append(1)
        value = original(self, view_1, view_2)
        return value * float("nan") if len(calls) == bad_call else value

    monkeypatch.setattr(BYOL, "loss", loss)


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
        small_cifar, tmp_path, monkeypatch):
    nan_on_call(monkeypatch, bad_call=4)
    with pytest.raises(ByolError, match="the loss became nan at step 3: the learning rate may be too high"):
        pretrain(tiny_config(small_cifar[0]), tmp_path / "run")
    kept = safe_load(tmp_path / "run" / "checkpoint.pt")
    assert kept["step"] == 3
    assert all(torch.isfinite(v).all() for v in kept["learner"].values() if v.is_floating_point())


def test_with_nonfinite_skip_the_bad_step_is_skipped_and_counted(small_cifar, tmp_path, monkeypatch):
    nan_on_call(monkeypatch, bad_call=4)
    result = pretrain(tiny_config(small_cifar[0], nonfinite="skip"), tmp_path / "run")
    assert result["skipped_steps"] == 1 and result["steps"] == 256 // 16  # the step count is still reached
    kept = safe_load(tmp_path / "run" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in kept["learner"].values() if v.is_floating_point())
    skips = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "skipped_steps" in line]
    assert len(skips) == 1 and skips[0]["step"] == 3 and skips[0]["skipped_steps"] == 1
    assert math.isnan(skips[0]["loss"])


def assert_tensorboard_matches_the_metrics(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    logged = [(r["step"], r["loss"]) for r in trajectory(out) if "loss" in r]
    assert [s for s, _ in losses] == [s for s, _ in logged] == list(range(1, TOTAL_STEPS + 1))
    assert [v for _, v in losses] == pytest.approx([v for _, v in logged], rel=1e-6)  # float32 in the events
    assert {"knn/top1", "collapse/proj_std", "train/lr", "train/tau", "train/img_s"} <= set(events.Tags()["scalars"])


def test_tensorboard_gets_the_scalars_of_metrics_jsonl(reference):
    assert_tensorboard_matches_the_metrics(reference)
