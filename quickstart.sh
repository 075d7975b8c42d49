#!/usr/bin/env bash
# Quick start: set up a virtual environment, pretrain with the cifar10-cpu preset, evaluate
# (k-NN and linear, each beside the random-init baseline), write the run report.
#   bash quickstart.sh                 # finds ../shared/datasets/cifar10, else downloads CIFAR-10
#   bash quickstart.sh /path/cifar10   # a folder with train/ and test/ ImageFolder trees
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/byol ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e '.[test]'
fi
data="${1:-../shared/datasets/cifar10}"
if [ -d "$data/train" ] && [ -d "$data/test" ]; then
  train="$data/train" test="$data/test"
else
  echo "no CIFAR-10 folder at $data: using torchvision's CIFAR-10 (downloaded once into ~/.cache/byol)"
  train=cifar10 test=cifar10:test
fi
run="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
.venv/bin/byol pretrain --preset cifar10-cpu --data "$train" --test "$test" --out "$run"
.venv/bin/byol eval knn --checkpoint "$run" --train "$train" --test "$test" --baseline > /dev/null
.venv/bin/byol eval linear --checkpoint "$run" --train "$train" --test "$test" --baseline > /dev/null
.venv/bin/byol report "$run" > /dev/null
echo "run folder: $run (report: $run/report/report.html)"
