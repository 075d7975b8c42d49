#!/usr/bin/env bash
# The CUDA paths on one GPU, in parts, each a few minutes on a current data-centre GPU:
#   tests       the test suite with the GPU visible (everything that picks `auto` runs on it,
#               and the check that two trial steps predict a larger batch's memory);
#   throughput  the throughput benchmark on the GPU (width 1, batch 128: ours, its switches,
#               the floor, byol-pytorch and lightly) with bf16 autocast;
#   precision   one-minute CIFAR-10 runs of the cifar10-resnet18 preset: bf16 autocast, then
#               fp16 (the grad scaler's path), each with its speed, its loss (all finite?),
#               the fp16 steps the scaler skipped, and k-NN top-1 (random encoder: about 27-30);
#   photos      `byol pretrain` with no preset on photo-sized images (upscaled CIFAR-10,
#               scripts/make_photo_folder.py) for 3 minutes: the recipe it chose for this GPU
#               (its line on stderr), its speed, loader_wait, and k-NN against random init;
#   cifar10     10 minutes of the cifar10-resnet18 preset on CIFAR-10, k-NN at the end
#               (published: SimCLR 83.2% k-NN after 20 minutes on an A100, 100 epochs;
#               BYOL 86.8% after 108 minutes on an A6000, 200 epochs).
# Then one summary. The default parts (tests throughput precision photos) take under 10
# minutes; `cifar10` is a call of its own. Multi-GPU paths (NCCL, SyncBatchNorm over
# processes) need two GPUs and are not covered here; docs/distributed.md has their checks.
#
#   bash benchmarks/gpu_check.sh DATA OUT [PART ...]   # DATA: a folder with train/ and test/ ImageFolders
set -euo pipefail
DATA=${1:?usage: bash benchmarks/gpu_check.sh DATA OUT [PART ...] (DATA: a folder with train/ and test/)}
OUT=${2:?usage: bash benchmarks/gpu_check.sh DATA OUT [PART ...]}
shift 2
PARTS=" ${*:-tests throughput precision photos} "
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
$PY -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" | tee -a "$OUT/summary.txt"

wants() { [[ $PARTS == *" $1 "* ]]; }

run_summary() {  # RUN STATUS NAME: one line of a run's speed, loss, loader wait and k-NN
    $PY - "$@" <<'PYTHON' | tee -a "$OUT/summary.txt"
import json, math, sys
from pathlib import Path
run, status, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if not (run / "summary.json").exists():
    print(f"{name} run (exit {status}): no summary; see {run}.log")
    sys.exit()
summary = json.loads((run / "summary.json").read_text())
losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
knn = f"k-NN top-1 {summary['knn']['top1']:.2f}" if "knn" in summary else "no k-NN"
print(f"{name} run (exit {status}): {summary['steps']} steps ({summary['epochs']} epochs) at {summary['img_s']} img/s, "
      f"loader_wait {summary['loader_wait']}, {loss} (all finite: {all(map(math.isfinite, losses))}, skipped steps "
      f"{summary['skipped_steps']}), {knn}")
PYTHON
}

set +e
if wants tests; then
    timeout 240 $PY -m pytest -q -x -p no:cacheprovider tests > "$OUT/tests.log" 2>&1
    echo "tests (exit $?): $(tail -n 1 "$OUT/tests.log")" | tee -a "$OUT/summary.txt"
fi

if wants throughput; then
    timeout 120 $PY benchmarks/throughput.py --data "$DATA" --rounds 10 --quality-steps 0 --out "$OUT/throughput" \
        > "$OUT/throughput.md" 2> "$OUT/throughput.log"
    echo "throughput (exit $?):" | tee -a "$OUT/summary.txt"
    grep -E "^\| (variant|ours \||floor|byol-pytorch|lightly)|autocast dtype" "$OUT/throughput.md" | tee -a "$OUT/summary.txt"
fi

if wants precision; then
    for precision in bf16 fp16; do
        timeout 90 $PY -m byol pretrain --preset cifar10-resnet18 --data "$DATA/train" --test "$DATA/test" \
            --out "$OUT/run-$precision" --precision "$precision" --minutes 1 --set knn_every=0 \
            > "$OUT/run-$precision.json" 2> "$OUT/run-$precision.log"
        run_summary "$OUT/run-$precision" $? "$precision"
    done
fi

if wants photos; then
    $PY scripts/make_photo_folder.py "$DATA/train" "$OUT/photos/unlabeled" --count 5000 --flat > /dev/null
    $PY scripts/make_photo_folder.py "$DATA/train" "$OUT/photos/train" --count 1000 --skip 500 > /dev/null
    $PY scripts/make_photo_folder.py "$DATA/test" "$OUT/photos/test" --count 1000 > /dev/null
    timeout 300 $PY -m byol pretrain --data "$OUT/photos/unlabeled" --test "$OUT/photos/test" --out "$OUT/run-photos" \
        --minutes 3 > "$OUT/run-photos.json" 2> "$OUT/run-photos.log"
    status=$?
    grep "^no preset:" "$OUT/run-photos.log" | tee -a "$OUT/summary.txt"
    run_summary "$OUT/run-photos" $status "no-preset photos"
    timeout 120 $PY -m byol eval knn --checkpoint "$OUT/run-photos" --train "$OUT/photos/train" \
        --test "$OUT/photos/test" --baseline > /dev/null 2> "$OUT/eval-photos.log"
    echo "photos eval (exit $?): $(grep "^knn top-1" "$OUT/eval-photos.log")" | tee -a "$OUT/summary.txt"
fi

if wants cifar10; then
    timeout 780 $PY -m byol pretrain --preset cifar10-resnet18 --data "$DATA/train" --test "$DATA/test" \
        --out "$OUT/run-cifar10" --minutes 10 --set knn_every=0 > "$OUT/run-cifar10.json" 2> "$OUT/run-cifar10.log"
    run_summary "$OUT/run-cifar10" $? "10-minute cifar10-resnet18"
fi
echo "summary: $OUT/summary.txt"
