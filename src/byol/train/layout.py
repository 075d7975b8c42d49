"""The memory format of a run on a CPU, chosen by a trial step that cannot take the run down.

Some shapes crash PyTorch's CPU convolution kernels (oneDNN) with a segfault and no message,
in one memory format and not the other, on one CPU and not another. No rule can list them,
so before a CPU run trains, a short child process takes one training step at the run's
real shapes (its micro-batch, every view size it will use, its precision and threads) in
the configured format; a child that dies or hangs marks the format unsafe, and the run
falls back to the contiguous format, tried the same way. The verdicts are cached per CPU,
torch version and shape (BYOL_LAYOUT_CACHE, default ~/.cache/byol/layouts.json), so only a
run with new shapes pays for a trial. GPUs are not probed: channels_last is their fast path.

    python -m byol.train.layout < TRIAL.json    # the child: one step, exit 0 when it survives
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import write_json
from byol.core.runtime import autocast, autocast_dtype, cpu_identity
from byol.core.schedules import size_at
from byol.data.memory import default_cache_dir
from byol.methods import build_learner
from byol.train.recipe import trial_views

TRIAL_SECONDS = 300  # a trial step that has not ended by then has hung (as oneDNN's AVX2 bug does)
SHAPE_KEYS = ("encoder", "width", "cifar_stem", "projector_hidden", "projection_dim", "predictor_hidden",
              "head_batchnorm", "method", "augment", "image_size", "start_size", "small_crops", "small_crop_side",
              "precision", "threads")


def cache_path() -> Path:
    return Path(os.environ.get("BYOL_LAYOUT_CACHE") or default_cache_dir() / "layouts.json")


def view_sizes(config: Config) -> list[int]:
    """Every side the run's views take: the full size, and with progressive resizing each step up to it."""
    return sorted({size_at(i / 100, config.start_size, config.image_size) for i in range(101)})


def trial(config: Config, batch: int, channels_last: bool) -> dict:
    """What a child needs to take the run's step: its shape-deciding keys, micro-batch and format."""
    return dict(config={key: getattr(config, key) for key in SHAPE_KEYS}, batch=batch, channels_last=channels_last,
                sizes=view_sizes(config))


def _key(spec: dict) -> str:
    text = json.dumps(dict(spec, cpu=cpu_identity(), torch=torch.__version__), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cached() -> dict:
    try:
        verdicts = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def survives(spec: dict) -> tuple[bool, str]:
    """Whether the trial step `spec` ends normally in a child process, and if not, how it ended
    (from the cache when this CPU and torch have tried the same shapes before)."""
    key = _key(spec)
    verdict = _cached().get(key)
    if not (isinstance(verdict, list) and len(verdict) == 2):
        verdict = list(_run_child(spec))
        try:
            write_json(cache_path(), dict(_cached(), **{key: verdict}))
        except ByolError:  # the cache only saves a trial next time
            pass
    return bool(verdict[0]), str(verdict[1])


def _run_child(spec: dict) -> tuple[bool, str]:
    try:
        done = subprocess.run([sys.executable, "-m", "byol.train.layout"], input=json.dumps(spec), text=True,
                              capture_output=True, timeout=TRIAL_SECONDS,
                              start_new_session=True)  # Ctrl-C stops the run, and the trial with it, not as a verdict
    except subprocess.TimeoutExpired:
        return False, f"hung for {TRIAL_SECONDS} s"
    if done.returncode == 0:
        return True, "ok"
    if done.returncode < 0:
        return False, f"killed by {signal.Signals(-done.returncode).name}"
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return False, f"exit {done.returncode}: {last[:160]}"


def choose_channels_last(config: Config, batch: int) -> tuple[bool, str | None]:
    """Whether a CPU run may train channels_last, and a notice when the trial turned it off;
    a run whose step crashes in both formats is refused in one line."""
    if config.channels_last:
        ok, how = survives(trial(config, batch, channels_last=True))
        if ok:
            return True, None
        notice = (f"channels_last is off: a trial step at this run's shapes {how} on this CPU "
                  f"(a PyTorch kernel bug); the contiguous format passed (verdicts cached in {cache_path()})")
    else:
        notice = None
    ok, how = survives(trial(config, batch, channels_last=False))
    if not ok:
        raise ByolError(f"a training step at image_size {config.image_size}, width {config.width:g} and "
                        f"{batch} images a micro-batch {how} in a trial process on this CPU, in every memory "
                        "format (a PyTorch kernel bug): change image_size, width or batch_size, or the torch version")
    return False, notice


def take_trial_step(spec: dict) -> None:
    """One forward and backward of the learner at every view size of `spec`: the child's work."""
    config = Config(**spec["config"])
    if config.threads:
        torch.set_num_threads(config.threads)
    learner = build_learner(config)
    memory_format = torch.channels_last if spec["channels_last"] else torch.contiguous_format
    learner = learner.to(memory_format=memory_format)
    device, dtype = torch.device("cpu"), autocast_dtype(config.precision, torch.device("cpu"))
    for size in spec["sizes"]:
        learner.views.resize(size)
        views = trial_views(learner, spec["batch"], config.image_size, device)
        with autocast(device, dtype):
            loss = learner.loss(*(v.contiguous(memory_format=memory_format) for v in views))
        loss.backward()
        learner.zero_grad(set_to_none=True)


if __name__ == "__main__":
    take_trial_step(json.loads(sys.stdin.read()))
