"""What byol's data path costs as the data grows, as a folder, a file list and shards.

For 10,000, 100,000 and 1,000,000 images (hard links to the bundled CIFAR-10's JPEGs, ten
class folders, as benchmarks/listing.py builds them; the file list and the shards made
from each, once), each measured in a fresh process:
- open: seconds to list the folder, read the file list or the shards' index, and the
  process's peak memory after it;
- the loader: seconds from nothing to the first batch of training crops (96 px, 2 workers,
  64 images a batch) and to every worker's first, the steady crops a second over 30 batches
  after 10 more, and the loader workers' summed PSS (proportional set size: shared pages
  split between the processes);
- `byol shard`: seconds to write the shards (a decode check of every image, 2 processes).
Then `byol embed` of each set and `byol eval knn` with it as the bank (the 10,000 set as
the queries), seconds and peak memory, by the encoder of a 1-step run of the CPU recipe
(32 px). Then, on 4,000 photo-sized images (scripts/make_photo_folder.py: shorter side 200-500 px)
as a folder and as shards: the loader's crops a second at 96 and 224 px, 2 workers.

Results go to OUT/scale.json as they come; a rerun measures only what is missing.

    python benchmarks/scale.py --images ../shared/datasets/cifar10/train --out runs/scale [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BATCH, WORKERS, WARM, TIMED = 64, 2, 10, 30


def pss_of_children() -> int:
    """The summed PSS, in bytes, of this process's children (the loader workers)."""
    total = 0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            rollup = Path(f"/proc/{child}/smaps_rollup").read_text().splitlines()
            total += sum(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
    return total


def peak_mib() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not carried over from the
    process that started it)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return round(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def measure(spec: str, size: int) -> dict:
    """One data set, in this (fresh) process: open it, then draw training crops from it."""
    import torch

    from byol.data.epochs import EpochBatches
    from byol.data.sources import list_source
    from byol.data.views import view_specs

    started = time.perf_counter()
    source = list_source(spec, size)
    opened = time.perf_counter() - started
    peak_open = peak_mib()
    batches = EpochBatches(len(source), BATCH, seed=0)
    specs = view_specs("imagenet", size)
    crops = iter(source.crop_batches(batches, lambda: specs, WORKERS, torch.device("cpu")))
    started = time.perf_counter()
    next(crops)
    first = time.perf_counter() - started
    for _ in range(WORKERS - 1):
        next(crops)
    every_worker = time.perf_counter() - started
    for _ in range(WARM):
        next(crops)
    started = time.perf_counter()
    images = sum(len(next(crops)[1]) for _ in range(TIMED))
    rate = images / (time.perf_counter() - started)
    workers = pss_of_children()
    return dict(images=len(source), open_s=round(opened, 2), peak_after_open_mib=peak_open,
                first_batch_s=round(first, 2), every_workers_first_s=round(every_worker, 2), crops_per_s=round(rate), workers_pss_mib=round(workers / 2**20, 1),
                peak_mib=peak_mib())


def command(argv: list[str]) -> dict:
    """A byol command, in this (fresh) process: its seconds and peak memory."""
    from byol.cli import main

    started = time.perf_counter()
    assert main(argv) == 0, argv
    return dict(seconds=round(time.perf_counter() - started, 1), peak_mib=peak_mib())


def in_fresh_process(*args: str) -> dict:
    """This script run again with `args` (a child's --measure or --command): the JSON it prints."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


def fresh_command(argv: list[str]) -> dict:
    return in_fresh_process("--command", *argv)


def fresh(spec: str, size: int) -> dict:
    return in_fresh_process("--measure", spec, "--size", str(size))


def file_list(folder: Path) -> Path:
    """FOLDER.txt: the folder's images, a path and a class a line; made once."""
    listed = folder.with_suffix(".txt")
    if not listed.exists():
        from byol.data.folders import list_images

        listing = list_images(folder)
        lines = (f"{os.path.relpath(path, listed.parent)}\t{listing.classes[label]}\n"
                 for path, label in zip(listing.files, listing.labels.tolist()))
        listed.write_text("".join(lines))
    return listed


def shards(folder: Path, results: dict, key: str) -> Path:
    """FOLDER-shards: the folder's images as shards of 64 MB; made once, the time recorded."""
    from byol.data.shard_writer import write_shards

    out = folder.parent / f"{folder.name}-shards"
    if key not in results:
        started = time.perf_counter()
        written = write_shards(folder, out, 64 * 10**6, workers=2)
        results[key] = dict(seconds=round(time.perf_counter() - started, 1), **written)
    return out


def record(results: dict, path: Path, key: str, measure_it) -> None:
    from byol.core.files import write_json

    if key not in results:
        results[key] = measure_it()
        print(key, json.dumps(results[key]), flush=True)
        write_json(path, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="a folder of JPEGs to link to (CIFAR-10's train split)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--photos", type=int, default=4000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a child: measure this data set, print JSON
    parser.add_argument("--size", type=int, default=96, help=argparse.SUPPRESS)
    parser.add_argument("--command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # a child: time a byol command
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.size)))
        return
    if args.command:
        print(json.dumps(command(args.command)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from listing import build

    from byol.core.runtime import cpu_identity

    path = args.out / "scale.json"
    results = json.loads(path.read_text()) if path.exists() else dict(cpu=cpu_identity(), precision="none (data only)")
    sources = sorted(args.images.rglob("*.jpg"))
    for size in (int(s) for s in args.sizes.split(",")):
        folder = build(args.out, size, sources)
        listed, sharded = file_list(folder), shards(folder, results, f"shard {size}")
        for kind, spec in (("folder", folder), ("file list", listed), ("shards", sharded)):
            record(results, path, f"{kind} {size}", lambda spec=spec: fresh(str(spec), 96))
    sizes = [int(s) for s in args.sizes.split(",")]
    run = args.out / "run"
    if not (run / "checkpoint.pt").exists():
        subprocess.run([sys.executable, "-m", "byol", "pretrain", "--data", str(args.out / str(sizes[0])), "--out",
                        str(run), "--set", "steps=1", "--set", "knn_every=0", "--set", "collapse_every=0"], check=True)
    for size in sizes:
        folder = args.out / str(size)
        record(results, path, f"embed {size}", lambda folder=folder: fresh_command(
            ["embed", "--checkpoint", str(run), "--data", str(folder), "--out", str(args.out / f"embed-{folder.name}.npy")]))
        record(results, path, f"eval knn {size}", lambda folder=folder: fresh_command(
            ["eval", "knn", "--checkpoint", str(run), "--train", str(folder), "--test", str(args.out / str(sizes[0]))]))
    photos = args.out / "photos"
    if not photos.exists():
        subprocess.run([sys.executable, "scripts/make_photo_folder.py", str(args.images), str(photos), "--count",
                        str(args.photos)], check=True)
    photo_shards = shards(photos, results, "shard photos")
    for size in (96, 224):
        for kind, spec in (("folder", photos), ("shards", photo_shards)):
            record(results, path, f"photos {kind} {size} px", lambda spec=spec, size=size: fresh(str(spec), size))


if __name__ == "__main__":
    main()
