"""A fine-tuned classifier in onnxruntime against torch eager: latency at batch 1, throughput at
batch 256, and top-1 of `byol predict` with each model on a labelled test folder.

Both run in fp32 on the CPU with the machine's cores (torch's intra-op threads, onnxruntime's
default), in one process, alternating rounds so that a drift in the machine's speed touches
both alike; the figures are medians over rounds.

    byol pretrain --preset cifar10-cpu --minutes 3 --data $D/train --out runs/onnx/run
    byol finetune --checkpoint runs/onnx/run --train $D/train --test $D/test --labels 10% --epochs 5 \
        --set lr=0.03 --out runs/onnx/classifier
    python benchmarks/onnx_latency.py --classifier runs/onnx/classifier --test $D/test --out runs/onnx
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import byol
from byol.core.files import write_json
from byol.onnx_model import OnnxModel


def seconds(call, images: torch.Tensor) -> float:
    started = time.perf_counter()
    call(images)
    return time.perf_counter() - started


def timed(models: dict, batch: int, size: int, rounds: int) -> dict[str, float]:
    """Median seconds of a forward at `batch`, per model, over alternating rounds after a warm-up."""
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds + 3):
        for name, call in models.items():
            elapsed = seconds(call, images)
            if round_ >= 3:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def predicted_top1(model: Path, test: str, out: Path) -> float:
    done = subprocess.run([sys.executable, "-m", "byol", "predict", "--model", str(model), "--data", test, "--out",
                           str(out)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", type=Path, required=True, help="a byol finetune folder")
    parser.add_argument("--test", required=True, help="labelled folder with the classifier's classes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    onnx_file = args.out / "model.onnx"
    subprocess.run([sys.executable, "-m", "byol", "export", "--checkpoint", str(args.classifier), "--out",
                    str(onnx_file)], check=True, capture_output=True)
    model = byol.load_classifier(args.classifier).model
    exported = OnnxModel(onnx_file)
    size = exported.card["input_size"]

    def eager(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    models = {"torch eager": eager, "onnxruntime": exported}
    latency = timed(models, 1, size, rounds=300)
    throughput = timed(models, 256, size, rounds=10)
    result = dict(cpu=platform.processor() or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(),
                  latency_ms={name: round(1000 * s, 3) for name, s in latency.items()},
                  img_s_at_256={name: round(256 / s, 1) for name, s in throughput.items()},
                  top1={"torch": predicted_top1(args.classifier, args.test, args.out / "torch.csv"),
                        "onnxruntime": predicted_top1(onnx_file, args.test, args.out / "onnx.csv")})
    write_json(args.out / "onnx_latency.json", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
