"""The pretraining loop: data in, online network trained, target moved, run folder written.

Under torchrun every process runs this loop on its share of each global batch; rank 0
alone writes the run folder. A checkpoint holds everything needed to continue exactly
(weights, optimiser, schedules, data position, every process's RNG states), so a run
killed at any point and resumed ends where the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from byol import config as cfg
from byol.config import Config
from byol.errors import ByolError, CollapseError, Stopped
from byol.methods import Method, build_learner
from byol.progress import note, progress
from byol.train import distributed
from byol.train.batches import load_train_data
from byol.train.checkpoint import CHECKPOINT_FORMAT, remove_partial_writes, safe_load, save_with_history
from byol.train.logbook import Logbook
from byol.train.monitors import CollapseAlarm, collapse_probe, knn_monitor
from byol.train.optim import build_optimizer, param_groups, set_lr
from byol.train.runtime import (autocast, autocast_dtype, channels_last_is_safe, make_deterministic, rng_state,
                                seed_everything, set_rng_state)
from byol.train.schedules import lr_at, scaled_lr, tau_at
from byol.train.signals import StopRequests

CHECKPOINT = "checkpoint.pt"
HISTORY = "checkpoints"
ENCODER = "encoder.safetensors"
SUMMARY = "summary.json"
# keys that may change when a run is resumed: where and how fast it runs, not what it computes
RUNTIME_KEYS = frozenset({"device", "threads", "workers", "log_every", "checkpoint_every", "keep_checkpoints"})


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


class LossOf(nn.Module):
    """The learner's loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, learner: Method) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        return self.learner.loss(view_1, view_2)


def open_run(config: Config, out: Path, resume: bool) -> dict | None:
    """The checkpoint to continue from, or None for a new run. A finished run, a run of
    another config, or (without `resume`) any existing run is refused."""
    if not (out / CHECKPOINT).exists():
        return None
    if not resume:
        raise ByolError(f"{out} already holds a run (its {CHECKPOINT}): resume it (without --no-resume) "
                        "or choose a new --out folder")
    if (out / SUMMARY).exists():
        raise ByolError(f"{out} holds a finished run (its {SUMMARY}): choose a new --out folder")
    checkpoint = safe_load(out / CHECKPOINT)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT or "rng" not in checkpoint:
        raise ByolError(f"{out / CHECKPOINT} cannot be resumed (not a byol checkpoint, or one from a version "
                        "before exact resume): choose a new --out folder")
    saved = checkpoint["config"]
    changed = [f"{k} (run: {saved.get(k)!r}, now: {v!r})" for k, v in config.to_dict().items()
               if k not in RUNTIME_KEYS and saved.get(k) != v]
    if changed:
        raise ByolError(f"cannot resume {out}: the config differs from the run's in {', '.join(changed)}; "
                        f"continue it with `byol pretrain --resume {out}`, or choose a new --out folder")
    return checkpoint


def pretrain(config: Config, out: Path, resume: bool = True) -> dict:
    """Run pretraining as `config` says and write everything to `out`; a run folder that holds
    an unfinished run is continued (unless `resume` is False)."""
    if not config.data:
        raise ByolError("no training data: pass --data a folder of images (or cifar10, cifar100, stl10)")
    device = distributed.setup(config.device)
    try:
        return _pretrain(config, Path(out), resume, device)
    finally:
        distributed.teardown()


