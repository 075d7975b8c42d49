"""Real (short) training: the steps are the paper's update, the schedules count optimiser steps."""

import dataclasses
import json
import math
import os

import pytest
import torch

from byol.config import Config
from byol.core.errors import ByolError
from byol.core.schedules import tau_at
from byol.data.folders import list_images
from byol.data.memory import decode_into_memory
from byol.data.views import Views
from byol.methods.byol import BYOL
from byol.nets.encoders import build_encoder
from byol.train.trainer import pretrain


def reference_byol_steps(online: torch.nn.Module, predictor: torch.nn.Module, views: list, taus: list[float],
                         lr: float) -> tuple[torch.nn.Module, list[float]]:
    """BYOL as the paper's equations state it, written apart from byol's code: the target
    starts as a copy of the online network; the loss is 2 - 2cos(q(v), sg(z'(v'))) over both
    directions, summed, batch mean; plain SGD; then xi <- tau xi + (1 - tau) theta."""
    import copy

    import torch.nn.functional as F

    target = copy.deepcopy(online)
    params = [*online.parameters(), *predictor.parameters()]
    losses = []
    for (v1, v2), tau in zip(views, taus):
        q1, q2 = predictor(online(v1)), predictor(online(v2))
        with torch.no_grad():
            z1, z2 = target(v1), target(v2)
        loss = ((2 - 2 * F.cosine_similarity(q1, z2, dim=-1)) + (2 - 2 * F.cosine_similarity(q2, z1, dim=-1))).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for param, grad in zip(params, grads):
                param -= lr * grad
            for xi, theta in zip(target.parameters(), online.parameters()):
                xi.copy_(tau * xi + (1 - tau) * theta)
        losses.append(loss.item())
    return target, losses


def test_training_steps_follow_the_papers_update_written_independently(small_folders):
    """Ten steps of BYOL (views fixed in advance) against the equations above: the losses, the
    online network and the target agree."""
    import copy

    torch.manual_seed(0)
    images = decode_into_memory(list_images(small_folders[0]), size=16).images[:32]
    learner = BYOL(build_encoder("resnet18", width=1 / 16, cifar_stem=True), views=Views.preset("cifar", 16),
                   image_size=16, projector_hidden=32, projection_dim=8, predictor_hidden=32).double()
    # in float64: the two sides sum in different orders, and 4-channel BatchNorm would grow
    # float32's rounding differences into visible ones within ten steps
    views = [tuple(v.double() for v in learner.views(images)) for _ in range(10)]
    taus = [tau_at(step / 10, 0.9) for step in range(10)]
    online, predictor = copy.deepcopy(learner.online), copy.deepcopy(learner.predictor)
    target, expected_losses = reference_byol_steps(online, predictor, views, taus, lr=0.05)
    optimizer = torch.optim.SGD(learner.trainable_parameters(), lr=0.05)
    losses = []
    for (v1, v2), tau in zip(views, taus):
        loss = learner.loss(v1, v2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learner.update_target(tau)
        losses.append(loss.item())
    assert losses == pytest.approx(expected_losses, rel=1e-9)
    for mine, theirs in ((learner.online, online), (learner.predictor, predictor), (learner.target, target)):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)  # a wrong rule moves them by ~1e-3


def tiny_config(train, **changes) -> Config:
    values = dict(data=str(train), epochs=2, batch_size=16, width=1 / 16, optimizer="sgd", lr=0.05,
                  projector_hidden=32, predictor_hidden=32, projection_dim=8, log_every=1, warmup_epochs=0.5,
                  tau_base=0.9)
    values.update(changes)
    return Config(**values).checked()


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
    knn = json.loads((tmp_path / "run" / "knn.json").read_text())
    correct = knn["top1"] * 25 / 100  # 256 images: 25 held out as queries, so top-1 is a count of 25
    assert correct == pytest.approx(round(correct), abs=1e-4)


