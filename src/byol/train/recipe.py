"""The recipe of a run that names no preset: fitted to its images and to the device it trains on.

Config's defaults are the paper's GPU recipe (ResNet-18 at full width, batch 256, LARS,
10 warm-up epochs, tau 0.996 -> 1). On a CPU that recipe takes days to learn anything, and
its short runs end below their own random initialisation (docs/large-images.md), so a CPU
run takes the recipe measured for 2 CPU cores, the `cifar10-cpu` preset's, at a resolution
a CPU affords. A GPU run keeps the paper's recipe, with its 256 images a step split into
micro-batches where one GPU's memory does not hold them, measured by two trial steps.
Every key a flag, `--set` or the data settings chose explicitly is left as it is.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from byol import config as cfg
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.runtime import autocast, autocast_dtype, pick_device
from byol.data.fit import settings_for, typical_size
from byol.data.source import ImageSource
from byol.data.sources import in_memory, is_named, list_source
from byol.methods import Method, build_learner

CPU_PRESET = "cifar10-cpu"
CPU_KEYS = ("encoder", "width", "projector_hidden", "predictor_hidden", "projection_dim", "batch_size", "optimizer",
            "lr", "momentum", "weight_decay", "warmup_epochs", "predictor_lr_mult", "tau_base", "tau_schedule",
            "crop_min_scale", "log_every")
CPU_MAX_SIZE = 96  # the step costs 1.3x its 32-px cost, 128 px 1.5x that again (docs/large-images.md)
DECODED_MEMORY_SHARE = 0.25  # of the machine's memory, for images decoded once
GPU_BATCH = 256  # the paper's smallest batch without a loss of accuracy (its batch-size figure)
GPU_MEMORY_SHARE = 0.8  # of the memory free before training: the rest for the views, the loader, fragmentation
TRIAL_BATCHES = (4, 8)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_recipe() -> dict:
    """The `cifar10-cpu` preset's optimisation and networks: what 2 CPU cores learn most from."""
    preset = cfg.resolve(CPU_PRESET)
    return {key: getattr(preset, key) for key in CPU_KEYS} | dict(workers=min(8, usable_cores()))


def memory_bytes() -> int | None:
    """This machine's memory, where the OS says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def trial_views(learner: Method, batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The run's own views (small crops too) of `batch` random images, drawing nothing from the run's generators."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return learner.views(images.to(device))


def step_memory(config: Config, device: torch.device) -> tuple[float, float]:
    """Bytes a training step holds on the GPU `device`: (fixed, per image of the micro-batch),
    from the peaks of two trial steps and the momentum buffer the optimiser adds."""
    with torch.random.fork_rng(devices=[]):  # the run's own networks are drawn later, from its seed
        learner = build_learner(config)
    learner = learner.to(device).to(memory_format=torch.channels_last)
    dtype, peaks = autocast_dtype(config.precision, device), []
    momentum = sum(p.numel() * p.element_size() for p in learner.trainable_parameters())
    try:
        for batch in TRIAL_BATCHES:
            torch.cuda.reset_peak_memory_stats(device)
            views = trial_views(learner, batch, config.image_size, device)
            with autocast(device, dtype):  # as Trainer.step runs it
                loss = learner.loss(*(v.contiguous(memory_format=torch.channels_last) for v in views))
            loss.backward()
            peaks.append(torch.cuda.max_memory_allocated(device))
            learner.zero_grad(set_to_none=True)
            del views, loss
    except torch.cuda.OutOfMemoryError:
        raise ByolError(f"{TRIAL_BATCHES[-1]} images of {config.image_size} px do not fit in {device}'s memory: "
                        "lower image_size or choose a smaller --encoder") from None
    finally:
        del learner
        torch.cuda.empty_cache()
    per_image = (peaks[1] - peaks[0]) / (TRIAL_BATCHES[1] - TRIAL_BATCHES[0])
    return peaks[0] - TRIAL_BATCHES[0] * per_image + momentum, per_image


def batch_that_fits(images: int, world: int, fixed: float, per_image: float, free: float) -> tuple[int, int]:
    """(batch_size, accumulate) for about `images` a step over `world` GPUs: micro-batches that
    fit in GPU_MEMORY_SHARE of `free` bytes, the largest one that divides each GPU's share
    exactly unless that is under half of the largest that fits."""
    share = max(2, images // world)
    fits = [micro for micro in range(share, 1, -1) if fixed + per_image * micro <= GPU_MEMORY_SHARE * free]
    if not fits:
        raise ByolError(f"2 images a GPU do not fit in {free / 2**30:.1f} GiB: lower image_size or choose a "
                        "smaller --encoder")
    exact = [micro for micro in fits if share % micro == 0 and 2 * micro > fits[0]]
    micro = exact[0] if exact else fits[0]
    return micro * world, max(1, round(share / micro))


def gpu_recipe(config: Config, device: torch.device, explicit: set[str]) -> dict:
    """The paper's recipe as Config holds it; the batch split into micro-batches that fit, and
    loader workers for the cores a GPU's decoding needs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = dict(workers=max(1, min(16, usable_cores() // world - 1)))
    if not {"batch_size", "accumulate"} & explicit and world == 1:
        fixed, per_image = step_memory(config, device)
        free = torch.cuda.mem_get_info(device)[0]
        chosen["batch_size"], chosen["accumulate"] = batch_that_fits(GPU_BATCH, world, fixed, per_image, free)
    return chosen


