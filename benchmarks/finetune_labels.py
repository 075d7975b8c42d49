"""Fine-tuning with few labels: the pretrained encoder against random init and the linear
probe, at several label shares, over several seeds of the label subset.

Every cell is `byol finetune --baseline` (the command users run), into its own folder; a
cell whose finetune.json exists is read, not run again, so an interrupted script continues
where it stopped. Prints the Markdown table (mean and spread over the seeds, and the time
each fine-tuning took) and writes it with the raw numbers to --out.

    python benchmarks/finetune_labels.py --checkpoint RUN --train D/train --test D/test \\
        --out runs/finetune --labels 1%,10% --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ENCODERS = ("pretrained", "random_init", "linear")


def cell(args: argparse.Namespace, labels: str, seed: int) -> dict:
    out = args.out / f"labels-{labels.replace('%', 'pc')}-seed{seed}"
    if not (out / "finetune.json").exists():
        command = [sys.executable, "-m", "byol", "finetune", "--checkpoint", str(args.checkpoint), "--train",
                   str(args.train), "--test", str(args.test), "--out", str(out), "--labels", labels, "--seed",
                   str(seed), "--baseline"]
        for setting in args.set:
            command += ["--set", setting]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "finetune.json").read_text())


def summary(results: list[dict], encoder: str, key: str) -> str:
    values = [r[encoder][key] for r in results]
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{spread}" if key == "top1" else f"{statistics.mean(values):.0f}"


def table(rows: dict[str, list[dict]]) -> str:
    lines = ["| labels | images | fine-tuned: pretrained | fine-tuned: random init | gain | linear probe (frozen) "
             "| seconds: pretrained / random / linear |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for labels, results in rows.items():
        gain = statistics.mean(r["pretrained"]["top1"] - r["random_init"]["top1"] for r in results)
        seconds = " / ".join(summary(results, e, "seconds") for e in ENCODERS)
        lines.append(f"| {labels} | {results[0]['labels']} | {summary(results, 'pretrained', 'top1')} | "
                     f"{summary(results, 'random_init', 'top1')} | {gain:+.2f} | {summary(results, 'linear', 'top1')} "
                     f"| {seconds} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--labels", default="1%,10%")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    rows = {labels: [cell(args, labels, int(seed)) for seed in args.seeds.split(",")]
            for labels in args.labels.split(",")}
    text = table(rows)
    print(text, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
