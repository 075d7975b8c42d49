"""What listing a folder costs as it grows: seconds, the main process's memory, and what a
loader worker copies of the listing, at 10,000, 100,000 and 1,000,000 files.

Each folder is ten class sub-folders of hard links to the bundled CIFAR-10's JPEGs (links
cost a directory entry, not a file's blocks), built once under --out and kept for the next
run. For each size, in a fresh process each: `list_images` timed (the directory entries'
types spare a stat per file), the process's peak memory after it, and the private memory a
forked child gains by reading every path once: for the listing's PathTable, for the same
paths as a list of `Path` objects (what every loader worker would carry), and, as the
control, for as many Path objects made in the child from nothing the parent holds (the
child's allocations dirty some shared pages whatever it reads).

    python benchmarks/listing.py --images ../shared/datasets/cifar10/train --out runs/listing [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from byol.core.files import write_json
from byol.core.runtime import cpu_identity

CLASSES = 10


def build(folder: Path, size: int, sources: list[Path]) -> Path:
    """FOLDER/N: `size` links to `sources`, round-robin over ten class folders; built once."""
    target = folder / str(size)
    done = target / ".complete"
    if done.exists():
        return target
    for c in range(CLASSES):
        (target / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(size):
        link = target / f"class{i % CLASSES}" / f"{i:08d}.jpg"
        if not link.exists():
            os.link(sources[i % len(sources)], link)
    done.write_text("")
    return target


def private_growth(paths) -> int:
    """Bytes of private memory a forked child gains by reading every path once."""
    def private() -> int:
        rollup = Path("/proc/self/smaps_rollup").read_text().splitlines()
        return sum(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Private_Dirty:"))

    def child(queue) -> None:
        before = private()
        for path in paths:
            path.name  # noqa: B018 - reading is the point
        queue.put(private() - before)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    growth = queue.get()
    process.join()
    return growth


def measure(folder: str) -> dict:
    """One size, in this (fresh) process."""
    from byol.data.folders import list_images

    start = time.perf_counter()
    listing = list_images(folder)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    made = private_growth(Path(folder) / f"class{i % 10}/{i:08d}.jpg" for i in range(len(listing.files)))
    table = private_growth(listing.files)
    objects = list(listing.files)
    return dict(files=len(listing.files), list_seconds=round(seconds, 2), peak_rss_mib=round(peak / 2**20),
                worker_fresh_paths_mib=round(made / 2**20, 1), worker_listing_mib=round(table / 2**20, 1),
                worker_path_list_mib=round(private_growth(objects) / 2**20, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="a folder of JPEGs to link to (CIFAR-10's train split)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a child: measure this folder, print JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    sources = sorted(args.images.rglob("*.jpg"))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        folder = build(args.out, size, sources)
        done = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--measure", str(folder)],
                              capture_output=True, text=True, check=True)
        rows.append(dict(size=size, **json.loads(done.stdout.splitlines()[-1])))
        print(json.dumps(rows[-1]), flush=True)
    write_json(args.out / "listing.json", dict(cpu=cpu_identity(), rows=rows))


if __name__ == "__main__":
    main()
