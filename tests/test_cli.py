"""The command line end to end on a small CIFAR-10 subset, and its one-line errors."""

import json
import subprocess
import sys

import pytest
import yaml

from byol.cli import main

TINY = ["--epochs", "2", "--batch-size", "32", "--width", "0.0625", "--optimizer", "adamw", "--lr", "0.002",
        "--set", "projector_hidden=64", "--set", "predictor_hidden=64", "--set", "projection_dim=16",
        "--set", "log_every=2", "--set", "knn_every=1", "--set", "warmup_epochs=0.5"]


@pytest.fixture(scope="module")
def run(small_cifar, tmp_path_factory):
    train, test = small_cifar
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["pretrain", "--data", str(train), "--test", str(test), "--out", str(out), *TINY]) == 0
    return out


def test_pretrain_writes_a_complete_run_folder(run):
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "checkpoint.pt", "encoder.safetensors", "knn.json", "summary.json"} <= names
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12, 14, 16]  # 256 images / 32 = 8 steps an epoch
    assert all({"step", "epoch", "loss", "lr", "tau", "img_s"} <= r.keys() for r in steps)
    assert [r["epoch"] for r in records if "knn_top1" in r] == [1, 2.0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["width"] == 0.0625 and config["batch_size"] == 32 and config["data"].endswith("train")


def test_eval_knn_writes_top1_and_top5_json_and_random_init_differs(run, small_cifar, capsys):
    train, test = small_cifar
    assert main(["eval", "knn", "--checkpoint", str(run), "--train", str(train), "--test", str(test)]) == 0
    trained = json.loads((run / "knn_eval.json").read_text())
    assert 0 <= trained["top1"] <= trained["top5"] <= 100
    assert trained == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the same numbers the run itself logged at its end
    assert trained["top1"] == pytest.approx(json.loads((run / "knn.json").read_text())["top1"])
    assert main(["eval", "knn", "--checkpoint", str(run / "checkpoint.pt"), "--train", str(train),
                 "--test", str(test), "--random-init", "--k", "10"]) == 0
    random = json.loads((run / "knn_random_init.json").read_text())
    assert random["random_init"] is True and random["k"] == 10 and 0 <= random["top1"] <= random["top5"]


def test_saved_config_reproduces_the_run(run, tmp_path):
    again = tmp_path / "again"
    assert main(["pretrain", "--config", str(run / "config.yaml"), "--out", str(again)]) == 0
    losses = lambda r: [json.loads(x).get("loss") for x in (r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(again) == losses(run)


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("byol: error: ")
    return err


@pytest.mark.parametrize("extra, message", [
    (["--set", "lrr=0.1"], "unknown config key 'lrr' in the command line: did you mean 'lr'?"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--batch-size", "1"], "BatchNorm needs at least 2"),
    (["--lr", "-0.1"], "the learning rate must be positive"),
    (["--tau-base", "1.5"], "it must lie in [0, 1]"),
    (["--set", "epochs=ten"], "config key 'epochs' must be int, got 'ten'"),
    (["--optimizer", "adam"], "unknown optimizer 'adam'"),
])
def test_bad_settings_get_one_line_errors(capsys, small_cifar, tmp_path, extra, message):
    err = error_of(capsys, ["pretrain", "--data", str(small_cifar[0]), "--out", str(tmp_path / "r"), *TINY, *extra])
    assert message in err


def test_bad_data_folders_get_one_line_errors(capsys, tmp_path):
    assert "does not exist" in error_of(capsys, ["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    (tmp_path / "empty").mkdir()
    assert "no image files" in error_of(capsys, ["pretrain", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    assert "could be decoded" in error_of(capsys, ["pretrain", "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "r")])


def test_too_few_images_for_one_step_is_a_one_line_error(capsys, small_cifar, tmp_path):
    err = error_of(capsys, ["pretrain", "--data", str(small_cifar[0]), "--out", str(tmp_path / "r"), *TINY,
                            "--batch-size", "300"])
    assert f"{small_cifar[0]} has 256 usable images, too few for one step of 300: lower --batch-size" in err


def test_eval_errors(capsys, run, small_cifar, tmp_path):
    train, test = small_cifar
    assert "does not exist" in error_of(capsys, ["eval", "knn", "--checkpoint", str(tmp_path / "x.pt"),
                                                 "--train", str(train), "--test", str(test)])
    other = tmp_path / "other"
    (other / "zebra").mkdir(parents=True)
    for src in sorted((test / sorted(p.name for p in test.iterdir())[0]).iterdir())[:3]:
        (other / "zebra" / src.name).write_bytes(src.read_bytes())
    assert "differ from the training classes" in error_of(
        capsys, ["eval", "knn", "--checkpoint", str(run), "--train", str(train), "--test", str(other)])
    assert "already holds a run" in error_of(capsys, ["pretrain", "--data", str(train), "--out", str(run)])


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "byol", "pretrain", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"byol: error: data folder {tmp_path / 'none'} does not exist: pass an existing folder of images"