def _pretrain(config: Config, out: Path, resume: bool, device: torch.device) -> dict:
    rank, world = distributed.rank(), distributed.world_size()
    lead = rank == 0
    checkpoint = open_run(config, out, resume)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(out)
        cfg.save(config, out / "config.yaml")
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        make_deterministic()
    dtype = autocast_dtype(config.precision, device)
    seed_everything(config.seed)  # the same initial networks in every process
    learner = build_learner(config).to(device)
    seed_everything(config.seed + rank)  # and different augmentations
    channels_last = config.channels_last and (device.type == "cuda" or channels_last_is_safe(learner))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    learner = learner.to(memory_format=memory_format)
    if world > 1 and config.sync_batchnorm:
        learner = distributed.sync_batchnorm(learner, device)
    distributed.local_batch(config.batch_size)
    data = load_train_data(config, learner.views, rank, world)
    if data.skipped:
        listed = out / "skipped_files.txt"
        if lead:
            listed.write_text("\n".join(data.skipped) + "\n", errors="backslashreplace")
        if config.strict_data:  # in every process, so that all stop
            raise ByolError(f"{len(data.skipped)} image files cannot be decoded (e.g. {data.skipped[0]!r}; all in "
                            f"{listed}): fix or remove them, or drop strict_data to skip them")
        if lead:
            note(f"skipped {len(data.skipped)} undecodable image files (listed in {listed})")
    monitor = knn_monitor(config, data, device) if lead else None
    probe = collapse_probe(config, data, learner.views, device)  # in every process, so all stop together
    alarm = CollapseAlarm(config.projection_dim, config.collapse_stop, report=lead)

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

    step = epoch = batch_in_epoch = skipped_steps = 0
    train_seconds, metrics_bytes = 0.0, 0
    if checkpoint is not None:
        learner.load_state_dict(checkpoint["learner"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        vars(budget).update(checkpoint["budget"])
        alarm.strikes = checkpoint["collapse_strikes"]
        step, epoch, batch_in_epoch = checkpoint["step"], checkpoint["epoch"], checkpoint["batch_in_epoch"]
        skipped_steps, train_seconds = checkpoint["skipped_steps"], checkpoint["train_seconds"]
        metrics_bytes = checkpoint["metrics_bytes"]
        if len(checkpoint["rng"]) == world:
            set_rng_state(checkpoint["rng"][rank])
        elif lead:
            note(f"resuming with {world} processes a run written by {len(checkpoint['rng'])}: "
                 "it continues, but not bit-identically to an uninterrupted run")
        if lead:
            note(f"resuming {out} at step {step} (epoch {epoch})")
    model = LossOf(learner)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)

    logbook = Logbook(out, config.tensorboard, metrics_bytes, step) if lead else None

    def log(record: dict) -> None:
        if logbook is not None:
            logbook(record)

    def save() -> None:
        rngs = distributed.all_ranks(rng_state())
        if not lead:
            return
        state = dict(learner=learner.state_dict(), optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                     config=config.to_dict(), step=step, epoch=epoch, batch_in_epoch=batch_in_epoch,
                     skipped_steps=skipped_steps, train_seconds=train_seconds, budget=vars(budget),
                     collapse_strikes=alarm.strikes, metrics_bytes=logbook.tell(), rng=rngs, format=CHECKPOINT_FORMAT)
        save_with_history(state, out / CHECKPOINT, out / HISTORY / f"step-{step:08d}.pt", config.keep_checkpoints)

    if config.channels_last and not channels_last and lead:
        note("channels_last is off for this encoder: under 8 channels in a strided 1x1 convolution, "
             "where PyTorch's CPU kernel is unsafe")
    bar = progress(total=budget.total, initial=step, unit="step", desc="pretrain", disable=not lead)
    # training time counts everything (augmentation, data, checkpoints) except k-NN evaluation
    clock = time.perf_counter()
    window_start, window_images, micro, poisoned = clock, 0, 0, False
    with StopRequests() as stop:
        try:
            while not budget.done(step, train_seconds):
                data.batches.set_epoch(epoch, batch_in_epoch)
                first_batch, step_at_epoch_start = batch_in_epoch, step
                for view_1, view_2 in data.view_batches(learner.views, device):
                    batch_in_epoch += 1
                    micro += 1
                    view_1 = view_1.contiguous(memory_format=memory_format)
                    view_2 = view_2.contiguous(memory_format=memory_format)
                    last_micro = micro == config.accumulate
                    accumulating = model.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()
                    with accumulating:
                        with autocast(device, dtype):
                            loss = model(view_1, view_2)
                        mean_loss = distributed.sum_over_ranks(loss.detach().float()).item() / world
                        if not math.isfinite(mean_loss):
                            if config.nonfinite == "stop":
                                raise ByolError(
                                    f"the loss became {mean_loss} at step {step}: the learning rate may be too "
                                    "high (lower --lr), fp16 may overflow (--precision bf16 or fp32), or the "
                                    "data may hold broken values; the last checkpoint is kept, and "
                                    "--set nonfinite=skip skips such steps instead")
                            poisoned = True  # the whole step is skipped; backward still runs, so that
                        scaler.scale(loss / config.accumulate).backward()  # every process stays in step
                    window_images += len(view_1) * world
                    now = time.perf_counter()
                    train_seconds, clock = train_seconds + now - clock, now
                    if not last_micro:
                        continue
                    micro = 0
                    if poisoned:
                        optimizer.zero_grad(set_to_none=True)
                        skipped_steps, poisoned = skipped_steps + 1, False
                        log(dict(step=step, skipped_steps=skipped_steps, loss=mean_loss))
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
                        log(dict(step=step, epoch=round(step / steps_per_epoch, 4), loss=mean_loss, lr=lr,
                                 tau=tau, img_s=round(img_s, 1), time_s=round(train_seconds, 2)))
                        bar.set_postfix(loss=f"{mean_loss:.3f}", img_s=f"{img_s:.0f}", refresh=False)
                    if probe and step % config.collapse_every == 0:
                        stats = probe(learner, dtype)
                        log(dict(step=step, epoch=round(step / steps_per_epoch, 4), **stats))
                        alarm(step, stats)
                    saved = step % config.checkpoint_every == 0
                    if saved:
                        save()
                    signal = distributed.sum_over_ranks(torch.tensor([float(stop.signal or 0)], device=device)).item()
                    if signal:
                        if not saved:
                            save()
                        raise Stopped(f"stopped by {stop.name or 'a signal to another process'} at step {step}; "
                                      f"the checkpoint is written: resume with `byol pretrain --resume {out}`",
                                      stop.signal or int(signal))
                    if budget.done(step, train_seconds):
                        break
                if budget.done(step, train_seconds):
                    break
                if step == step_at_epoch_start and first_batch == 0:
                    why = "every step's loss was not finite" if skipped_steps else f"no complete batch of {global_batch} images"
                    raise ByolError(f"an epoch of {config.data} made no progress ({why}): "
                                    "lower --batch-size or add images")
                epoch, batch_in_epoch = epoch + 1, 0
                if monitor and config.knn_every and epoch % config.knn_every == 0:
                    log(dict(step=step, epoch=epoch, time_s=round(train_seconds, 2),
                             **{f"knn_{k}": v for k, v in monitor(learner.encoder, dtype).items()}))
                    clock = window_start = time.perf_counter()
                    window_images = 0
                save()
        except KeyboardInterrupt:
            raise ByolError(f"interrupted at step {step}; the last checkpoint in {out} is intact") from None
        except CollapseError as err:
            kept = f"the last checkpoint in {out} is kept" if (out / CHECKPOINT).exists() else "no checkpoint was written yet"
            raise CollapseError(f"stopped: {err}; {kept}") from None
        finally:
            bar.close()
    save()
    result = dict(steps=step, epochs=round(step / steps_per_epoch, 3), train_seconds=round(train_seconds, 1),
                  img_s=round(step * global_batch / max(train_seconds, 1e-9), 1),
                  skipped_files=len(data.skipped) + data.stream_skips, skipped_steps=skipped_steps, processes=world)
    if not lead:
        return result
    save_file({k: v.contiguous() for k, v in learner.encoder.state_dict().items()}, str(out / ENCODER))
    if monitor:
        knn = monitor(learner.encoder, dtype)
        log(dict(step=step, epoch=result["epochs"], time_s=round(train_seconds, 2),
                 **{f"knn_{k}": v for k, v in knn.items()}))
        (out / "knn.json").write_text(json.dumps(knn, indent=1) + "\n")
        result["knn"] = knn
    logbook.close()
    (out / SUMMARY).write_text(json.dumps(result, indent=1) + "\n")
    return result
