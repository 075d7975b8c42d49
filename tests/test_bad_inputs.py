"""Every subcommand, given what a new user might type: exit code 2, one line, no traceback."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

import byol
from byol.cli import main
from byol.config import Config
from byol.core.errors import ByolError


class Code:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Files that are not what the command wants, and a small image folder."""
    root = tmp_path_factory.mktemp("bad")
    made = {"notes": root / "notes.txt", "random": root / "random.pt", "json": root / "data.json",
            "empty": root / "empty.pt", "photo": root / "photo.pt", "code": root / "code.pt",
            "images": root / "images", "missing": root / "missing", "card": root / "enc.safetensors",
            "binary": root / "binary.yaml"}
    made["binary"].write_bytes(bytes(range(256)))
    made["notes"].write_text("some notes, not a checkpoint\n")
    made["random"].write_bytes(torch.Generator().manual_seed(0).seed().to_bytes(8, "little") * 40)
    made["json"].write_text(json.dumps({"step": 3}))
    made["empty"].write_bytes(b"")
    Image.new("RGB", (12, 12)).save(made["photo"], format="JPEG")
    torch.save({"format": "byol-checkpoint-1", "x": Code()}, made["code"])
    made["images"].mkdir()
    for i in range(3):
        Image.new("RGB", (12, 12), (i * 60, 0, 0)).save(made["images"] / f"{i}.png")
    made["card"].write_bytes(b"not safetensors")
    made["card"].with_suffix(".json").write_text("{broken")
    return made


