"""The cifar10-cpu preset's pace alone and beside busy processes, with the thread count tuned
(`threads: 0`) or pinned, in one run.

Laptops always run something else. Each busy process is one Python loop spinning on a core
(as a browser tab or an indexer takes one); the training process gets all cores' worth of
OpenMP threads unless told otherwise. For each load (alone, 1 busy, 2 busy) and each thread
setting (auto, all cores, 1), one `byol pretrain --preset cifar10-cpu --minutes M` on an
unlabelled folder of CIFAR-10 training images (links, decoded once into memory, so no k-NN
at the end) reports its img/s from summary.json, and the thread counts the run used from its
metrics lines. The settings run one after another within each load.

    python benchmarks/contention.py --data ../shared/datasets/cifar10/train --out runs/contention [--minutes 1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from byol.core.files import write_json
from byol.core.runtime import cpu_identity

IMAGES = 10_000
SPIN = "while True: pass"


def unlabelled_links(train: Path, folder: Path) -> Path:
    """IMAGES links to the training images in one flat folder: unlabelled, so the run ends without k-NN."""
    if not folder.is_dir():
        folder.mkdir(parents=True)
        images = sorted(p for p in train.rglob("*") if p.is_file())[:IMAGES]
        for i, image in enumerate(images):
            (folder / f"{i:05d}{image.suffix}").symlink_to(image.resolve())
    return folder


def run(data: Path, out: Path, minutes: float, threads: int) -> dict:
    command = [sys.executable, "-m", "byol", "pretrain", "--preset", "cifar10-cpu", "--data", str(data), "--out",
               str(out), "--minutes", str(minutes), "--threads", str(threads), "--set", "tensorboard=false"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{out}: exit {done.returncode}: {done.stderr[-400:]}")
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    used = collections.Counter(line["threads"] for line in lines if "threads" in line)
    return dict(img_s=summary["img_s"], steps=summary["steps"], threads_logged=dict(sorted(used.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10's train folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=1.0)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    data = unlabelled_links(args.data, args.out / "data")
    settings = {"auto (threads: 0)": 0, f"{cores} threads": cores, "1 thread": 1}
    results: dict = {}
    for busy in (0, 1, 2):
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
        try:
            for name, threads in settings.items():
                out = args.out / f"busy{busy}-threads{threads}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                results.setdefault(f"beside {busy} busy", {})[name] = row = run(data, out, args.minutes, threads)
                print(json.dumps(dict(busy=busy, setting=name, **row)), flush=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        write_json(args.out / "contention.json", dict(cpu=cpu_identity().split("|")[0], cores=cores,
                                                      minutes=args.minutes, results=results))


if __name__ == "__main__":
    main()