class StepClock:
    """A clock for the training loop that moves 1/16 s (exact in binary) each time it is read:
    the loop reads it twice a step (its tick, and the pace at every log line with log_every=1),
    so a step takes 0.125 s whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1 / 16
        return self.now


def test_under_a_time_budget_the_lr_falls_smoothly_and_tau_rises_smoothly(small_folders, tmp_path, monkeypatch):
    from byol.train import pace

    monkeypatch.setattr(pace, "time", StepClock())
    budget_seconds = 8.0
    config = tiny_config(small_folders[0], epochs=1000, minutes=budget_seconds / 60, warmup_epochs=0.5,
                         optimizer="adamw", lr=0.004, collapse_every=0, knn_every=0)
    result = pretrain(config, tmp_path / "run")
    # the budget ends the run (not the 16,000 steps of 1,000 epochs): the first step takes 1/16 s
    # (the clock starts between a log line and a tick), the others 1/8 s, so step 65 is the one
    # whose time reaches 8 s: 1/16 + 64/8 = 8.0625
    assert (result["steps"], result["train_seconds"]) == (65, 8.1)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr" in r]
    warmup, peak = 8, 0.004 * 16 / 256  # half an epoch of 16 steps; the scaled peak lr
    decay = [r for r in steps if r["step"] > warmup + 1]
    lrs, taus = [r["lr"] for r in decay], [r["tau"] for r in decay]
    assert all(b <= a for a, b in zip(lrs, lrs[1:])) and all(b >= a for a, b in zip(taus, taus[1:]))
    # between neighbouring steps the lr moves by what the time between them allows, no more:
    # |d lr| <= peak * pi/2 * dt / budget for a cosine over the budget (2x margin)
    longest = max(b["time_s"] - a["time_s"] for a, b in zip(steps, steps[1:]))
    assert max(a - b for a, b in zip(lrs, lrs[1:])) <= 2 * peak * math.pi / 2 * longest / budget_seconds + 1e-9
    assert lrs[-1] < 0.1 * peak and taus[-1] > 0.99


def test_an_fp16_step_whose_gradients_overflow_moves_neither_the_schedules_nor_the_target(small_folders, tmp_path):
    from byol.train.trainer import Trainer

    (tmp_path / "run").mkdir()
    config = tiny_config(small_folders[0], precision="fp16", steps=10, warmup_epochs=0, collapse_every=0)
    trainer = Trainer(config, tmp_path / "run", torch.device("cpu"))
    images = trainer.data.source.images[:16]
    target = [p.clone() for p in trainer.learner.target.parameters()]
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)  # fp16 gradients overflow
    assert trainer.step([trainer.learner.views(images)]) is False
    assert trainer.progress.step == 0 and trainer.scaler.get_scale() == 2.0 ** 99
    assert all(torch.equal(a, b) for a, b in zip(target, trainer.learner.target.parameters()))
    assert not trainer.optimizer.state  # AdamW never stepped
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    assert trainer.step([trainer.learner.views(images)]) is True
    assert trainer.progress.step == 1 and trainer.tau == tau_at(0.0, config.tau_base)
    assert not all(torch.equal(a, b) for a, b in zip(target, trainer.learner.target.parameters()))


def test_pretrain_in_process_leaves_the_callers_threads_determinism_and_random_streams(small_folders, tmp_path):
    import random

    import numpy as np

    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    pretrain(tiny_config(small_folders[0], epochs=1, threads=1, deterministic=True, collapse_every=0), tmp_path / "r")
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_knn_during_pretraining_streams_images_larger_than_those_held_in_memory(large_folder, tmp_path):
    from byol.eval.protocols import evaluate

    config = tiny_config(large_folder, image_size=72, cifar_stem=False, steps=3, workers=1, collapse_every=0,
                         test=str(large_folder), knn_k=20)
    result = pretrain(config, tmp_path / "run")
    scored = evaluate("knn", tmp_path / "run", str(large_folder), str(large_folder))
    assert scored["train_images"] == scored["test_images"] == 256
    assert result["knn"]["top1"] == pytest.approx(scored["pretrained"]["top1"], abs=1e-4)


def test_with_unlabelled_training_images_knn_monitors_a_split_of_the_test_folder(small_folders, tmp_path, capsys,
                                                                                   monkeypatch):
    import shutil

    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for i, image in enumerate(sorted(small_folders[0].rglob("*.jpg"))):
        shutil.copy(image, flat / f"{i:04d}.jpg")
    from byol.train import monitors

    made = []
    original = monitors.KnnMonitor.__init__
    monkeypatch.setattr(monitors.KnnMonitor, "__init__",
                        lambda self, *args: original(self, *args) or made.append((self.bank, self.queries)))
    result = pretrain(tiny_config(flat, steps=2, collapse_every=0, test=str(small_folders[1]), knn_k=5),
                      tmp_path / "run")
    assert "so 90% of" in capsys.readouterr().err and "top1" in result["knn"]
    (bank, queries), = made
    decoded = decode_into_memory(list_images(small_folders[1]), size=32)
    test = {image.numpy().tobytes(): label for image, label in zip(decoded.images, decoded.labels.tolist())}
    bank_images = [(image.numpy().tobytes(), label) for image, label in zip(bank.images, bank.labels.tolist())]
    query_images = [(image.numpy().tobytes(), label) for image, label in zip(queries.images, queries.labels.tolist())]
    # 64 test images: 6 queries and 58 in the bank, apart, each with its own label, none from training
    assert (len(query_images), len(bank_images)) == (6, 58)
    assert {key for key, _ in bank_images} | {key for key, _ in query_images} == set(test)
    assert all(test[key] == label for key, label in bank_images + query_images)


def compiled_and_eager_steps(train: str, out: str) -> tuple[float, list[float]]:
    """Two steps of the same views, eager and compiled: the compiled update's distance from
    the eager one (relative to its size) and both second losses."""
    from pathlib import Path

    from byol.train.trainer import Trainer

    config = tiny_config(train, steps=2, warmup_epochs=0, collapse_every=0, precision="fp32")
    trainers = []
    for compile in (False, True):
        (Path(out) / str(compile)).mkdir()
        trainers.append(Trainer(dataclasses.replace(config, compile=compile), Path(out) / str(compile),
                                torch.device("cpu")))
    torch.manual_seed(0)
    pairs = [trainers[0].learner.views(trainers[0].data.source.images[:16]) for _ in range(2)]
    start = torch.nn.utils.parameters_to_vector(trainers[0].learner.online.parameters())
    losses, updates = [], []
    for trainer in trainers:
        assert trainer.step([pairs[0]])
        updates.append(torch.nn.utils.parameters_to_vector(trainer.learner.online.parameters()) - start)
        assert trainer.step([pairs[1]])
        losses.append(trainer.watch.step_loss.item())
    return ((updates[0] - updates[1]).norm() / updates[0].norm()).item(), losses


def test_compile_without_a_cpp_compiler_is_refused_in_one_line_before_the_run_starts(
        small_folders, tmp_path, monkeypatch):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    with pytest.raises(ByolError) as refused:
        pretrain(tiny_config(small_folders[0], compile=True), tmp_path / "run")
    assert len(str(refused.value).splitlines()) == 1
    assert str(refused.value).startswith("compile: true on a CPU needs a C++ compiler")
    assert str(refused.value).endswith("install g++ or clang, or set CXX to one, or drop compile")
    assert not (tmp_path / "run").exists()


def test_a_compiled_loss_takes_the_same_steps_as_the_eager_one(small_folders, tmp_path):
    """In a process held to AVX2 (oneDNN and ATen), as on the slowest CPUs: there, inductor's own
    choice of channels_last for this 4-channel network hung in the weight gradient of the
    1x1 stride-2 shortcut (or corrupted the heap), so a hang fails here after 4 minutes."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys; from tests.train.test_training import compiled_and_eager_steps; "
              "print(json.dumps(compiled_and_eager_steps(*sys.argv[1:])))")
    child = subprocess.run([sys.executable, "-c", script, str(small_folders[0]), str(tmp_path)], capture_output=True,
                           text=True, timeout=240, cwd=Path(__file__).parents[2],
                           env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    assert child.returncode == 0, child.stderr[-2000:]
    distance, losses = json.loads(child.stdout.splitlines()[-1])
    # only the order of fused sums differs; 4-channel BatchNorm on 16 images amplifies it
    # (measured: the first update 0.5% apart, the second loss 1.2e-4 relative)
    assert distance < 0.02
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_a_run_prints_one_estimate_of_its_length_once_under_way(small_folders, tmp_path, capsys):
    pretrain(tiny_config(small_folders[0], steps=30, collapse_every=0, knn_every=0), tmp_path / "run")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("estimate: ")]
    assert len(lines) == 1 and lines[0].endswith(" for the 5 steps left")  # timed over steps 5-25 of 30


