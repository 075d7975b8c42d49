"""Real (short) training: the loss falls, nothing collapses, the schedules count optimiser steps."""

import json
import math

import pytest
import torch

from byol.config import Config
from byol.data.folders import decode_folder
from byol.data.views import TwoViews
from byol.eval.collapse import normalized_std
from byol.methods.byol import BYOL
from byol.nets.encoders import build_encoder
from byol.train.loop import StepBudget, pretrain
from byol.train.schedules import tau_at


def test_a_few_hundred_steps_lower_the_loss_without_collapse(small_cifar):
    images = decode_folder(small_cifar[0], size=16).images
    encoder = build_encoder("resnet18", width=1 / 16, cifar_stem=True)
    learner = BYOL(encoder, views=TwoViews.preset("cifar", 16), image_size=16,
                   projector_hidden=64, projection_dim=16, predictor_hidden=64)
    optimizer = torch.optim.AdamW(learner.trainable_parameters(), lr=2e-3)
    steps, losses = 300, []
    for step in range(steps):
        batch = images[torch.randint(0, len(images), (32,))]
        loss = learner(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learner.update_target(tau_at(step, steps, 0.99))
        losses.append(loss.item())
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.85 * first, (first, last)  # measured: 2.36 -> 1.76
    learner.eval()
    with torch.no_grad():
        projections = learner.online(TwoViews.preset("cifar", 16)(images[:128])[0])
    # 1/sqrt(d) = 0.25 for d = 16 when spread out; a collapsed network gives ~0
    assert normalized_std(projections) > 0.1


def tiny_config(train, **changes) -> Config:
    values = dict(data=str(train), epochs=2, batch_size=16, width=1 / 16, optimizer="sgd", lr=0.05,
                  projector_hidden=32, predictor_hidden=32, projection_dim=8, log_every=1, warmup_epochs=0.5,
                  tau_base=0.9)
    values.update(changes)
    return Config(**values).validate()


def test_with_gradient_accumulation_the_schedules_count_optimiser_steps(small_cifar, tmp_path):
    result = pretrain(tiny_config(small_cifar[0], accumulate=4), tmp_path / "run")
    # 256 images, 16 a micro-batch, 4 micro-batches a step: 4 optimiser steps an epoch
    assert result["steps"] == 8
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    for record in steps:
        assert record["tau"] == tau_at(record["step"] - 1, 8, 0.9)
    assert steps[-1]["tau"] < 1.0


def test_labelled_data_without_a_test_folder_is_monitored_on_a_held_out_tenth(small_cifar, tmp_path):
    pretrain(tiny_config(small_cifar[0], epochs=1), tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    knn = json.loads((tmp_path / "run" / "knn.json").read_text())
    assert last["knn_top1"] == knn["top1"]
    correct = knn["top1"] * 25 / 100  # 256 images: 25 held out as queries, so top-1 is a count of 25
    assert correct == pytest.approx(round(correct), abs=1e-4)


def test_a_time_budget_sets_the_step_count_from_measured_speed_after_warm_up():
    budget = StepBudget(Config(epochs=100, minutes=1.0), steps_per_epoch=50)
    assert budget.total == 5000
    budget.observe(20, elapsed=5.0)  # slow warm-up steps are left out
    budget.observe(40, elapsed=7.0)  # 0.1 s a step, 53 s left
    assert budget.total == 40 + 530
    budget.observe(80, elapsed=13.0)  # slower now: 0.133 s a step since step 20, 47 s left
    assert budget.total == 80 + int(47 / (8 / 60))
    assert not budget.done(100, elapsed=30.0)
    assert budget.done(100, elapsed=60.0) and budget.done(budget.total, elapsed=50.0)


def test_the_epoch_limit_caps_a_generous_time_budget():
    budget = StepBudget(Config(epochs=2, minutes=60.0), steps_per_epoch=30)
    budget.observe(20, elapsed=0.5)
    budget.observe(40, elapsed=2.5)
    assert budget.total == 60 and math.isclose(budget.seconds, 3600)


def test_channels_last_is_skipped_only_for_encoders_with_narrow_strided_shortcuts():
    from byol.train.runtime import channels_last_is_safe

    assert not channels_last_is_safe(build_encoder("resnet18", width=1 / 16, cifar_stem=True))
    assert channels_last_is_safe(build_encoder("resnet18", width=1 / 8, cifar_stem=True))
    assert channels_last_is_safe(build_encoder("resnet50", width=1 / 16))  # bottleneck widens to 16 first


def test_large_images_stream_through_loader_workers_and_train(tmp_path):
    from PIL import Image

    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(20):
        Image.effect_noise((96, 80), 40 + i).convert("RGB").save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    config = tiny_config(folder, image_size=72, augment="imagenet", batch_size=7, epochs=1, workers=0,
                         cifar_stem=False, width=1 / 8)
    result = pretrain(config, tmp_path / "run")
    assert result["steps"] == 3  # 21 files, 7 a batch: every file is used once
    assert result["skipped_files"] == 1  # broken.png
    assert (tmp_path / "run" / "encoder.safetensors").exists()


def test_a_fixed_step_count_replaces_epochs_and_can_span_epochs(small_cifar, tmp_path):
    result = pretrain(tiny_config(small_cifar[0], steps=21, epochs=1), tmp_path / "run")
    assert result["steps"] == 21 and result["epochs"] == round(21 / 16, 3)  # 16 steps an epoch
    steps = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps[-1]["tau"] == tau_at(20, 21, 0.9)


def test_collapse_statistics_are_logged_and_do_not_change_the_run(small_cifar, tmp_path):
    def records(name, every):
        pretrain(tiny_config(small_cifar[0], epochs=1, collapse_every=every), tmp_path / name)
        return [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    probed, plain = records("probed", 4), records("plain", 0)
    stats = [r for r in probed if "proj_std" in r]
    assert [r["step"] for r in stats] == [4, 8, 12, 16]
    assert all(0 < r["proj_std"] <= 1.5 / math.sqrt(8) and 1 <= r["proj_rank"] <= 8 for r in stats)
    assert [r["loss"] for r in probed if "loss" in r] == [r["loss"] for r in plain if "loss" in r]


def test_the_probe_flags_a_collapsed_network(small_cifar):
    from byol.methods import build_learner
    from byol.train.monitors import CollapseProbe

    config = tiny_config(small_cifar[0])
    learner = build_learner(config)
    images = decode_folder(small_cifar[0], size=32).images[:128]
    probe = CollapseProbe(images, learner.views, torch.device("cpu"), seed=0)
    random_init = probe(learner, None)  # measured: std 0.07, rank 3.5, uniformity -0.16 (d = 8)
    with torch.no_grad():  # every input mapped to one vector
        learner.online.projector[-1].weight.zero_()
        learner.online.projector[-1].bias.fill_(1.0)
    collapsed = probe(learner, None)
    assert collapsed["proj_std"] < 1e-6 < 0.03 < random_init["proj_std"]
    assert collapsed["uniformity"] == pytest.approx(0, abs=1e-6) and random_init["uniformity"] < -0.08
    assert collapsed["proj_rank"] == pytest.approx(1.0, abs=1e-3) and random_init["proj_rank"] > 2


def test_the_alarm_warns_once_after_two_collapsed_probes_and_can_stop_the_run(capsys):
    from byol.errors import CollapseError
    from byol.train.monitors import CollapseAlarm

    healthy, collapsed = dict(proj_std=0.05, proj_rank=6.0), dict(proj_std=0.0, proj_rank=1.0)
    alarm = CollapseAlarm(dim=8, stop=False)
    for step, stats in enumerate([collapsed, healthy, collapsed, collapsed, collapsed], 1):
        alarm(step, stats)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: collapse at step 4: proj_std is 0")
    assert "proj_rank is 1" in warnings[0] and "tau too low" in warnings[0]
    stopper = CollapseAlarm(dim=8, stop=True)
    stopper(1, collapsed)
    with pytest.raises(CollapseError, match="collapse at step 2"):
        stopper(2, collapsed)


def test_too_few_large_images_for_one_step_is_a_clear_error(tmp_path):
    from PIL import Image

    from byol.errors import ByolError

    for i in range(3):
        Image.effect_noise((80, 80), 50).convert("RGB").save(tmp_path / f"{i}.png")
    config = tiny_config(tmp_path, image_size=72, batch_size=8, workers=0, cifar_stem=False, width=1 / 8)
    with pytest.raises(ByolError, match="has 3 usable images, too few for one step of 8"):
        pretrain(config, tmp_path / "run")
