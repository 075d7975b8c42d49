"""The pretraining loop: data in, online network trained, target moved, run folder written."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from byol import config as cfg
from byol.config import Config
from byol.errors import ByolError, CollapseError
from byol.methods import Method, build_learner
from byol.progress import progress
from byol.train.batches import load_train_data
from byol.train.checkpoint import atomic_save
from byol.train.monitors import CollapseAlarm, collapse_probe, knn_monitor
from byol.train.optim import build_optimizer, param_groups, set_lr
from byol.train.runtime import autocast, autocast_dtype, channels_last_is_safe, pick_device, seed_everything
from byol.train.schedules import lr_at, scaled_lr, tau_at

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.safetensors"
METRICS = "metrics.jsonl"


class StepBudget:
    """How many optimiser steps the run has, from epochs, a step count, or a wall-clock budget.

    With a budget, the count is estimated from the measured speed, leaving out the first
    steps (warm-up of the kernels), and estimated again at steps 40, 80, 160, ... so that
    the lr and tau schedules end when time does.
    """

    SKIP, FIRST_ESTIMATE = 20, 40

    def __init__(self, config: Config, steps_per_epoch: int) -> None:
        self.epoch_steps = config.steps or config.epochs * steps_per_epoch
        self.seconds = config.minutes * 60 if config.minutes else None
        self.total = self.epoch_steps
        self._mark: float | None = None
        self._next_estimate = self.FIRST_ESTIMATE

    def observe(self, step: int, elapsed: float) -> None:
        if self.seconds is None:
            return
        if step == self.SKIP:
            self._mark = elapsed
        elif step == self._next_estimate and self._mark is not None:
            per_step = (elapsed - self._mark) / (step - self.SKIP)
            self.total = min(self.epoch_steps, max(step + 1, int(step + (self.seconds - elapsed) / per_step)))
            self._next_estimate *= 2

    def done(self, step: int, elapsed: float) -> bool:
        return step >= self.total or (self.seconds is not None and elapsed >= self.seconds)


def prepare_run_dir(out: Path) -> None:
    if (out / CHECKPOINT).exists():
        raise ByolError(f"{out} already holds a run (its {CHECKPOINT}): choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)


def save_checkpoint(out: Path, learner: Method, optimizer: torch.optim.Optimizer, config: Config,
                    step: int, epoch: int) -> None:
    atomic_save(dict(learner=learner.state_dict(), optimizer=optimizer.state_dict(), config=config.to_dict(),
                     step=step, epoch=epoch, format="byol-checkpoint-1"), out / CHECKPOINT)


def pretrain(config: Config, out: Path) -> dict:
    """Run BYOL pretraining as `config` says and write everything to `out`."""
    if not config.data:
        raise ByolError("no training data: pass --data a folder of images (or cifar10, cifar100, stl10)")
    prepare_run_dir(out)
    device = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    dtype = autocast_dtype(config.precision, device)
    seed_everything(config.seed)
    cfg.save(config, out / "config.yaml")

    learner = build_learner(config).to(device)
    channels_last = config.channels_last and (device.type == "cuda" or channels_last_is_safe(learner))
    if config.channels_last and not channels_last:
        tqdm.write("channels_last is off for this encoder: under 8 channels in a strided 1x1 convolution, "
                   "where PyTorch's CPU kernel is unsafe")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    learner = learner.to(memory_format=memory_format)
    data = load_train_data(config, learner.views)
    if data.skipped:
        (out / "skipped_files.txt").write_text("\n".join(data.skipped) + "\n")
        tqdm.write(f"skipped {len(data.skipped)} undecodable image files (listed in {out / 'skipped_files.txt'})")
    monitor = knn_monitor(config, data, device)
    probe = collapse_probe(config, data, learner.views, device)
    alarm = CollapseAlarm(config.projection_dim, config.collapse_stop)

    global_batch = config.batch_size * config.accumulate
    steps_per_epoch = len(data) // global_batch
    if steps_per_epoch == 0:
        raise ByolError(f"{config.data} has {len(data)} usable images, too few for one step of "
                        f"{global_batch}: lower --batch-size or add images")
    budget = StepBudget(config, steps_per_epoch)
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(config.lr, global_batch)
    groups = param_groups(learner.trained_modules(), config.weight_decay, {"predictor": config.predictor_lr_mult})
    optimizer = build_optimizer(config.optimizer, groups, peak_lr, config.momentum, config.lars_eta)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    metrics = (out / METRICS).open("a")

    def log(record: dict) -> None:  # flushed per line: a crashed run keeps its curves
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()

    step, epoch = 0, 0
    bar = progress(total=budget.total, unit="step", desc="pretrain")
    # training time counts everything (augmentation, data, checkpoints) except k-NN evaluation
    train_seconds, clock = 0.0, time.perf_counter()
    window_start, window_images = clock, 0
    try:
        while not budget.done(step, train_seconds):
            micro, step_at_epoch_start = 0, step
            for view_1, view_2 in data.view_batches(config.batch_size, learner.views, device):
                view_1 = view_1.contiguous(memory_format=memory_format)
                view_2 = view_2.contiguous(memory_format=memory_format)
                with autocast(device, dtype):
                    loss = learner.loss(view_1, view_2)
                if not math.isfinite(loss.item()):
                    raise ByolError(f"the loss became {loss.item()} at step {step}: lower --lr, or use "
                                    "--precision fp32; the last checkpoint is kept")
                scaler.scale(loss / config.accumulate).backward()
                micro += 1
                window_images += len(view_1)
                now = time.perf_counter()
                train_seconds, clock = train_seconds + now - clock, now
                if micro % config.accumulate:
                    continue
                lr = lr_at(step, budget.total, warmup_steps, peak_lr)
                set_lr(optimizer, lr)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                tau = learner.update_target(tau_at(step, budget.total, config.tau_base, config.tau_schedule))
                step += 1
                budget.observe(step, train_seconds)
                bar.total = budget.total
                bar.update(1)
                if step % config.log_every == 0:
                    now = time.perf_counter()
                    img_s = window_images / (now - window_start)
                    window_start, window_images = now, 0
                    log(dict(step=step, epoch=round(step / steps_per_epoch, 4), loss=loss.item(), lr=lr,
                             tau=tau, img_s=round(img_s, 1), time_s=round(train_seconds, 2)))
                    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{img_s:.0f}", refresh=False)
                if probe and step % config.collapse_every == 0:
                    stats = probe(learner, dtype)
                    log(dict(step=step, epoch=round(step / steps_per_epoch, 4), **stats))
                    alarm(step, stats)
                if step % config.checkpoint_every == 0:
                    save_checkpoint(out, learner, optimizer, config, step, epoch)
                if budget.done(step, train_seconds):
                    break
            if step == step_at_epoch_start:
                raise ByolError(f"an epoch of {config.data} gave no complete batch of {global_batch} images: "
                                "lower --batch-size or add images")
            epoch += 1
            save_checkpoint(out, learner, optimizer, config, step, epoch)
            if monitor and config.knn_every and epoch % config.knn_every == 0 and not budget.done(step, train_seconds):
                log(dict(step=step, epoch=epoch, time_s=round(train_seconds, 2),
                         **{f"knn_{k}": v for k, v in monitor(learner.encoder, dtype).items()}))
                clock = window_start = time.perf_counter()
                window_images = 0
    except KeyboardInterrupt:
        bar.close()
        raise ByolError(f"interrupted at step {step}; the last checkpoint in {out} is intact") from None
    except CollapseError as err:
        bar.close()
        kept = f"the last checkpoint in {out} is kept" if (out / CHECKPOINT).exists() else "no checkpoint was written yet"
        raise CollapseError(f"stopped: {err}; {kept}") from None
    bar.close()
    save_checkpoint(out, learner, optimizer, config, step, epoch)
    save_file({k: v.contiguous() for k, v in learner.encoder.state_dict().items()}, str(out / ENCODER))
    result = dict(steps=step, epochs=round(step / steps_per_epoch, 3), train_seconds=round(train_seconds, 1),
                  img_s=round(step * global_batch / max(train_seconds, 1e-9), 1),
                  skipped_files=len(data.skipped) + data.stream_skips)
    if monitor:
        knn = monitor(learner.encoder, dtype)
        log(dict(step=step, epoch=result["epochs"], time_s=round(train_seconds, 2),
                 **{f"knn_{k}": v for k, v in knn.items()}))
        (out / "knn.json").write_text(json.dumps(knn, indent=1) + "\n")
        result["knn"] = knn
    metrics.close()
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
