"""Every subcommand, given what a new user might type: exit code 2, one line, no traceback."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import byol
from byol.cli import main
from byol.errors import ByolError


class Code:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Files that are not what the command wants, and a small image folder."""
    root = tmp_path_factory.mktemp("bad")
    made = {"notes": root / "notes.txt", "random": root / "random.pt", "json": root / "data.json",
            "empty": root / "empty.pt", "photo": root / "photo.pt", "code": root / "code.pt",
            "images": root / "images", "missing": root / "missing", "card": root / "enc.safetensors"}
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
    (["pretrain", "--data", "{notes}", "--out", "{out}"], "is not a folder: pass a folder of images"),
    (["pretrain", "--data", "{images}", "--out", "{out}", "--batch-size", "abc"], "argument --batch-size: invalid int"),
    (["pretrain", "--resume", "{missing}"], "is not a run folder (no config.yaml)"),
    (["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "nope"], "unknown method 'nope'"),
    (["compare", "--data", "{images}", "--test", "{images}", "--out", "{out}", "--methods", "byol", "--seeds", "a"],
     "give whole numbers separated by commas"),
    (["eval", "knn", "--checkpoint", "{notes}", "--train", "{images}", "--test", "{images}"], NOT_A_CHECKPOINT),
    (["eval", "knn", "--checkpoint", "{random}", "--train", "{images}", "--test", "{images}"], NOT_A_CHECKPOINT),
    (["eval", "linear", "--checkpoint", "{json}", "--train", "{images}", "--test", "{images}"], NOT_A_CHECKPOINT),
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
     "is neither a run folder nor an exported encoder"),
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