def device_for(config: Config) -> torch.device:
    """The device a run of `config` trains on (under torchrun, this process's GPU)."""
    device = pick_device(config.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def decode_once_on_cpu(listing: ImageSource | None, size: int) -> str | None:
    """Why the images of `listing` (None for a dataset by name, always in memory) that would
    stream at `size` are decoded once instead, where they fit in memory: a CPU's loader workers
    take the cores that the step needs (None: streamed). Each of the node's processes (torchrun's
    LOCAL_WORLD_SIZE) holds its own copy, so all of them must fit."""
    if listing is None or in_memory(size):
        return None
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    needed, memory = len(listing) * size * size * 3 * processes, memory_bytes()
    if memory is None or needed > DECODED_MEMORY_SHARE * memory:
        return None
    copies = f", {processes} processes" if processes > 1 else ""
    return (f"streamed, every image would be decoded at every epoch, which on a CPU takes about as long as the step, "
            f"so they are decoded once ({needed / 2**30:.2f} GiB in memory{copies})")


def recipe_for(config: Config, explicit: set[str], device: torch.device,
               listing: ImageSource | None = None) -> tuple[Config, dict, str | None]:
    """`config` with the recipe for its data (`listing`: its images, where the caller has listed
    them) and `device`, except the keys in `explicit`; the keys and values chosen; and the line
    that says what was chosen and why (None when nothing was)."""
    if not config.data:
        return config, {}, None
    if listing is None and not is_named(config.data):
        listing = list_source(config.data, config.image_size)
    size = config.image_size if "image_size" in explicit else typical_size(config.data, listing)
    reasons = [f"image_size is {size}" if "image_size" in explicit else
               f"the images of {config.data} are about {size} px (median shorter side of a sample)" if size else
               f"the sizes of the images of {config.data} cannot be read"]
    recipe = cpu_recipe() if device.type == "cpu" else {}
    if recipe:
        reasons.append(f"on the CPU, the networks and optimisation of the {CPU_PRESET} preset "
                       f"(byol presets show {CPU_PRESET})")
        if size and size > CPU_MAX_SIZE and "image_size" not in explicit:
            size = CPU_MAX_SIZE
            reasons.append(f"a CPU trains at up to {CPU_MAX_SIZE} px")
    chosen = {key: value for key, value in {**(settings_for(size) if size else {}), **recipe}.items()
              if key not in explicit}
    if recipe and "decode_once" not in explicit:
        reason = decode_once_on_cpu(listing, chosen.get("image_size", config.image_size))
        if reason:
            chosen["decode_once"] = True
            reasons.append(reason)
    config = cfg.apply(dataclasses.replace(config), chosen, "the recipe").checked()
    if device.type == "cuda":
        gpu = {key: value for key, value in gpu_recipe(config, device, explicit).items() if key not in explicit}
        config = cfg.apply(config, gpu, "the recipe").checked()
        chosen |= gpu
        reasons.append(f"on {torch.cuda.get_device_name(device)}, the paper's recipe with {GPU_BATCH} images a step "
                       "in micro-batches that fit")
    if not chosen:
        return config, chosen, None
    said = ", ".join(f"{key}={value}" for key, value in chosen.items() if key not in recipe or key == "workers")
    return config, chosen, (f"no preset: {'; '.join(reasons)}; so {said or 'the recipe'} (all in the run's config.yaml); "
                    "a --preset, --config or flag overrides any of these")
