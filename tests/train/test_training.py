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
from byol.train.trainer import pretrain
from byol.train.schedules import tau_at


def test_a_few_hundred_steps_lower_the_loss_without_collapse(small_folders):
    images = decode_folder(small_folders[0], size=16).images
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
        learner.update_target(tau_at(step / steps, 0.99))
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


def test_with_gradient_accumulation_the_schedules_count_optimiser_steps(small_folders, tmp_path):
    result = pretrain(tiny_config(small_folders[0], accumulate=4), tmp_path / "run")
    # 256 images, 16 a micro-batch, 4 micro-batches a step: 4 optimiser steps an epoch
    assert result["steps"] == 8
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    for record in steps:
        assert record["tau"] == tau_at((record["step"] - 1) / 8, 0.9)
    assert steps[-1]["tau"] < 1.0


def test_labelled_data_without_a_test_folder_is_monitored_on_a_held_out_tenth(small_folders, tmp_path):
    pretrain(tiny_config(small_folders[0], epochs=1), tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    knn = json.loads((tmp_path / "run" / "knn.json").read_text())
    assert last["knn_top1"] == knn["top1"]
    correct = knn["top1"] * 25 / 100  # 256 images: 25 held out as queries, so top-1 is a count of 25
    assert correct == pytest.approx(round(correct), abs=1e-4)
