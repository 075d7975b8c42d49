"""Never lose a run: killed, stopped or crashed runs resume onto the same trajectory."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import safe_load, save_torch
from byol.methods import BYOL
from byol.train.lock import run_folder_lock
from byol.train.trainer import open_run, pretrain
from tests.conftest import write_learner_checkpoint

SETTINGS = dict(image_size=16, width=0.125, projector_hidden=32, predictor_hidden=32, projection_dim=16,
                batch_size=16, epochs=6, optimizer="adamw", lr=0.004, warmup_epochs=0.5, tau_base=0.9,
                deterministic=True, threads=1, checkpoint_every=5, log_every=1, collapse_every=10, knn_every=2)
TOTAL_STEPS = 6 * 256 // 16  # the 256 training images of small_folders
CASES = {  # name -> (settings beyond SETTINGS, total steps)
    "in memory": ({}, TOTAL_STEPS),
    # 96-px files cropped to 72 px are streamed (not decoded once, as the CPU recipe would): two loader workers cut the crops
    "streamed by 2 workers": (dict(image_size=72, cifar_stem=False, workers=2, decode_once=False, epochs=2,
                                   knn_every=0), 2 * 16),
    # the same images as shards of uneven counts, streamed by two workers: each role replays its run to the step
    "streamed shards by 2 workers": (dict(image_size=72, cifar_stem=False, workers=2, decode_once=False, epochs=2,
                                          knn_every=0), 2 * 16),
    # 16 micro-batches an epoch, 3 to a step: 5 steps, the 16th micro-batch dropped; checkpoints
    # only at the ends of epochs, where a micro-batch left over would be lost
    "accumulation remainder": (dict(accumulate=3, epochs=3, knn_every=0, checkpoint_every=1000), 3 * 5),
    # 2 small crops an image; views of 16 px, 24 from 3/8 of the run, 32 from 3/4: resumed at its step's size
    "multi-crop, progressive resizing": (dict(image_size=32, small_crops=2, start_size=16, epochs=2, knn_every=0),
                                         2 * 16),
}


def start(data, out, *extra, **settings):
    command = [sys.executable, "-m", "byol", "pretrain", "--data", str(data), "--out", str(out)]
    for key, value in {**SETTINGS, **settings}.items():
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
    return [{k: v for k, v in r.items() if k not in ("img_s", "loader_wait", "time_s")} for r in records]


def assert_bit_identical(out, reference, total_steps=TOTAL_STEPS):
    a, b = safe_load(out / "checkpoint.pt"), safe_load(reference / "checkpoint.pt")
    assert a["step"] == b["step"] == total_steps
    assert a["learner"].keys() == b["learner"].keys()
    for key in a["learner"]:
        assert torch.equal(a["learner"][key], b["learner"][key]), key
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert trajectory(out) == trajectory(reference)


def case_data(case, small_folders, large_folder, large_shards):
    if case.startswith("streamed"):
        return large_shards if "shards" in case else large_folder
    return small_folders[0]


@pytest.fixture(scope="module")
def references(small_folders, large_folder, large_shards, tmp_path_factory):
    """Each case's uninterrupted run, started on first use."""
    made = {}

    def reference(case):
        if case not in made:
            out = tmp_path_factory.mktemp("uninterrupted") / "run"
            process = start(case_data(case, small_folders, large_folder, large_shards), out, **CASES[case][0])
            assert process.wait() == 0, process.stderr.read()
            made[case] = out
        return made[case]
    return reference


@pytest.fixture(scope="module")
def reference(references):
    return references("in memory")


@pytest.mark.parametrize("case", CASES)
def test_a_run_killed_with_sigkill_and_resumed_ends_bit_identical(case, small_folders, large_folder, large_shards,
                                                                   references, tmp_path):
    settings, total_steps = CASES[case]
    out = tmp_path / "run"
    process = start(case_data(case, small_folders, large_folder, large_shards), out, **settings)
    wait_for(out / "checkpoints" / "step-00000010.pt", process)
    process.kill()  # SIGKILL: no handler, no cleanup, possibly in the middle of a write
    process.wait()
    killed_at = safe_load(out / "checkpoint.pt")["step"]
    # step 10's file is complete once it appears; a kill before checkpoint.pt is linked to it
    # leaves the previous checkpoint (step 5) as the last good one, which is as correct
    assert 5 <= killed_at < total_steps and not (out / "summary.json").exists()
    assert (out / ".lock").read_text().strip() == str(process.pid)  # the dead process's lock blocks nothing
    finished = resume(out)
    assert finished.returncode == 0, finished.stderr
    assert f"resuming {out} at step {killed_at}" in finished.stderr
    assert_bit_identical(out, references(case), total_steps)
    if case == "in memory":
        assert_tensorboard_matches_the_metrics(out)  # the steps the killed run logged twice are purged


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_resume_continues(small_folders, reference, tmp_path):
    out = tmp_path / "run"
    process = start(small_folders[0], out)
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


