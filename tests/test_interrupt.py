"""Ctrl-C at a moment of each command, sent as a terminal sends it (SIGINT to the whole process
group, loader workers and decoders included): within seconds, one line, exit 130, no
traceback, and the last good state kept."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import byol
from byol.classifier import save_classifier
from byol.config import resolve
from byol.eval.finetune import with_head
from byol.eval.cards import CARD_FORMAT
from byol.export import write_weights_and_card
from byol.train.trainer import open_run

CARD = dict(format=CARD_FORMAT, architecture="resnet18", width=0.125, cifar_stem=False, input_size=72,
            feature_dim=64, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], method="byol")
TINY_STREAMED = ["--width", "0.125", "--batch-size", "8", "--set", "image_size=72", "--set", "cifar_stem=false",
                 "--set", "decode_once=false", "--set", "workers=2", "--set", "tensorboard=false",
                 "--set", "projector_hidden=64", "--set", "predictor_hidden=64", "--set", "projection_dim=32"]
MOMENTS = random.Random(0)  # the moments are drawn once, in order: the same every run


@pytest.fixture(scope="module")
def many(large_folder, tmp_path_factory) -> Path:
    """An ImageFolder of 12,000 links to the 96-px images: streamed, and minutes of work for any command."""
    root = tmp_path_factory.mktemp("interrupt") / "many"
    for kind in sorted(large_folder.iterdir()):
        (root / kind.name).mkdir(parents=True)
        images = sorted(kind.iterdir())
        for i in range(3000):
            (root / kind.name / f"{i:05d}.jpg").symlink_to(images[i % len(images)])
    return root


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("interrupt") / "classifier"
    out.mkdir()
    (out / ".byol").write_text("classifier\n")
    torch.manual_seed(0)
    save_classifier(with_head(byol.build_encoder("resnet18", 0.125, False), 4), CARD,
                    ["checks", "disc", "horizontal", "vertical"], out, "checks/000.jpg\n", {})
    return out


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def interrupted(argv: list[str], after: float) -> tuple[int, str, float]:
    """Run `byol ARGV`, send SIGINT to its process group `after` seconds in; (exit code, stderr,
    seconds from the signal to the end)."""
    process = subprocess.Popen([sys.executable, "-m", "byol", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(after)
    assert process.poll() is None, f"byol {argv[0]} ended before the signal: {process.stderr.read()[-300:]}"
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        err = process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"byol {argv[0]} still ran 60 s after Ctrl-C")
    return process.returncode, err, time.monotonic() - sent


def _one_line_and_130(code: int, err: str, seconds: float) -> str:
    last = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err, err[-800:]
    assert last.startswith("byol: ") and seconds < 20, (last, seconds)
    return last


@pytest.mark.parametrize("moment", [MOMENTS.uniform(1, 3), MOMENTS.uniform(6, 12)])
def test_pretrain_stops_in_one_line_and_its_checkpoint_resumes(many, tmp_path, moment):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(many), "--out", str(out), *TINY_STREAMED, "--set", "steps=100000"]
    last = _one_line_and_130(*interrupted(argv, moment))
    if "stopped by SIGINT at step" in last:  # in training: the checkpoint of that step continues the run
        step = int(last.split("at step ")[1].split(";")[0])
        assert open_run(resolve(config_file=str(out / "config.yaml")), out, resume=True).progress.step == step


@pytest.mark.parametrize("command", ["finetune", "predict", "embed", "eval"])
def test_every_command_stops_in_one_line_and_leaves_its_output_as_it_was(command, many, large_folder, classifier,
                                                                       tmp_path):
    encoder = tmp_path / "encoder.pt"
    write_weights_and_card(byol.build_encoder("resnet18", 0.125, False), CARD, encoder)
    if command == "eval":
        run = tmp_path / "run"
        done = subprocess.run([sys.executable, "-m", "byol", "pretrain", "--data", str(large_folder), "--out",
                               str(run), *TINY_STREAMED, "--set", "steps=1"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-400:]
    before = _contents(classifier)
    argv = {
        "finetune": ["finetune", "--checkpoint", str(encoder), "--train", str(many), "--test", str(large_folder),
                     "--out", str(classifier), "--epochs", "1000", "--set", "lr=0.01", "--set", "workers=2"],
        "predict": ["predict", "--model", str(classifier), "--data", str(many), "--out", str(tmp_path / "p.csv"),
                    "--batch-size", "8"],
        "embed": ["embed", "--checkpoint", str(encoder), "--data", str(many), "--out", str(tmp_path / "e.npy"),
                  "--batch-size", "8"],
        "eval": ["eval", "knn", "--checkpoint", str(tmp_path / "run"), "--train", str(many), "--test",
                 str(large_folder), "--out", str(tmp_path / "knn.json")],
    }[command]
    _one_line_and_130(*interrupted(argv, MOMENTS.uniform(3, 8)))
    assert _contents(classifier) == before
    assert not any((tmp_path / name).exists() for name in ("p.csv", "e.npy", "knn.json"))
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_ctrl_c_while_loader_workers_start_is_still_one_line(classifier, many, tmp_path):
    """Ctrl-C that lands while a DataLoader starts its workers leaves a half-built iterator whose
    __del__ fails (pytorch/pytorch#64895); the command still ends in one line."""
    script = ("import multiprocessing.process as p, sys\n"
              "start, started = p.BaseProcess.start, []\n"
              "def second_interrupted(self):\n"  # Ctrl-C after the first worker is up, before the second
              "    if started: raise KeyboardInterrupt\n"
              "    started.append(self); start(self)\n"
              "p.BaseProcess.start = second_interrupted\n"
              "from byol.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "predict", "--model", str(classifier), "--data", str(many),
                           "--out", str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr.strip().splitlines()[-1] == "byol: interrupted", done.stderr[-600:]
    assert "Traceback" not in done.stderr and not (tmp_path / "p.csv").exists()
