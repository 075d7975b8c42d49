"""Which training-step shapes crash PyTorch's CPU kernels, in which memory format, and whether
`byol pretrain` survives every one of them.

A seeded sample of image sizes (8 to 512 px), widths (1/8 to 2) and micro-batches (2 to 64),
capped by cost (pixels x width^2 x batch) so that a sample fits in memory and minutes on 2
cores. For each: the trial step of byol.train.layout in a child process, channels_last and
contiguous, in the precision `auto` picks here; then, for every shape where a format died,
a real `byol pretrain` of 2 steps, which must end with exit 0 (it falls back) or 2 (it
refuses in one line), never by a signal. Results go to OUT/layouts.json, a row per shape.

    python benchmarks/layouts.py --out runs/layouts [--samples 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from byol.config import Config
from byol.core.files import write_json
from byol.core.runtime import cpu_identity
from byol.train import layout

SIZES = [8, 16, 24, 32, 48, 64, 72, 96, 128, 160, 224, 256, 384, 512]
WIDTHS = [0.125, 0.25, 0.5, 1.0, 2.0]
BATCHES = [2, 4, 8, 16, 32, 64]
COST_CAP = 64 * 224 * 224 * 0.25  # pixels x width^2 x batch: about a ResNet-18 step of 1 s to 30 s here


def shapes(samples: int, seed: int) -> list[tuple[int, float, int]]:
    """A seeded sample of (size, width, batch) under the cost cap, always with the Zen 4 crash's shape."""
    rng, chosen = random.Random(seed), {(72, 0.125, 8)}
    while len(chosen) < samples:
        size, width, batch = rng.choice(SIZES), rng.choice(WIDTHS), rng.choice(BATCHES)
        if size * size * width * width * batch <= COST_CAP:
            chosen.add((size, width, batch))
    return sorted(chosen)


def config_for(size: int, width: float) -> Config:
    return Config(image_size=size, width=width, cifar_stem=size <= 64, augment="cifar" if size <= 32 else "imagenet",
                  projector_hidden=1024, predictor_hidden=1024, projection_dim=128)


def pretrain_survives(size: int, width: float, batch: int, folder: Path, out: Path) -> int:
    command = [sys.executable, "-m", "byol", "pretrain", "--data", str(folder), "--out", str(out), "--width",
               str(width), "--batch-size", str(batch), "--set", f"image_size={size}", "--set", "steps=2",
               "--set", "tensorboard=false", "--set", "decode_once=true", "--set", f"cifar_stem={size <= 64}"]
    return subprocess.run(command, capture_output=True, text=True).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(130):
            Image.fromarray(rng.integers(0, 256, (520, 520, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
        for size, width, batch in shapes(args.samples, args.seed):
            row = dict(size=size, width=width, batch=batch)
            for channels_last in (True, False):
                started = time.perf_counter()
                survived, how = layout._run_child(layout.trial(config_for(size, width), batch, channels_last))
                row["channels_last" if channels_last else "contiguous"] = how
                row[f"{'channels_last' if channels_last else 'contiguous'}_s"] = round(time.perf_counter() - started, 1)
            if "ok" not in (row["channels_last"], row["contiguous"]) or row["channels_last"] != "ok":
                row["pretrain_exit"] = pretrain_survives(size, width, batch, folder, Path(scratch) / f"run-{len(rows)}")
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_json(args.out / "layouts.json", dict(cpu=cpu_identity().split("|")[0], rows=rows))
    crashed = [r for r in rows if r["channels_last"] != "ok" or r["contiguous"] != "ok"]
    print(f"{len(rows)} shapes; a format died at {len(crashed)}; pretrain exits there: "
          f"{sorted({r.get('pretrain_exit') for r in crashed})}")


if __name__ == "__main__":
    main()
