"""Pretraining: data in, online network trained, target moved, run folder written.

`Trainer.step` is the whole BYOL (or SimCLR, ...) update: the loss of the two views,
backward, the optimiser step, the target update. Everything else here is around it:
building, resuming, logging, agreeing between processes, checkpointing, evaluating.

Under torchrun every process runs the same steps on its share of each global batch; rank 0
alone writes the run folder. A checkpoint holds everything needed to continue exactly
(weights, optimiser, schedules, data position, every process's RNG states), so a run
killed at any point and resumed ends where the uninterrupted run would have. Nothing is
read back from the device on an ordinary step: the processes agree (on the time spent, a
stop request, a non-finite loss, the loss to log) only at sync steps, every `log_every`
steps and wherever a checkpoint, a collapse probe or the end of an epoch comes.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from byol import config as cfg
from byol.checkpoint import HISTORY, LATEST, Checkpoint, Progress, last_checkpoint, read_checkpoint, write_checkpoint
from byol.config import Config, RunSettings
from byol.core import distributed
from byol.core.errors import ByolError, CollapseError, Stopped
from byol.core.files import names_text, refuse_inside, remove_own_temporaries, write_json, write_text, write_with
from byol.core.progress import note
from byol.core.progress import progress as progress_bar
from byol.core.runtime import (autocast, autocast_dtype, caller_state_kept, channels_last_is_safe, make_deterministic,
                               refuse_compile_without_a_compiler, rng_state, seed_everything, set_rng_state)
from byol.core.schedules import lr_at, scaled_lr, size_at, tau_at
from byol.data.source import ImageSource
from byol.eval.pretrained import Pretrained
from byol.methods import Method, build_learner
from byol.train.batches import load_train_data
from byol.train.budget import Budget, length_estimate
from byol.train.layout import choose_channels_last
from byol.train.lock import run_folder_lock
from byol.train.logbook import Logbook
from byol.train.monitors import CollapseAlarm, collapse_probe, knn_monitor
from byol.train.optim import build_optimizer, param_groups, set_lr
from byol.train.signals import StopRequests
from byol.train.start import INIT_DIGEST, start_from, starting_weights
from byol.train.summary import SUMMARY
from byol.train.settings import resolve_settings
from byol.train.threads import ThreadTuner, within_cores
from byol.train.pace import Pace
from byol.train.trackers import Tracker

ENCODER = "encoder.safetensors"
# keys that may change when a run is resumed: where and how fast it runs, not what it computes
RUNTIME_KEYS = frozenset({"device", "threads", "workers", "log_every", "checkpoint_every", "keep_checkpoints",
                          "compile", "logger"})


class LossOf(nn.Module):
    """The learner's loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, learner: Method) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        return self.learner.loss(*views)


class LossWatch:
    """The step's mean loss and the first non-finite one, kept on the device: reading them
    back is left to the sync steps."""

    def __init__(self, device: torch.device) -> None:
        self.step_loss = torch.zeros((), device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def observe(self, step_loss: torch.Tensor, step: int) -> None:
        self.step_loss = step_loss
        first = ~torch.isfinite(step_loss) & (self.bad_step < 0)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, step_loss, self.bad_loss)

    def report(self) -> dict:
        """This process's view, as plain numbers (a host sync)."""
        return dict(loss=self.step_loss.item(), bad_step=int(self.bad_step.item()), bad_loss=self.bad_loss.item())


def open_run(config: Config, out: Path, resume: bool) -> Checkpoint | None:
    """The checkpoint to continue from, or None for a new run. A finished run, a run of
    another config, or (without `resume`) any existing run is refused."""
    latest = last_checkpoint(out)
    if latest is None:
        return None
    if not resume:
        raise ByolError(f"{out} already holds a run (its {LATEST}): resume it (without --no-resume) "
                        "or choose a new --out folder")
    if (out / SUMMARY).exists():
        raise ByolError(f"{out} holds a finished run (its {SUMMARY}): choose a new --out folder")
    try:
        checkpoint, latest = read_checkpoint(latest)
    except ByolError:
        raise ByolError(f"{latest} cannot be resumed (not a byol checkpoint, or one written by an older "
                        "byol): choose a new --out folder") from None
    saved = checkpoint.run_config(latest).to_dict()
    # a config that names no init digest (`--init X` again) takes the one the run recorded at its start
    asked = config.to_dict() | ({"init_sha256": saved["init_sha256"]} if config.init_sha256 is None else {})
    changed = [f"{k} (run: {saved[k]!r}, now: {v!r})" for k, v in asked.items()
               if k not in RUNTIME_KEYS and saved[k] != v]
    if changed:
        raise ByolError(f"cannot resume {out}: the config differs from the run's in {', '.join(changed)}; "
                        f"continue it with `byol pretrain --resume {out}`, or choose a new --out folder")
    return checkpoint


