"""The cifar10-cpu preset's promise, checked for real (about 15 minutes on 2 cores):
pytest -m slow tests/test_preset_slow.py"""

import json
import time
from pathlib import Path

import pytest

from byol.cli import main

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"  # this slow check alone reads it


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    if not (CIFAR / "train").is_dir():
        pytest.skip(f"bundled CIFAR-10 not found at {CIFAR}")
    return CIFAR


@pytest.mark.slow
def test_cifar10_cpu_preset_beats_random_init_by_ten_points_within_fifteen_minutes(cifar_root, tmp_path):
    train, test, run = str(cifar_root / "train"), str(cifar_root / "test"), tmp_path / "run"
    start = time.perf_counter()
    assert main(["pretrain", "--preset", "cifar10-cpu", "--data", train, "--test", test, "--out", str(run)]) == 0
    minutes = (time.perf_counter() - start) / 60
    assert main(["eval", "knn", "--checkpoint", str(run), "--train", train, "--test", test, "--baseline"]) == 0
    result = json.loads((run / "eval_knn.json").read_text())
    trained, random = result["pretrained"]["top1"], result["random_init"]["top1"]
    print(f"pretrained {trained:.2f} vs random init {random:.2f} in {minutes:.1f} min")
    assert trained >= random + 10
    assert minutes <= 15
