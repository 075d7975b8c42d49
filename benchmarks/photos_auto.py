"""What `byol pretrain` learns with no preset and no recipe flags, on photo-like folders.

For each folder and seed: `byol pretrain --data FOLDER/unlabeled --test FOLDER/test --out RUN
--minutes M --seed S` (the recipe chosen for the images and this device; `--set` keys change
it, to compare a choice), then `byol eval knn --baseline` with FOLDER/train as the bank and
FOLDER/val (to choose on) and FOLDER/test (to report) as the queries, against the same
encoder at random initialisation. Resumable: a finished run or evaluation is read back, an
unfinished run is continued. Run it alone on the machine: the budget is wall-clock minutes.

    python scripts/make_photo_folder.py ...   # the folders, as docs/large-images.md makes them
    python benchmarks/photos_auto.py --folder runs/stl --folder runs/photos --seeds 0,1 --out runs/auto
    python benchmarks/photos_auto.py --folder runs/photos --seeds 0,1 --out runs/auto --set decode_once=false
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def byol(*args: str, log: Path) -> None:
    with log.open("a") as err:
        subprocess.run([sys.executable, "-m", "byol", *args], check=True, stdout=subprocess.DEVNULL, stderr=err)


def run_one(folder: Path, seed: int, minutes: float, sets: list[str], out: Path) -> dict:
    """Pretrain on FOLDER/unlabeled, then k-NN on FOLDER/val and FOLDER/test (each skipped when done)."""
    name = "-".join([folder.name, f"seed{seed}", *sets]).replace("=", "_")
    run, log = out / name, out / f"{name}.log"
    if not (run / "summary.json").exists():
        byol("pretrain", "--data", str(folder / "unlabeled"), "--test", str(folder / "test"), "--out", str(run),
             "--minutes", f"{minutes:g}", "--seed", str(seed), *(f"--set={s}" for s in sets), log=log)
    summary = json.loads((run / "summary.json").read_text())
    row = dict(folder=folder.name, seed=seed, sets=" ".join(sets), steps=summary["steps"], epochs=summary["epochs"],
               img_s=summary["img_s"], loader_wait=summary["loader_wait"],
               chosen=next((line.strip() for line in log.read_text().splitlines() if line.startswith("no preset:")), ""))
    for split in ("val", "test"):
        scored = run / f"eval_knn_{split}.json"
        if not scored.exists():
            byol("eval", "knn", "--checkpoint", str(run), "--train", str(folder / "train"),
                 "--test", str(folder / split), "--baseline", "--out", str(scored), log=log)
        knn = json.loads(scored.read_text())
        row |= {f"knn_{split}": knn["pretrained"]["top1"], f"random_{split}": knn["random_init"]["top1"]}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| folder | seed | changed | steps (epochs) | img/s | loader wait | k-NN val: pretrained / random init | "
             "k-NN test: pretrained / random init (gain) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['folder']} | {r['seed']} | {r['sets'] or '-'} | {r['steps']:,} ({r['epochs']:.1f}) | "
                     f"{r['img_s']:.1f} | {100 * r['loader_wait']:.1f}% | {r['knn_val']:.2f} / {r['random_val']:.2f} | "
                     f"{r['knn_test']:.2f} / {r['random_test']:.2f} ({r['knn_test'] - r['random_test']:+.2f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", action="append", required=True, type=Path,
                        help="a folder holding unlabeled/, train/, val/ and test/")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key for every run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in args.folder:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run_one(folder, seed, args.minutes, args.set, args.out))
            print(json.dumps(rows[-1]), flush=True)
    with (args.out / "results.jsonl").open("a") as results:
        results.writelines(json.dumps(row) + "\n" for row in rows)
    print(table(rows))
    for chosen in dict.fromkeys(r["chosen"] for r in rows):
        print(f"\n{chosen}")


if __name__ == "__main__":
    main()