class ManualClock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_the_loader_wait_is_the_share_of_training_time_spent_waiting_for_images(small_folders, large_folder, tmp_path,
                                                                                 monkeypatch):
    """Each streamed image takes 1/16 s to cut (16 a step: 1 s) and each step 1 s to compute, on a
    clock the test moves: half of the training time is spent waiting, and none in memory."""
    from byol.data import folders
    from byol.train import batches, pace, trainer

    clock = ManualClock()
    for module in (batches, pace):
        monkeypatch.setattr(module, "time", clock)
    cut, step = folders.CroppedViews.__getitem__, trainer.Trainer.step

    def slow_cut(self, key):
        clock.now += 1 / 16
        return cut(self, key)

    def slow_step(self, micro_batches):
        clock.now += 1.0
        return step(self, micro_batches)

    monkeypatch.setattr(folders.CroppedViews, "__getitem__", slow_cut)
    monkeypatch.setattr(trainer.Trainer, "step", slow_step)
    streamed = pretrain(tiny_config(large_folder, image_size=72, cifar_stem=False, steps=6, workers=0, log_every=2,
                                    collapse_every=0, knn_every=0), tmp_path / "slow")
    in_memory = pretrain(tiny_config(small_folders[0], steps=6, log_every=2, collapse_every=0, knn_every=0),
                         tmp_path / "memory")
    decoded_once = pretrain(tiny_config(large_folder, image_size=72, cifar_stem=False, steps=6, decode_once=True,
                                        log_every=2, collapse_every=0, knn_every=0), tmp_path / "once")
    assert (streamed["loader_wait"], in_memory["loader_wait"], decoded_once["loader_wait"]) == (0.5, 0.0, 0.0)
    logged = [json.loads(line) for line in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loader_wait"]) for r in logged if "loader_wait" in r] == [(2, 0.5), (4, 0.5), (6, 0.5)]


def test_multi_crop_trains_on_small_crops_in_memory_and_streamed(small_folders, large_folder, tmp_path, monkeypatch):
    seen = []
    loss = BYOL.loss

    def spy(self, view_1, view_2, small=None):
        seen.append(None if small is None else tuple(small.shape))
        return loss(self, view_1, view_2, small)
    monkeypatch.setattr(BYOL, "loss", spy)
    pretrain(tiny_config(small_folders[0], image_size=16, steps=2, small_crops=2, collapse_every=0), tmp_path / "a")
    assert seen == [(32, 3, 8, 8)] * 2  # 2 small crops of 16 images, half the side
    seen.clear()
    pretrain(tiny_config(large_folder, image_size=72, cifar_stem=False, steps=2, workers=1, small_crops=3,
                         small_crop_side=0.25, collapse_every=0), tmp_path / "b")
    assert seen == [(48, 3, 18, 18)] * 2
    assert "small_crops: 3" in (tmp_path / "b" / "config.yaml").read_text()


def test_progressive_resizing_trains_small_early_and_at_full_size_late_on_both_paths(small_folders, large_folder,
                                                                                   tmp_path, monkeypatch):
    sizes = []
    loss = BYOL.loss

    def spy(self, view_1, view_2, small=None):
        sizes.append(view_1.shape[-1])
        return loss(self, view_1, view_2, small)
    monkeypatch.setattr(BYOL, "loss", spy)
    pretrain(tiny_config(small_folders[0], image_size=32, start_size=16, steps=8, collapse_every=0), tmp_path / "a")
    assert sizes == [16, 16, 16, 24, 24, 24, 32, 32]  # progress k / 8: 24 from 3/8, 32 from 3/4
    logged = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["size"] for r in logged if "loss" in r] == sizes
    sizes.clear()
    pretrain(tiny_config(large_folder, image_size=72, cifar_stem=False, start_size=40, steps=4, workers=1,
                         collapse_every=0), tmp_path / "b")
    assert sizes == [40, 48, 56, 72]  # crops cut at 72 px by the workers, scaled down on the device


