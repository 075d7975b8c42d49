#!/usr/bin/env bash
# The CUDA paths in one go on one GPU, in under 8 minutes on a current data-centre GPU:
#   1. the test suite with the GPU visible (everything that picks `auto` runs on it);
#   2. the throughput benchmark on the GPU (width 1, batch 128: ours, its switches, the floor,
#      byol-pytorch and lightly) with bf16 autocast;
#   3. one-minute CIFAR-10 runs of the cifar10-resnet18 preset: bf16 autocast, then fp16 (the
#      grad scaler's path), each with its speed, its loss (all finite?), the fp16 steps the
#      scaler skipped, and k-NN top-1 (the random encoder scores about 27-30).
# Then one summary. Multi-GPU paths (NCCL, SyncBatchNorm over processes) need two GPUs and
# are not covered here; docs/distributed.md has their checks.
#
#   bash benchmarks/gpu_check.sh DATA OUT      # DATA: a folder with train/ and test/ ImageFolders
set -euo pipefail
DATA=${1:?usage: bash benchmarks/gpu_check.sh DATA OUT (DATA: a folder with train/ and test/)}
OUT=${2:?usage: bash benchmarks/gpu_check.sh DATA OUT}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
$PY -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" | tee "$OUT/summary.txt"

set +e
timeout 240 $PY -m pytest -q -x -p no:cacheprovider tests > "$OUT/tests.log" 2>&1
echo "tests (exit $?): $(tail -n 1 "$OUT/tests.log")" | tee -a "$OUT/summary.txt"

timeout 120 $PY benchmarks/throughput.py --data "$DATA" --rounds 10 --quality-steps 0 --out "$OUT/throughput" \
    > "$OUT/throughput.md" 2> "$OUT/throughput.log"
echo "throughput (exit $?):" | tee -a "$OUT/summary.txt"
grep -E "^\| (variant|ours \||floor|byol-pytorch|lightly)|autocast dtype" "$OUT/throughput.md" | tee -a "$OUT/summary.txt"

for precision in bf16 fp16; do
    timeout 90 $PY -m byol pretrain --preset cifar10-resnet18 --data "$DATA/train" --test "$DATA/test" \
        --out "$OUT/run-$precision" --precision "$precision" --minutes 1 --set knn_every=0 \
        > "$OUT/run-$precision.json" 2> "$OUT/run-$precision.log"
    status=$?
    $PY - "$OUT/run-$precision" "$status" "$precision" <<'EOF' | tee -a "$OUT/summary.txt"
import json, math, sys
from pathlib import Path
run, status, precision = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if not (run / "summary.json").exists():
    print(f"{precision} run (exit {status}): no summary; see {run}.log")
    sys.exit()
summary = json.loads((run / "summary.json").read_text())
losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
print(f"{precision} run (exit {status}): {summary['steps']} steps at {summary['img_s']} img/s, {loss} (all finite: "
      f"{all(map(math.isfinite, losses))}, skipped steps {summary['skipped_steps']}), k-NN top-1 {summary['knn']['top1']:.2f}")
EOF
done
echo "summary: $OUT/summary.txt"