def refuse_out_inside_inputs(config: Config, out: Path) -> None:
    """An output folder inside --data or --test would put byol's files among the images it reads."""
    for flag, folder in (("--data", config.data), ("--test", config.test)):
        if folder and Path(folder).expanduser().is_dir():
            refuse_inside(out, Path(folder), "--out", flag)


def pretrain(config: Config | RunSettings, out: str | Path, resume: bool = True, notices: Sequence[str] = (),
             data_changed_ok: bool = False) -> dict:
    """Run pretraining and write everything to `out`; returns the run's summary. `config` is a
    Config, trained as it is, or RunSettings, resolved here for the device the run starts on
    (byol.train.settings: the recipe for the images and device where no preset or config file
    is named). A run folder that holds an unfinished run is continued (unless `resume` is
    False; on data whose files changed since it started only with `data_changed_ok`).
    `notices` are printed once the inputs have passed their checks."""
    asked = config if isinstance(config, RunSettings) else None
    out = Path(out)
    device = distributed.setup((asked.without_recipe() if asked else config).device)
    try:
        sources = listing = None
        if asked:
            resolved = resolve_settings(asked, device)
            config, sources, notices = resolved.config, resolved.sources, [*resolved.notices, *notices]
            listing = resolved.listing
        if not config.data:
            raise ByolError("no training data: pass --data a folder of images (or cifar10, cifar100, stl10)")
        refuse_out_inside_inputs(config, out)
        config, capped = within_cores(config)
        notices = [*notices, *capped]
        if config.compile:
            refuse_compile_without_a_compiler(device)
        with caller_state_kept(), run_folder_lock(out, lead=distributed.rank() == 0):
            checkpoint = open_run(config, out, resume)
            start, config = starting_weights(config, checkpoint)
            if start and sources and sources["init_sha256"] == cfg.DEFAULT:
                sources = sources | {"init_sha256": INIT_DIGEST}
            return Trainer(config, out, device, checkpoint, notices, data_changed_ok, sources, listing, start).run()
    finally:
        distributed.teardown()


