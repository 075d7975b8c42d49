#!/usr/bin/env bash
# The paper's two robustness claims at the CPU preset's scale, on a validation split:
# k-NN of BYOL and SimCLR as the batch shrinks (Figure 3a) and as view transformations are
# removed (Figure 3b), every run seeing the same images. Resumable: rerun to continue.
#   bash benchmarks/robustness.sh CIFAR10_FOLDER OUT [EPOCHS]
set -euo pipefail
data=$1 out=$2 epochs=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$here" python -c 'import sys; from pathlib import Path; from splits import validation_split
validation_split(Path(sys.argv[1]) / "train", Path(sys.argv[2]) / "split")' "$data" "$out"
common=(--preset cifar10-cpu --minutes 0 --epochs "$epochs" --methods byol,simclr --seeds 0
        --data "$out/split/train-minus-validation" --test "$out/split/validation")
byol compare "${common[@]}" --out "$out/batch" --sweep batch_size=16,64,256
byol compare "${common[@]}" --out "$out/transforms" --sweep transforms=full,crop-flip,crop-only