def test_a_second_process_on_a_live_run_is_refused_naming_the_first(small_folders, tmp_path):
    """The first process is this one, holding the run folder's lock for as long as the test
    needs: no race with a run that might end first."""
    out = tmp_path / "run"
    with run_folder_lock(out, lead=True):
        second = subprocess.run([sys.executable, "-m", "byol", "pretrain", "--data", str(small_folders[0]),
                                 "--out", str(out)], capture_output=True, text=True)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"byol: error: {out} is in use by another byol pretrain (process {os.getpid()}): wait for it to end "
            "or stop it, or choose another --out folder"]
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"  # the first run's lock, untouched
        assert sorted(p.name for p in out.iterdir()) == [".byol", ".lock"]  # and nothing written beside it


def test_only_the_newest_checkpoints_are_kept_and_the_latest_is_the_last(reference):
    kept = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert kept == ["step-00000095.pt", "step-00000096.pt"]  # every 5 steps and each epoch's end; keep 2
    latest, newest = reference / "checkpoint.pt", reference / "checkpoints" / kept[-1]
    assert os.path.samefile(latest, newest)


def test_resuming_with_another_config_is_refused_naming_the_difference(small_folders, reference, tmp_path):
    out = tmp_path / "run"
    process = start(small_folders[0], out)
    wait_for(out / "checkpoints" / "step-00000005.pt", process)
    process.kill()
    process.wait()
    changed = start(small_folders[0], out, "--set", "lr=0.1")
    assert changed.wait() == 2
    assert "the config differs from the run's in lr (run: 0.004, now: 0.1)" in changed.stderr.read()


@pytest.mark.parametrize("change", ["added", "removed", "renamed"])
def test_a_resume_on_changed_files_is_refused_or_continued_and_recorded_with_data_changed_ok(
        small_folders, tmp_path, change):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(small_folders[0], data)
    process = start(data, out, "--set", "epochs=2", "--set", "knn_every=0")
    wait_for(out / "checkpoints" / "step-00000005.pt", process)
    process.kill()
    process.wait()
    first = sorted((data / "disc").iterdir())[0]
    if change == "added":
        shutil.copy(first, data / "disc" / "new.jpg")
    elif change == "removed":
        first.unlink()
    else:
        first.rename(data / "disc" / "renamed.jpg")
    refused = resume(out)
    files_now = {"added": 257, "removed": 255, "renamed": 256}[change]
    assert refused.returncode == 2
    assert (f"the files of {data} changed since the run started (256 image files when step "
            in refused.stderr) and f", {files_now} now" in refused.stderr
    assert "--data-changed ok" in refused.stderr and refused.stderr.count("\n") == 1
    continued = subprocess.run([sys.executable, "-m", "byol", "pretrain", "--resume", str(out), "--data-changed", "ok"],
                               capture_output=True, text=True)
    assert continued.returncode == 0, continued.stderr
    changes = json.loads((out / "summary.json").read_text())["data_changes"]
    assert len(changes) == 1 and changes[0]["step"] >= 5
    assert (changes[0]["files_before"], changes[0]["files_after"]) == (256, files_now)


def test_a_resume_on_the_same_files_needs_no_word(small_folders, tmp_path):
    out = tmp_path / "run"
    process = start(small_folders[0], out, "--set", "epochs=2", "--set", "knn_every=0")
    wait_for(out / "checkpoints" / "step-00000005.pt", process)
    process.kill()
    process.wait()
    assert resume(out).returncode == 0
    assert "data_changes" not in json.loads((out / "summary.json").read_text())