NOT_A_CHECKPOINT = "is not a PyTorch checkpoint (not a torch.save archive)"
NOT_A_SOURCE = "is not a byol run folder or checkpoint, a byol export, a weights file"  # what eval and embed take
CASES = [  # (argv with {name} for the files above and {out} for a fresh path, what the line says)
    ([], "the following arguments are required: command"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["pretrain"], "say where the run goes: --out DIR"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--device", "gpu"], "device 'gpu' is not one byol runs on"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--threads", "-1"], "threads is -1: use 0"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--set", "workers=-2"], "workers is -2"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--set", "lr=[1"], "the value is not valid YAML"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--config", "{missing}"], "does not exist: pass a YAML file"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--config", "{notes}"], "must be a mapping of config keys"),
    (["pretrain", "--data", "{notes}", "--out", "{out}"], "names 1 file and none of them exists"),
    (["pretrain", "--data", "{json}", "--out", "{out}"], "is not a folder: pass a folder of images"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--batch-size", "abc"], "argument --batch-size: invalid int"),
    (["pretrain", "--resume", "{missing}"], "is not a run folder (no config.yaml)"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--width", "inf"], "width is inf: the width multiplier"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--epochs", "inf"], "for a time limit alone, --minutes M"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--seed", "-1"], "seed is -1: use a seed from 0"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--set", "projection_dim=0"], "projection_dim is 0: use 1"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--config", "{binary}"], "is not text: pass a YAML file"),
    (["pretrain", "--data", "{images}", "--out", "{notes}"], "is a file, not a folder"),
    (["pretrain", "--data", "{images}", "--out", "{images}"], "is inside --data"),
    (["report", "{images}", "--out", "{notes}"], "it is not a byol run folder"),
    (["export", "--checkpoint", "{code}", "--out", "{notes}.pt"], "refused to load"),
    (["export", "--checkpoint", "{empty}", "--out", "{json}.pt"], "is empty, not a checkpoint"),
    (["embed", "--checkpoint", "{card}", "--data", "{images}", "--out", "{images}.npy"], "is not a byol encoder card"),
    (["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "nope"], "unknown method 'nope'"),
    (["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "byol", "--seeds", "a"],
     "give whole numbers separated by commas"),
    (["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "byol", "--seeds", "0,1,0"],
     "--seeds names 0 twice: one run would count as two"),
    (["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "byol,simclr,byol"],
     "--methods names byol twice"),
    *[(["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "byol", "--epochs", "1",
        "--sweep", sweep, *extra], says) for sweep, extra, says in (
        ("batch_size=8,16", ["--minutes", "3"], "drop the time budget (--minutes 0) and give --epochs"),
        ("batch_size=8,16", ["--set", "steps=5"], "the runs would see different numbers of images"),
        ("seed=0,1", [], "methods and seeds have --methods and --seeds"),
        ("workers=0,2", [], "sweep a key that changes what is learned"),
        ("batch_size=8", [], "give two or more different values"),
        ("batch_size=8,8", [], "give two or more different values"),
        ("batch_size=8,1", [], "batch_size is 1: BatchNorm needs at least 2"),
        ("batchsize=8,16", [], "did you mean 'batch_size'?"),
        ("batch_size", [], "write it as KEY=V1,V2,..."),
        ("augment=cifar,sepia", [], "augment is 'sepia': choose cifar"))],
    (["eval", "knn", "--checkpoint", "{notes}", "--train", "{images}", "--test", "{images}"], NOT_A_SOURCE),
    (["eval", "knn", "--checkpoint", "{random}", "--train", "{images}", "--test", "{images}"], NOT_A_CHECKPOINT),
    (["eval", "linear", "--checkpoint", "{json}", "--train", "{images}", "--test", "{images}"], NOT_A_SOURCE),
    (["eval", "linear", "--checkpoint", "{photo}", "--train", "{images}", "--test", "{images}"], NOT_A_CHECKPOINT),
    (["eval", "knn", "--checkpoint", "{empty}", "--train", "{images}", "--test", "{images}"], "is empty, not a checkpoint"),
    (["eval", "knn", "--checkpoint", "{code}", "--train", "{images}", "--test", "{images}"],
     ("refused to load", "it holds pickled objects beyond tensors and plain data", "GLOBAL print")),
    (["eval", "knn", "--checkpoint", "{missing}", "--train", "{images}", "--test", "{images}"], "does not exist"),
    (["eval", "knn", "--checkpoint", "{notes}", "--train", "{images}", "--test", "{images}", "--k", "0"],
     "k is 0: use 1 or more neighbours"),
    (["eval", "knn", "--checkpoint", "{notes}", "--train", "{images}", "--test", "{images}", "--temperature", "0"],
     "temperature is 0.0: it must be positive"),
    (["eval", "knn", "--checkpoint", "{notes}", "--train", "{images}", "--test", "{images}", "--device", "gpu"],
     "device 'gpu'"),
    (["eval", "knn", "--checkpoint", "{notes}", "--train", "{images}", "--test", "{images}", "--out", "{notes}/x.json"],
     "part of the path is a file, not a folder"),
    (["inspect", "--checkpoint", "{notes}", "--data", "{images}"], NOT_A_CHECKPOINT),
    (["inspect", "--checkpoint", "{notes}", "--data", "{images}", "--images", "0"], "--images is 0"),
    (["inspect", "--checkpoint", "{notes}", "--data", "{images}", "--device", "cuda:x"], "device 'cuda:x'"),
    (["report", "{missing}"], "does not exist: pass the --out folder"),
    (["export", "--checkpoint", "{empty}", "--out", "{out}.safetensors"], "is empty, not a checkpoint"),
    (["export", "--checkpoint", "{json}", "--out", "{out}.safetensors"], NOT_A_CHECKPOINT),
    (["export", "--checkpoint", "{notes}", "--out", "{out}.txt"], "name the file .safetensors"),
    (["embed", "--checkpoint", "{notes}", "--data", "{images}", "--out", "{out}.npy"],
     NOT_A_SOURCE),
    (["embed", "--checkpoint", "{card}", "--data", "{images}", "--out", "{out}.npy"], "is not a byol encoder card"),
    (["embed", "--checkpoint", "{notes}", "--data", "{images}", "--out", "{out}.npy", "--batch-size", "0"],
     "--batch-size is 0"),
    (["embed", "--checkpoint", "{notes}", "--data", "{images}", "--out", "{out}.npy", "--device", "gpu"], "device 'gpu'"),
    (["presets", "extra"], "invalid choice: 'extra'"),
    (["presets", "show"], "say which preset to show: byol presets show NAME"),
    (["presets", "show", "nope"], "unknown preset 'nope'"),
]


@pytest.mark.parametrize("argv, says", CASES, ids=[" ".join(argv)[:70] for argv, _ in CASES])
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, argv, says):
    argv = [arg.format(out=tmp_path / "out", **files) for arg in argv]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("byol") and ": error: " in err
    assert all(part in err for part in ((says,) if isinstance(says, str) else says)), err
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("name", ["empty", "notes", "code", "card"])
def test_load_encoder_refuses_what_is_not_an_encoder_with_one_line(files, name):
    with pytest.raises(ByolError) as refused:
        byol.load_encoder(files[name])
    assert len(str(refused.value).splitlines()) == 1


EXTREMES = [0, -1, 1, 10**12, 1e300, float("inf"), float("-inf"), float("nan"), "x", "", None, True, [1]]
STEP = ["--width", "0.0625", "--batch-size", "16", "--set", "image_size=16", "--set", "projector_hidden=16",
        "--set", "predictor_hidden=16", "--set", "projection_dim=8", "--set", "log_every=1", "--set", "steps=1",
        "--set", "minutes=0.05", "--set", "collapse_every=1", "--set", "tensorboard=false", "--set", "workers=0"]
# compile=true waits about a minute for the compiler: tests/train/test_training.py runs it
STEP_KEYS = [f.name for f in dataclasses.fields(Config) if f.name != "compile"]
tried = []  # (key, value, exit code) of every run, for a count


def _as_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).split("\n...")[0].strip()


@pytest.mark.parametrize("key", STEP_KEYS)
@settings(max_examples=len(EXTREMES), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=st.sampled_from(EXTREMES))
def test_an_extreme_value_of_any_key_is_refused_in_one_line_or_trains_a_finite_step(
        key, value, small_folders, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("extreme") / "run"
    train, test = map(str, small_folders)
    code = main(["pretrain", "--data", train, "--test", test, "--out", str(out), *STEP,
                 "--set", f"{key}={_as_yaml(value)}"])
    tried.append((key, value, code))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("byol: error: ")]
        assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
        return
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] >= 1
    weights = load_file(str(out / "encoder.safetensors"))
    assert all(torch.isfinite(w.float()).all() for w in weights.values()), (key, value)
    losses = [json.loads(line).get("loss") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(loss) for loss in losses if loss is not None), (key, value)
