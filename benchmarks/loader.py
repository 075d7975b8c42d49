"""What streaming large images costs a training step, measured in one run on this machine.

For each case (a preset's networks on a folder of large images, which `byol pretrain`
streams through loader workers), in this order:

- decode: images/s on one core of what a loader worker does per image (read and decode
  the file, cut both random crops: `CroppedViews`), so a GPU user can size `workers`;
- in memory: seconds per training step with the crops already decoded (the colour stage
  and `Trainer.step`, the library's own step); for images held in memory (64 px or less),
  the step on them is all there is;
- streamed: seconds per step with the loader's workers feeding the same step, end to end,
  for each worker count asked; overhead = streamed / in memory - 1.

    python scripts/make_photo_folder.py ../shared/datasets/cifar10/train runs/stl/unlabeled --count 10000 --size 96 --flat
    python scripts/make_photo_folder.py ../shared/datasets/cifar10/train runs/photos/unlabeled --count 5000 --flat
    python benchmarks/loader.py --case stl10-resnet18:runs/stl/unlabeled:64 \\
        --case imagenet-resnet50:runs/photos/unlabeled:16 --workers 1,2 --out runs/loader.json

The CPU recipe's cost by training resolution (what `byol pretrain` chooses without a preset):

    python benchmarks/loader.py --case auto:runs/photos/unlabeled:32:32 --case auto:runs/photos/unlabeled:32:64 \\
        --case auto:runs/photos/unlabeled:32:96 \\
        --case auto:runs/photos/unlabeled:32:128 --case auto:runs/photos/unlabeled:32:160 \\
        --case auto:runs/photos/unlabeled:32:224 --workers 2 --out runs/loader-auto.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from byol import config as cfg
from byol.core.runtime import pick_device
from byol.data.folders import CroppedViews
from byol.data.memory import ImageTensor
from byol.train.recipe import device_for, recipe_for
from byol.train.trainer import Trainer


def trainer_for(preset: str, folder: Path, batch: int, workers: int, device: str, image_size: int | None) -> Trainer:
    """The preset's networks and views on `folder`, as `byol pretrain --preset` builds them; for
    `auto`, the recipe `byol pretrain` chooses without a preset on this device."""
    overrides = dict(data=str(folder), test=None, batch_size=batch, workers=workers, steps=10**6, minutes=None,
                     knn_every=0, collapse_every=0, tensorboard=False, device=device)
    if image_size:
        overrides["image_size"] = image_size
    if preset == "auto":
        config, _, _ = recipe_for(cfg.resolve(overrides=overrides), set(overrides), device_for(cfg.Config(device=device)))
    else:
        config = cfg.resolve(preset, overrides=overrides)
    return Trainer(config, Path(tempfile.mkdtemp(prefix="byol-loader-")), pick_device(device))


def decode_rate(trainer: Trainer, images: int) -> float:
    """Images/s of one loader worker's per-image work, on one core."""
    pairs = CroppedViews(trainer.data.source, trainer.learner.views.specs, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for key in range(images):
            pairs[key]
        return images / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def step_seconds_in_memory(trainer: Trainer, steps: int) -> list[float]:
    """Per-step seconds of colour stage + Trainer.step on crops decoded beforehand."""
    trainer.data.batches.set_epoch(0)
    crops = [(c1.to(trainer.device), c2.to(trainer.device)) for ((c1, c2), _, _), _ in zip(trainer.data.crops,
                                                                                             range(steps + 1))]
    times = []
    for crops_1, crops_2 in crops:
        start = time.perf_counter()
        trainer.step([trainer.learner.views.from_crops(crops_1, crops_2)])
        times.append(time.perf_counter() - start)
    return times[1:]  # the first step warms the kernels up


def step_seconds_streamed(trainer: Trainer, steps: int) -> list[float]:
    """Per-step seconds with the loader's workers decoding while the step runs."""
    trainer.data.batches.set_epoch(1)
    times, start = [], time.perf_counter()
    for pair, _ in zip(trainer.data.view_batches(trainer.learner.views, trainer.device), range(steps + 1)):
        trainer.step([pair])
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times[1:]  # the first waits for the workers to start


def measure(preset: str, folder: Path, batch: int, image_size: int | None, workers: list[int], steps: int,
            device: str) -> dict:
    """One case's decode rate and step times; images small enough to be held in memory
    (the training size at most 64 px) have no loader to time, only the step."""
    trainer = trainer_for(preset, folder, batch, 0, device, image_size)
    result = dict(preset=preset, folder=str(folder), batch=batch, image_size=trainer.config.image_size,
                  cifar_stem=trainer.config.cifar_stem, precision=str(trainer.dtype or torch.float32).replace("torch.", ""))
    if isinstance(trainer.data.source, ImageTensor):
        return result | dict(in_memory_s=statistics.median(step_seconds_streamed(trainer, steps)))
    result |= dict(decode_img_s_per_core=round(decode_rate(trainer, 4 * batch), 1),
                   in_memory_s=statistics.median(step_seconds_in_memory(trainer, steps)))
    for count in workers:
        trainer = trainer_for(preset, folder, batch, count, device, image_size)
        streamed = statistics.median(step_seconds_streamed(trainer, steps))
        result[f"streamed_{count}w_s"] = streamed
        result[f"overhead_{count}w"] = streamed / result["in_memory_s"] - 1
    return result


def table(results: list[dict], workers: list[int]) -> str:
    head = ["preset (networks)", "image px (stem)", "batch", "precision", "decode + crops, img/s per core",
            "step s, in memory (img/s)"] + [f"step s, {w} worker{'s' * (w > 1)} (overhead)" for w in workers]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        streamed = r.get("decode_img_s_per_core") is not None
        cells = [r["preset"], f"{r['image_size']} ({'3x3' if r['cifar_stem'] else '7x7'})", str(r["batch"]),
                 r["precision"], f"{r['decode_img_s_per_core']:.0f}" if streamed else "in memory",
                 f"{r['in_memory_s']:.3f} ({r['batch'] / r['in_memory_s']:.0f})"]
        cells += [f"{r[f'streamed_{w}w_s']:.3f} ({100 * r[f'overhead_{w}w']:+.1f}%)" if streamed else "-"
                  for w in workers]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def cpu_name() -> str:
    """The CPU's model name and its bf16 units, as /proc/cpuinfo gives them."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    units = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in info] or ["no native bf16"]
    return f"{model}, {', '.join(units)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", required=True, metavar="PRESET:FOLDER:BATCH[:IMAGE_SIZE]",
                        help="PRESET may be auto: no preset, the recipe chosen for the images and the device")
    parser.add_argument("--workers", default="1,2", help="comma-separated loader worker counts to time")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    results = []
    for case in args.case:
        preset, folder, batch, *size = case.split(":")
        results.append(measure(preset, Path(folder), int(batch), int(size[0]) if size else None, workers, args.steps,
                               args.device))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{os.cpu_count()} cores ({cpu_name()}), torch {torch.__version__}, device "
          f"{pick_device(args.device)}, precision as the presets' `auto` chose\n")
    print(table(results, workers))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