def test_a_run_saved_before_a_config_key_existed_resumes_reading_the_key_as_its_default(tmp_path):
    """A checkpoint's config names the keys of the byol that wrote it; a key added since
    (here the multi-crop and resizing keys) was off in that run, as its default is."""
    config = Config(data=str(tmp_path)).checked()
    older = {k: v for k, v in config.to_dict().items() if k not in ("small_crops", "small_crop_side", "start_size")}
    path = write_learner_checkpoint(torch.nn.Linear(2, 2), config, tmp_path)
    saved = safe_load(path)
    save_torch(saved | dict(config=older), path)
    assert open_run(config, tmp_path, resume=True).config == older
    with pytest.raises(ByolError, match=r"the config differs from the run's in small_crops \(run: 0, now: 2\);"):
        open_run(Config(data=str(tmp_path), small_crops=2).checked(), tmp_path, resume=True)


def tiny_config(data, **changes):
    settings = {**SETTINGS, "epochs": 1, "knn_every": 0, "collapse_every": 0, "checkpoint_every": 1, **changes}
    return Config(data=str(data), **settings).checked()


def nan_on_call(monkeypatch, bad_call):
    """BYOL's loss, made NaN on its `bad_call`-th call (counting from 1)."""
    original, calls = BYOL.loss, []

    def loss(self, view_1, view_2):
        calls.append(1)
        value = original(self, view_1, view_2)
        return value * float("nan") if len(calls) == bad_call else value

    monkeypatch.setattr(BYOL, "loss", loss)


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
        small_folders, tmp_path, monkeypatch):
    nan_on_call(monkeypatch, bad_call=4)
    with pytest.raises(ByolError, match="the loss became nan at step 3: the learning rate may be too high"):
        pretrain(tiny_config(small_folders[0]), tmp_path / "run")
    kept = safe_load(tmp_path / "run" / "checkpoint.pt")
    assert kept["step"] == 3
    assert all(torch.isfinite(v).all() for v in kept["learner"].values() if v.is_floating_point())


def test_between_sync_steps_a_nan_is_caught_before_the_next_checkpoint_naming_its_step(
        small_folders, tmp_path, monkeypatch):
    """The loss is read back only every log_every steps and before each checkpoint: the
    error still names the step where it went wrong, and no checkpoint holds its weights."""
    nan_on_call(monkeypatch, bad_call=4)
    config = tiny_config(small_folders[0], log_every=5, checkpoint_every=2)
    with pytest.raises(ByolError, match="the loss became nan at step 3:"):
        pretrain(config, tmp_path / "run")
    kept = safe_load(tmp_path / "run" / "checkpoint.pt")
    assert kept["step"] == 2  # the checkpoint of step 4 was never written
    assert all(torch.isfinite(v).all() for v in kept["learner"].values() if v.is_floating_point())


def test_the_logged_loss_is_the_mean_over_the_steps_micro_batches(small_folders, tmp_path, monkeypatch):
    original, losses = BYOL.loss, []

    def recorded(self, view_1, view_2):
        value = original(self, view_1, view_2)
        losses.append(value.item())
        return value

    monkeypatch.setattr(BYOL, "loss", recorded)
    pretrain(tiny_config(small_folders[0], accumulate=4, steps=2), tmp_path / "run")
    logged = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in x]
    assert len(losses) == 8 and losses[0] != losses[3]
    assert logged == pytest.approx([sum(losses[:4]) / 4, sum(losses[4:]) / 4], rel=1e-6)


def test_with_nonfinite_skip_the_bad_step_is_skipped_and_counted(small_folders, tmp_path, monkeypatch):
    nan_on_call(monkeypatch, bad_call=4)
    result = pretrain(tiny_config(small_folders[0], nonfinite="skip"), tmp_path / "run")
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


def test_a_kill_before_checkpoint_pt_is_linked_resumes_from_the_newest_history_file(small_folders, tmp_path,
                                                                                      capsys):
    out = tmp_path / "run"
    config = tiny_config(small_folders[0])
    first = pretrain(config, out)
    (out / "summary.json").unlink()
    (out / "checkpoint.pt").unlink()  # killed between writing checkpoints/step-N.pt and linking it
    capsys.readouterr()
    again = pretrain(config, out)
    assert f"resuming {out} at step {first['steps']}" in capsys.readouterr().err  # not retrained from scratch
    assert again["steps"] == first["steps"]
