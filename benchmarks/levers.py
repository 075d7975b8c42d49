"""k-NN per minute of the cifar10-cpu preset and its levers (multi-crop, progressive resizing).

Every variant is the preset with some keys changed, trained on nine tenths of CIFAR-10's
training split and scored by k-NN on the tenth held out (the validation split: levers are
chosen there, never on the test split). Two phases, both resumable:

1. pace, alone on the machine: each variant trains for --pace-minutes under its own schedules
   (a progressive-resizing run passes through all its sizes), and its img/s is read back;
2. learning: each (variant, seed) trains for the steps its pace fits into --minutes, the
   preset's 12, so the runs are at equal wall clock; their lengths are fixed, so this phase
   may share the machine without changing a result (--threads 1 lets two scripts, each
   given some of the variants, share 2 cores).

    python benchmarks/levers.py --data ../shared/datasets/cifar10 --out runs/levers --seeds 0,1 \\
        --variant preset: --variant multicrop4:small_crops=4 --variant resize16:start_size=16
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from splits import validation_split


def byol(*args: str, log: Path) -> dict:
    """`byol pretrain ARGS` (continued if interrupted), then its summary."""
    out = Path(args[args.index("--out") + 1])
    if not (out / "summary.json").exists():
        with log.open("a") as err:
            subprocess.run([sys.executable, "-m", "byol", "pretrain", *args], check=True, stdout=subprocess.DEVNULL,
                           stderr=err)
    return json.loads((out / "summary.json").read_text())


def variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def run_args(split: Path, out: Path, sets: list[str], seed: int, length: list[str]) -> list[str]:
    return ["--preset", "cifar10-cpu", "--data", str(split / "train-minus-validation"),
            "--test", str(split / "validation"), "--out", str(out), "--seed", str(seed), *length,
            *(f"--set={s}" for s in sets)]


def table(rows: list[dict], seeds: list[int]) -> str:
    base = next((r for r in rows if not r["sets"]), rows[0])  # the preset, or the first variant given
    lines = ["| variant | changed | img/s alone | cost per step | steps at equal wall clock | " +
             " | ".join(f"k-NN val, seed {s}" for s in seeds) + f" | mean | vs {base['name']} |",
             "|---|---|---|---|---|" + "---|" * len(seeds) + "---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {' '.join(r['sets']) or '-'} | {r['img_s']:.1f} | "
                     f"{base['img_s'] / r['img_s']:.2f}x | {r['steps']:,} | "
                     + " | ".join(f"{k:.2f}" for k in r["knn"]) +
                     f" | {r['mean']:.2f} | {r['mean'] - base['mean']:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 as train/ and test/ ImageFolders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", action="append", type=variant, required=True,
                        help="NAME:KEY=VALUE,KEY=VALUE (NAME: alone is the preset, which the table compares with)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated; empty for the pace phase alone")
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--pace-minutes", type=float, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of each learning run (1: two such scripts can share 2 cores)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]  # none: the pace phase alone
    split = args.out / "split"
    validation_split(args.data / "train", split)
    paces = {name: byol(*run_args(split, args.out / "pace" / name, sets, 0, ["--minutes", f"{args.pace_minutes:g}"]),
                        log=args.out / f"pace-{name}.log") for name, sets in args.variant}
    steps = {name: round(args.minutes * 60 * pace["steps"] / pace["train_seconds"]) for name, pace in paces.items()}
    print(json.dumps(steps), flush=True)
    if not seeds:
        return
    knn = {name: [] for name, _ in args.variant}
    for seed in seeds:  # every variant's first seed before any second one
        for name, sets in args.variant:
            length = ["--minutes", "0", f"--set=steps={steps[name]}", "--threads", str(args.threads)]
            knn[name].append(byol(*run_args(split, args.out / name / f"seed{seed}", sets, seed, length),
                                  log=args.out / f"{name}.log")["knn"]["top1"])
            print(name, seed, knn[name][-1], flush=True)
    rows = [dict(name=name, sets=sets, img_s=paces[name]["img_s"], steps=steps[name], knn=knn[name],
                 mean=statistics.fmean(knn[name])) for name, sets in args.variant]
    (args.out / "levers.md").write_text(table(rows, seeds) + "\n")
    print(table(rows, seeds))


if __name__ == "__main__":
    main()