class Trainer:
    """One pretraining run: built from a config, resumed from a checkpoint, run step by step."""

    def __init__(self, config: Config, out: Path, device: torch.device, checkpoint: Checkpoint | None = None,
                 notices: Sequence[str] = (), data_changed_ok: bool = False,
                 sources: dict[str, str] | None = None, listing: ImageSource | None = None,
                 start: Pretrained | None = None) -> None:
        self.config, self.out, self.device = config, out, device
        self.sources = sources  # where each setting came from, for config.yaml (None: the config as given)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.lead = self.rank == 0
        distributed.local_batch(config.batch_size)  # a batch that does not split over the processes stops all
        self.notices = list(notices)  # printed once the run's inputs have passed their checks
        if config.threads:
            torch.set_num_threads(config.threads)
        tuned = not config.threads and device.type == "cpu" and not config.deterministic and torch.get_num_threads() > 1
        self.tuner = ThreadTuner(torch.get_num_threads()) if tuned else None  # threads: 0 on a CPU
        if config.deterministic:
            make_deterministic()
        self.dtype = autocast_dtype(config.precision, device)
        self.learner, self.memory_format = self._build_networks(start)
        self.data = load_train_data(config, self.learner.views, device, self.rank, self.world, listing)
        self.notices.append(f"data: {self.data.source.describe()}")
        self.steps_per_epoch = self._steps_per_epoch()
        self.peak_lr = scaled_lr(config.lr, config.batch_size * config.accumulate)
        self.optimizer, self.scaler, self.budget = self._build_optimisation()
        self.watch = LossWatch(device)
        self.monitor = knn_monitor(config, self.data, device) if self.lead else None
        self.probe = collapse_probe(config, self.data, self.learner.views, device)  # every process: all stop together
        self.alarm = CollapseAlarm(config.projection_dim, config.collapse_stop, report=self.lead)
        self.progress = Progress()  # what a checkpoint saves of the run's position, beside the weights
        self.metrics_bytes = 0  # the metrics file's length at the checkpoint resumed from
        if checkpoint is not None:
            self.restore(checkpoint, data_changed_ok)
        self.model = self._loss_module()
        self.lr = self.tau = self.saved_at = self.view_size = None  # the last step's rate, decay and view side
        self.knn_error: str | None = None  # why k-NN could not run on these folders, once it could not
        self.logbook: Logbook | None = None  # opened by `run`, in the lead process
        self.bar: tqdm | None = None  # shown while `run` trains
        self.pace = Pace(self.progress.step, self.progress.train_seconds)  # training time and throughput

    def _build_networks(self, start: Pretrained | None) -> tuple[Method, torch.memory_format]:
        """The learner, from random init or `start`'s weights, in the memory format that trains
        safely here (its notices added to the notices)."""
        config = self.config
        seed_everything(config.seed)  # the same initial networks in every process
        learner = build_learner(config)
        if start is not None:
            self.notices.append(start_from(learner, start))
        learner = learner.to(self.device)
        seed_everything(config.seed + self.rank)  # and different augmentations
        channels_last, notice = self._channels_last(learner)
        if notice:
            self.notices.append(notice)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        learner = learner.to(memory_format=memory_format)
        if self.world > 1 and config.sync_batchnorm:
            learner = distributed.sync_batchnorm(learner, self.device)
        return learner, memory_format

    def _channels_last(self, learner: Method) -> tuple[bool, str | None]:
        """The memory format (channels_last or not) and a notice when the configured one was
        turned off: on a GPU as configured; on a CPU as a trial step in a child process allows
        (byol.train.layout), decided by the lead process for all."""
        config = self.config
        if self.device.type == "cuda":
            return config.channels_last, None
        rule = None
        if config.channels_last and not channels_last_is_safe(learner):
            config = replace(config, channels_last=False)
            rule = ("channels_last is off for this encoder: under 8 channels in a strided 1x1 convolution, "
                    "where PyTorch's CPU kernel is unsafe")
        outcome = None
        if self.lead:
            try:
                outcome = choose_channels_last(config, distributed.local_batch(config.batch_size))
            except ByolError as err:
                outcome = str(err)
        outcome = distributed.all_ranks(outcome)[0]
        if isinstance(outcome, str):
            raise ByolError(outcome)
        channels_last, notice = outcome
        return channels_last, rule or notice

    def _loss_module(self) -> nn.Module:
        """The loss as a module: compiled if the config says so (the learner's loss alone: the
        data, the optimiser and the signal handling stay outside), under DDP with several processes."""
        module = LossOf(self.learner)
        if self.config.compile:
            # inductor turns every CPU convolution channels_last unless told not to, which would
            # bring back the kernels that the layout trial turned off
            module.compile(options={"layout_optimization": self.memory_format == torch.channels_last})
        return distributed.data_parallel(module, self.device) if self.world > 1 else module

    def _open_folder(self) -> None:
        """The run's first writes (the lead's): temporaries a killed write left removed, config.yaml,
        the list of undecodable files, the metrics opened; then the notices. With strict_data,
        undecodable files stop every process here."""
        config, skipped, listed = self.config, self.data.skipped, self.out / "skipped_files.txt"
        if self.lead:
            remove_own_temporaries(self.out)
            remove_own_temporaries(self.out / HISTORY)
            cfg.save(config, self.out / "config.yaml", self.sources)
            if skipped:
                write_text(listed, names_text(skipped))
        if skipped and config.strict_data:  # in every process, so that all stop
            raise ByolError(f"{len(skipped)} image files cannot be decoded (e.g. {skipped[0]!r}; all "
                            f"in {listed}): fix or remove them, or drop strict_data to skip them")
        if not self.lead:
            return
        if skipped:
            self.notices.append(f"skipped {len(skipped)} undecodable image files (listed in {listed})")
        for notice in self.notices:
            note(notice)
        self.logbook = Logbook(self.out, config.tensorboard, self.metrics_bytes, self.progress.step,
                               Tracker(config.logger, self.out, config.to_dict()))

    def _steps_per_epoch(self) -> int:
        config = self.config
        steps = self.data.batches.batches_per_epoch // config.accumulate
        if steps == 0:
            raise ByolError(f"{config.data} has {len(self.data)} usable images, too few for one step of "
                            f"{config.batch_size * config.accumulate}: lower --batch-size or add images")
        return steps

    def _build_optimisation(self) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler, Budget]:
        """The optimiser, the fp16 grad scaler (off in other precisions) and the run's budget of steps or time."""
        config = self.config
        groups = param_groups(self.learner.trained_modules(), config.weight_decay,
                              {"predictor": config.predictor_lr_mult})
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        optimizer = build_optimizer(config.optimizer, groups, self.peak_lr, config.momentum, config.lars_eta,
                                    grad_scaler=scaler.is_enabled())
        total = config.steps or max(1, round(config.epochs * self.steps_per_epoch))
        budget = Budget(total, config.minutes * 60 if config.minutes else None,
                        round(config.warmup_epochs * self.steps_per_epoch))
        return optimizer, scaler, budget

    def checkpoint(self) -> Checkpoint:
        """This process's part of the run's state, the RNG states of every process gathered (all must call it)."""
        return Checkpoint(learner=self.learner.state_dict(), config=self.config.to_dict(),
                          optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                          budget=dict(vars(self.budget)), progress=replace(self.progress),
                          collapse_strikes=self.alarm.strikes,
                          metrics_bytes=self.logbook.tell() if self.logbook else self.metrics_bytes,
                          rng=distributed.all_ranks(rng_state()), data=self.data.source.identity())

    def restore(self, checkpoint: Checkpoint, data_changed_ok: bool = False) -> None:
        """Continue from `checkpoint`: every part of the state that `checkpoint()` saves (on data
        whose files changed since, only with `data_changed_ok`)."""
        self.learner.load_state_dict(checkpoint.learner)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scaler.load_state_dict(checkpoint.scaler)
        vars(self.budget).update(checkpoint.budget)
        self.alarm.strikes = checkpoint.collapse_strikes
        self.progress = replace(checkpoint.progress, data_changes=list(checkpoint.progress.data_changes))
        self.metrics_bytes = checkpoint.metrics_bytes
        self._check_data(checkpoint.data, data_changed_ok)
        if len(checkpoint.rng) == self.world:
            set_rng_state(checkpoint.rng[self.rank])
        elif self.lead:
            self.notices.append(f"resuming with {self.world} processes a run written by {len(checkpoint.rng)}: "
                                "it continues, but not bit-identically to an uninterrupted run")
        if self.lead:
            self.notices.append(f"resuming {self.out} at step {self.progress.step} (epoch {self.progress.epoch})")

    def _check_data(self, saved: dict | None, changed_ok: bool) -> None:
        """A resume on files other than the run's is refused, or with data_changed_ok continued and recorded."""
        now = self.data.source.identity()
        if saved is None or saved == now:  # None: a checkpoint written before runs recorded their data
            return
        change = (f"{saved['files']} image files when step {self.progress.step} was saved, {now['files']} now"
                  + (", other files" if saved["files"] == now["files"] else ""))
        if not changed_ok:
            raise ByolError(f"cannot resume {self.out}: the files of {self.config.data} changed since the run started "
                            f"({change}): put them back, continue on the new files with --data-changed ok, or "
                            "choose a new --out folder")
        self.progress.data_changes.append(dict(step=self.progress.step, files_before=saved["files"],
                                               files_after=now["files"]))
        if self.lead:
            self.notices.append(f"resuming on changed data ({change}), as --data-changed ok allows; "
                                "the summary records it")

    def step(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> bool:
        """One optimiser step on micro-batches of views (two, and small crops with multi-crop):
        loss, backward, optimiser, target.

        Returns False for a step not taken (a non-finite loss under nonfinite=skip, or fp16
        gradients that overflowed): then neither the schedules nor the target move.
        """
        step_loss = torch.zeros((), device=self.device)
        for i, views in enumerate(micro_batches):
            with self._gradient_sync(last=i == len(micro_batches) - 1):
                with autocast(self.device, self.dtype):
                    loss = self.model(*(v.contiguous(memory_format=self.memory_format) for v in views))
                self.scaler.scale(loss / len(micro_batches)).backward()
            step_loss = step_loss + loss.detach().float() / len(micro_batches)
        self.watch.observe(step_loss, self.progress.step)
        if self.config.nonfinite == "skip" and self._skip_if_not_finite(step_loss):
            return False
        progress = self.budget.advance(self.progress.step)
        self.lr = lr_at(self.progress.step, progress, self.budget.warmup_steps, self.budget.warmup_progress, self.peak_lr)
        set_lr(self.optimizer, self.lr)
        if not self._optimizer_step():
            return False
        self.tau = self.learner.update_target(tau_at(progress, self.config.tau_base, self.config.tau_schedule))
        self.progress.step += 1
        self.view_size = micro_batches[0][0].shape[-1]
        self._resize_views()
        return True

    def _resize_views(self) -> None:
        """Progressive resizing: the side of the coming step's views, from the run's progress."""
        if self.config.start_size:
            progress = self.budget.progress(self.progress.step)
            self.learner.views.resize(size_at(progress, self.config.start_size, self.config.image_size))

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Gradients are all-reduced on a step's last micro-batch only."""
        return self.model.no_sync() if self.world > 1 and not last else contextlib.nullcontext()

    def _skip_if_not_finite(self, step_loss: torch.Tensor) -> bool:
        """nonfinite=skip: drop the step's gradients if any process's loss is not finite, and log
        the skip (a host sync every step, the price of deciding before the optimiser step)."""
        bad, loss = distributed.sum_over_ranks(torch.stack([(~torch.isfinite(step_loss)).float(), step_loss])).tolist()
        if not bad:
            return False
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.skipped_steps += 1
        self._log(dict(step=self.progress.step, skipped_steps=self.progress.skipped_steps, loss=loss / self.world))
        return True

    def _optimizer_step(self) -> bool:
        """The optimiser step through the grad scaler; False when fp16 gradients overflowed and
        the scaler skipped it (seen as a lower scale: the only host sync, and fp16 only)."""
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return scale is None or self.scaler.get_scale() >= scale

    def run(self) -> dict:
        """Train until the budget is spent, then write the encoder, k-NN and the summary."""
        self._open_folder()
        self.bar = progress_bar(total=self.budget.total_steps, initial=self.progress.step, unit="step",
                                desc="pretrain", disable=not self.lead)
        self._resize_views()
        self._restart_clock()
        try:
            with StopRequests() as stop:
                while not self.budget.done(self.progress.step):
                    self._run_epoch(stop)
        except KeyboardInterrupt:  # a second Ctrl-C, before the step ended
            raise Stopped(f"interrupted at step {self.progress.step}; the last checkpoint in {self.out} is intact: resume "
                          f"with `byol pretrain --resume {self.out}`", signal.SIGINT) from None
        except CollapseError as err:
            kept = (f"the last checkpoint in {self.out} is kept" if (self.out / LATEST).exists()
                    else "no checkpoint was written yet")
            raise CollapseError(f"stopped: {err}; {kept}") from None
        finally:
            self.bar.close()
        if self.saved_at != self.progress.step:  # a run that ends at an epoch's end has just been saved
            self._agree_across_processes()
            self.save()
        return self.finish()

    def _run_epoch(self, stop: StopRequests) -> None:
        start_step, start_batch = self.progress.step, self.progress.batch_in_epoch
        for micro_batches in self._steps_of_epoch():
            taken = bool(micro_batches) and self.step(micro_batches)
            self._tick(len(micro_batches))
            if taken:
                self._after_step(stop)
            if self.budget.done(self.progress.step):
                return
        if self.progress.step == start_step and start_batch == 0:
            why = ("every step's loss was not finite" if self.progress.skipped_steps
                   else f"no complete batch of {self.config.batch_size * self.config.accumulate} images")
            raise ByolError(f"an epoch of {self.config.data} made no progress ({why}): lower --batch-size or add images")
        self.progress.epoch, self.progress.batch_in_epoch = self.progress.epoch + 1, 0
        if self.monitor and self.config.knn_every and self.progress.epoch % self.config.knn_every == 0:
            knn = self._knn_or_reason()
            if isinstance(knn, dict):
                self._log_knn(knn, self.progress.epoch)
        self._agree_across_processes()
        self.save()

    def _steps_of_epoch(self):
        """The rest of the epoch as lists of one step's micro-batches of views (a streamed micro-batch
        without 2 decodable images is left out of its step)."""
        self.data.batches.set_epoch(self.progress.epoch, self.progress.batch_in_epoch)  # always at a step's first micro-batch
        micro_batches = []
        for views in self.data.view_batches(self.learner.views, self.device):
            self.progress.batch_in_epoch += 1
            if views is not None:
                micro_batches.append(views)
            if self.progress.batch_in_epoch % self.config.accumulate == 0:
                yield micro_batches
                micro_batches = []

    def _tick(self, micro_batches: int) -> None:
        """Count images and training time (everything but k-NN evaluation)."""
        seconds = self.pace.tick(micro_batches * self.config.batch_size)
        self._fit_threads(seconds)
        self.progress.train_seconds += seconds

    def _fit_threads(self, seconds: float) -> None:
        """With threads: 0 on a CPU, the thread count that is fastest now (byol.train.threads)."""
        if self.tuner is None:
            return
        chosen = self.tuner.chosen
        count = self.tuner.step_took(seconds)
        if count is not None:
            torch.set_num_threads(count)
        if self.tuner.chosen != chosen and self.lead:
            note(f"threads: {self.tuner.why()}; --threads N pins a count")

    def _after_step(self, stop: StopRequests) -> None:
        step, config = self.progress.step, self.config
        self.bar.update(1)
        self._estimate_length(step)
        probing = self.probe is not None and step % config.collapse_every == 0
        saving = step % config.checkpoint_every == 0
        agreed = None
        if step % config.log_every == 0 or probing or saving or (self.world == 1 and stop.signal):
            agreed = self._agree_across_processes(stop)
        if agreed:
            self.bar.total = self.budget.expected_steps(step)
        if step % config.log_every == 0:
            self._log_step(agreed["loss"])
        if probing:
            stats = self.probe(self.learner, self.dtype)
            self._log(dict(step=step, epoch=round(step / self.steps_per_epoch, 4), **stats))
            self.alarm(step, stats)
        if saving:
            self.save()
        if agreed and agreed["signal"]:
            if self.saved_at != step:
                self.save()
            raise Stopped(f"stopped by {stop.name or 'a signal to another process'} at step {step}; "
                          f"the checkpoint is written: resume with `byol pretrain --resume {self.out}`",
                          stop.signal or agreed["signal"])

    def _estimate_length(self, step: int) -> None:
        """Once a run is under way, one line on how long the rest of it takes at its pace."""
        seconds = self.pace.step_seconds(step, self.progress.train_seconds)
        if seconds is not None and self.lead:
            note(length_estimate(self.budget, step, self.progress.train_seconds, seconds, self.device.type))

    def _agree_across_processes(self, stop: StopRequests | None = None) -> dict:
        """Gather from every process (a host sync) what all must act on alike: the lead's training
        seconds (the time budget agrees on them), a stop request and the mean loss, returned; and
        a non-finite loss in any process since the last sync, which stops the run (nonfinite=stop)."""
        mine = dict(self.watch.report(), seconds=self.progress.train_seconds, signal=(stop.signal or 0) if stop else 0)
        everyone = distributed.all_ranks(mine)
        if self.config.nonfinite == "stop":
            self._stop_on_nonfinite_loss(everyone)
        self.budget.agree(self.progress.step, everyone[0]["seconds"])
        return dict(loss=sum(r["loss"] for r in everyone) / self.world, signal=max(r["signal"] for r in everyone))

    @staticmethod
    def _stop_on_nonfinite_loss(reports: list[dict]) -> None:
        bad = [(r["bad_step"], r["bad_loss"]) for r in reports if r["bad_step"] >= 0]
        if bad:
            step, value = min(bad)
            raise ByolError(f"the loss became {value} at step {step}: the learning rate may be too high (lower --lr), "
                            "fp16 may overflow (--precision bf16 or fp32), or the data may hold broken values; the "
                            "last checkpoint is kept, and --set nonfinite=skip skips such steps instead")

    def _log(self, record: dict) -> None:
        if self.logbook is not None:
            self.logbook(record)

    def _log_step(self, loss: float) -> None:
        img_s, loader_wait = self.pace.read(self.data.wait_seconds)
        extra = dict(size=self.view_size) if self.config.start_size else {}  # the last step's views' side
        if self.tuner:
            extra["threads"] = torch.get_num_threads()
        self._log(dict(step=self.progress.step, epoch=round(self.progress.step / self.steps_per_epoch, 4), loss=loss,
                       lr=self.lr, tau=self.tau, img_s=round(img_s, 1), loader_wait=round(loader_wait, 4),
                       time_s=round(self.progress.train_seconds, 2), **extra))
        self.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{img_s:.0f}", refresh=False)

    def save(self) -> None:
        """Write a checkpoint (rank 0), from which `restore` continues exactly."""
        checkpoint = self.checkpoint()
        self.saved_at = self.progress.step
        if self.lead:
            write_checkpoint(checkpoint, self.out, self.config.keep_checkpoints)

    def evaluate(self) -> dict[str, float]:
        """k-NN of the online encoder (rank 0); its time is left out of the training time."""
        knn = self.monitor(self.learner.encoder, self.dtype)
        self._restart_clock()
        return knn

    def _restart_clock(self) -> None:
        """Training time and throughput count from now (not the time spent before, e.g. on k-NN)."""
        self.pace.restart(self.data.wait_seconds)

    def _knn_or_reason(self) -> dict[str, float] | str:
        """k-NN, or why it cannot run on these folders: then the run goes on, and ends finished,
        without it, and its summary gives the reason."""
        try:
            return self.evaluate()
        except ByolError as err:
            self.monitor, self.knn_error = None, str(err)
            note(f"k-NN left out of this run: {err}")
            return self.knn_error

    def _log_knn(self, knn: dict[str, float], epoch: float) -> None:
        self._log(dict(step=self.progress.step, epoch=epoch, time_s=round(self.progress.train_seconds, 2),
                       **{f"knn_{k}": v for k, v in knn.items()}))

    def finish(self) -> dict:
        """The summary of the finished run; rank 0 also writes the encoder, k-NN and summary.json."""
        global_batch = self.config.batch_size * self.config.accumulate
        result = dict(steps=self.progress.step, epochs=round(self.progress.step / self.steps_per_epoch, 3),
                      train_seconds=round(self.progress.train_seconds, 1),
                      img_s=round(self.progress.step * global_batch / max(self.progress.train_seconds, 1e-9), 1),
                      loader_wait=round(self.pace.loader_share(self.data.wait_seconds, self.progress.train_seconds), 4),
                      skipped_files=len(self.data.skipped) + self.data.stream_skips,
                      skipped_steps=self.progress.skipped_steps, processes=self.world)
        if not self.lead:
            return result
        encoder = {k: v.contiguous() for k, v in self.learner.encoder.state_dict().items()}
        write_with(self.out / ENCODER, lambda temporary: save_file(encoder, str(temporary)))
        knn = self._knn_or_reason() if self.monitor else None
        if isinstance(knn, dict):
            result["knn"] = knn
            self._log_knn(knn, result["epochs"])
            write_json(self.out / "knn.json", knn)
        if self.knn_error:
            result["knn_error"] = self.knn_error
        if self.progress.data_changes:
            result["data_changes"] = self.progress.data_changes
        if self.config.init:
            result["init"] = dict(source=self.config.init, sha256=self.config.init_sha256)
        self.logbook.close(result)
        write_json(self.out / SUMMARY, result)
        return result