def test_a_start_size_larger_than_the_image_size_or_small_crops_under_8_px_are_refused_in_one_line():
    from byol.core.errors import ByolError

    with pytest.raises(ByolError, match="start_size is 48 with image_size 32: use 0 .off. or a side from 8 pixels up"):
        Config(start_size=48).checked()
    with pytest.raises(ByolError, match="small crops of 0.5 x 12 px are under 8 px .* raise small_crop_side to 0.67 or"):
        Config(image_size=32, start_size=12, small_crops=2).checked()
    assert Config(image_size=32, start_size=16, small_crops=2).checked().small_crops == 2  # 8 px: enough


def test_the_knn_monitor_samples_a_bank_and_queries_of_bounded_size_once_for_the_run(small_folders, tmp_path,
                                                                                      monkeypatch):
    """256 training images and 64 test images, with knn_bank 100 and knn_queries 10: 100
    distinct training images and 10 test images, the same at both evaluations of the run."""
    from byol.train import monitors

    made, scored = [], []
    original, knn = monitors.KnnMonitor.__init__, monitors.knn_accuracy
    monkeypatch.setattr(monitors.KnnMonitor, "__init__",
                        lambda self, *args: original(self, *args) or made.append((self.bank, self.queries)))
    monkeypatch.setattr(monitors, "knn_accuracy", lambda bank, bank_labels, queries, *rest: scored.append(
        (len(bank), len(queries))) or knn(bank, bank_labels, queries, *rest))
    pretrain(tiny_config(small_folders[0], epochs=2, knn_every=1, collapse_every=0, test=str(small_folders[1]),
                         knn_bank=100, knn_queries=10), tmp_path / "run")
    (bank, queries), = made
    train = {image.numpy().tobytes() for image in decode_into_memory(list_images(small_folders[0]), size=32).images}
    test = {image.numpy().tobytes() for image in decode_into_memory(list_images(small_folders[1]), size=32).images}
    assert len({image.numpy().tobytes() for image in bank.images} & train) == 100
    assert len({image.numpy().tobytes() for image in queries.images} & test) == 10
    assert scored == [(100, 10)] * 2  # after epoch 1, and at the end (epoch 2's end is the run's)


def test_the_knn_monitor_keeps_every_image_of_sets_within_its_bounds(small_folders):
    from byol.data.memory import decode_into_memory as decode
    from byol.train.monitors import at_most

    data = decode(list_images(small_folders[1]), size=32)
    assert at_most(data, 64, seed=0) is data and at_most(data, 0, seed=0) is data


def test_a_file_list_trains_and_monitors_as_its_folder_does(small_folders, tmp_path):
    """The same images named by a labelled file list: the same run, step for step, as on the folder."""
    listed = tmp_path / "train.txt"
    listed.write_text("".join(f"{p}\t{p.parent.name}\n" for p in sorted(small_folders[0].rglob("*.jpg"))))
    config = tiny_config(small_folders[0], steps=3, collapse_every=0, test=str(small_folders[1]), threads=1)
    from_folder = pretrain(config, tmp_path / "folder")
    from_list = pretrain(dataclasses.replace(config, data=str(listed)), tmp_path / "list")
    assert from_list["knn"] == from_folder["knn"] and from_list["steps"] == 3
    losses = [[json.loads(line).get("loss") for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("folder", "list")]
    assert losses[0] == losses[1]
