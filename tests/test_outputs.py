"""Every command's output place, made hostile: a user's file, a user's folder, a read-only disk,
a full disk. Each ends in exit 2 and one line, leaves no partial file, and every file of the
user's is byte-identical afterwards."""

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from byol.cli import main
from byol.core.files import TEMPORARY_TAG
from tests.test_cli import TINY

TINY_RUN = [*TINY[:-2], "--set", "collapse_every=0", "--set", "tensorboard=false", "--epochs", "1"]


@pytest.fixture(scope="module")
def run(small_folders, tmp_path_factory) -> Path:
    train, test = small_folders
    out = tmp_path_factory.mktemp("outputs") / "run"
    assert main(["pretrain", "--data", str(train), "--test", str(test), "--out", str(out), *TINY_RUN]) == 0
    assert main(argv_for("finetune", out.parent / "classifier", out, small_folders)) == 0  # for predict
    return out


def argv_for(command: str, out: Path, run: Path, small_folders) -> list[str]:
    train, test = map(str, small_folders)
    return {
        "pretrain": ["pretrain", "--data", train, "--test", test, "--out", str(out), *TINY_RUN],
        "compare": ["compare", "--data", train, "--test", test, "--out", str(out), "--methods", "byol", *TINY_RUN],
        "report": ["report", str(run), "--out", str(out), "--no-embedding"],
        "eval": ["eval", "knn", "--checkpoint", str(run), "--train", train, "--test", test, "--out", str(out)],
        "export": ["export", "--checkpoint", str(run), "--out", str(out)],
        "embed": ["embed", "--checkpoint", str(run), "--data", test, "--out", str(out), "--workers", "0"],
        "finetune": ["finetune", "--checkpoint", str(run), "--train", train, "--test", test, "--out", str(out),
                     "--labels", "2", "--epochs", "1", "--set", "lr=0.01", "--set", "workers=0"],
        "predict": ["predict", "--model", str(run.parent / "classifier"), "--data", test, "--out", str(out),
                    "--workers", "0"],
    }[command]


FOLDER_OUTPUTS = ("pretrain", "compare", "report", "finetune")
FILE_OUTPUTS = {"eval": ".json", "export": ".safetensors", "embed": ".npy", "predict": ".csv"}
COMMANDS = [*FOLDER_OUTPUTS, *FILE_OUTPUTS]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv: list[str], capsys) -> str:
    """The command's one-line error (asserting exit code 2, one line, no traceback)."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    lines = [line for line in err if line.startswith("byol: error: ")]
    assert len(lines) == 1 and not any("Traceback" in line for line in err), err
    return lines[0]


def users_folder(root: Path) -> Path:
    """A folder of the user's with every kind of file byol writes or cleans in a run folder."""
    root.mkdir()
    for name, text in {"config.yaml": "my: settings\n", "metrics.jsonl": '{"my": 1}\n', "checkpoint.pt": "mine",
                       "checkpoints/step-00000001.pt": "mine", "checkpoints/model.pt": "mine",
                       ".draft.tmp": "mine", f".notes{TEMPORARY_TAG}abc.tmp": "mine", "summary.json": "{}",
                       "report/report.html": "<title>my report</title>"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("command", COMMANDS)
def test_a_users_folder_full_of_byols_names_is_left_alone(command, run, small_folders, tmp_path, capsys):
    folder = users_folder(tmp_path / "mine")
    before = snapshot(folder)
    if command in FOLDER_OUTPUTS:
        line = refused(argv_for(command, folder, run, small_folders), capsys)
        assert "holds files that byol did not write" in line
    else:
        for name in ("config.yaml", "checkpoint.pt", "summary.json", "checkpoints/model.pt"):
            out = folder / name
            line = refused(argv_for(command, out, run, small_folders), capsys)
            assert "is not a" in line or "name the file" in line
    assert snapshot(folder) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_is_a_file_or_a_folder_of_the_wrong_kind_is_refused(command, run, small_folders, tmp_path,
                                                                           capsys):
    if command in FOLDER_OUTPUTS:
        place = tmp_path / "notes.txt"
        place.write_text("my notes")
        says = "is a file, not a folder"
    else:
        place = tmp_path / f"folder{FILE_OUTPUTS[command]}"
        (place / "inside").mkdir(parents=True)
        (place / "inside" / "mine.txt").write_text("mine")
        says = "is a folder"
    before = snapshot(tmp_path)
    assert says in refused(argv_for(command, place, run, small_folders), capsys)
    assert snapshot(tmp_path) == before


def _mount(place: Path, options: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(place)],
                          capture_output=True).returncode == 0


@pytest.fixture(params=["full", "read-only"])
def bad_disk(request, tmp_path, monkeypatch) -> tuple[Path, str]:
    """A folder on a full or a read-only disk holding one file of the user's: a real tmpfs
    where this machine may mount one, else the same OS errors raised where the write reaches
    the disk (fsync) or creates its file."""
    place = tmp_path / "disk"
    place.mkdir()
    mounted = _mount(place, "size=256k")
    if mounted:
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(place)]))
    mine = place / "mine.bin"
    if request.param == "full":
        if mounted:
            with mine.open("wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"x" * 4096)
                except OSError:  # full
                    pass
        else:
            mine.write_bytes(b"x" * 4096)
            monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
        return place, "no space left on device"
    mine.write_bytes(b"x" * 4096)
    if mounted and subprocess.run(["mount", "-o", "remount,ro", str(place)]).returncode == 0:
        return place, "read-only file system"
    import tempfile

    monkeypatch.setattr(tempfile, "mkstemp", _raise(errno.EACCES))
    return place, "permission denied"


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_partial_file(command, bad_disk, run, small_folders,
                                                                         capsys):
    place, cause = bad_disk
    before = snapshot(place)
    out = place / ("out" if command in FOLDER_OUTPUTS else f"out{FILE_OUTPUTS[command]}")
    line = refused(argv_for(command, out, run, small_folders), capsys)
    assert str(place) in line and cause in line, line
    assert snapshot(place) == before  # no partial file, no temporary, the user's file untouched


def test_eval_prints_its_result_before_a_write_that_fails(run, small_folders, tmp_path, monkeypatch, capsys):
    out = tmp_path / "knn.json"
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    assert main(argv_for("eval", out, run, small_folders)) == 2
    printed = capsys.readouterr()
    assert json.loads(printed.out.strip().splitlines()[-1])["pretrained"]["top1"] >= 0
    assert "no space left on device" in printed.err and not out.exists()
    assert not list(tmp_path.glob(f"*{TEMPORARY_TAG}*"))


def test_export_never_replaces_the_checkpoint_it_reads(run, small_folders, capsys):
    before = (run / "checkpoint.pt").read_bytes()
    line = refused(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(run / "checkpoint.pt")], capsys)
    assert "is inside a byol run folder, whose files are the run's own" in line
    assert (run / "checkpoint.pt").read_bytes() == before
    outside = run.parent / "checkpoint.pt"
    outside.write_bytes(before)  # a copy the user made: not an export either
    line = refused(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(outside)], capsys)
    assert "exists and is not a encoder export byol wrote" in line
    assert outside.read_bytes() == before
    train, test = map(str, small_folders)
    assert main(["eval", "knn", "--checkpoint", str(run), "--train", train, "--test", test]) == 0


def test_an_export_is_replaced_by_the_next_one(run, tmp_path):
    out = tmp_path / "encoder.safetensors"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["format"] == "byol-encoder-1"


def test_a_run_folder_inside_the_data_is_refused(small_folders, capsys):
    train, test = small_folders
    before = snapshot(train)
    line = refused(["pretrain", "--data", str(train), "--out", str(train / "run"), *TINY_RUN], capsys)
    assert "is inside --data" in line
    assert snapshot(train) == before and not (train / "run").exists()


def test_a_run_cleans_only_the_temporaries_and_checkpoints_it_wrote(small_folders, tmp_path):
    train, test = small_folders
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(train), "--out", str(out), *TINY_RUN, "--set", "steps=3",
                 "--set", "keep_checkpoints=1", "--set", "checkpoint_every=1"]) == 0
    theirs = {"checkpoints/model.pt": b"mine", ".draft.tmp": b"mine", "checkpoints/.x.tmp": b"mine"}
    for name, content in theirs.items():
        (out / name).write_bytes(content)
    ours = out / f".checkpoint.pt{TEMPORARY_TAG}killed.tmp"
    ours.write_bytes(b"half a checkpoint")
    (out / "summary.json").unlink()  # as if killed after its last checkpoint: resume ends it
    assert main(["pretrain", "--resume", str(out)]) == 0
    assert all((out / name).read_bytes() == content for name, content in theirs.items())
    assert not ours.exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*.pt")) == ["step-00000003.pt"]


def test_a_run_whose_test_images_do_not_decode_ends_finished_with_the_reason(small_folders, tmp_path, capsys):
    test = tmp_path / "broken"
    for name in ("checks", "disc", "horizontal", "vertical"):
        (test / name).mkdir(parents=True)
        (test / name / "0.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(small_folders[0]), "--test", str(test), "--out", str(out), *TINY_RUN,
            "--set", "steps=2", "--set", "image_size=96", "--set", "workers=0"]  # 96 px: the test images stream
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and "none of the 4 image files" in summary["knn_error"]
    assert (out / "encoder.safetensors").exists() and not (out / "knn.json").exists()
    assert "holds a finished run" in refused(["pretrain", "--resume", str(out)], capsys)


def test_files_byol_writes_take_the_users_umask_not_0600(tmp_path):
    import stat

    from byol.core.files import save_torch, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "shared.txt", "x")
        save_torch({"a": 1}, tmp_path / "shared.pt")
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("shared.txt", "shared.pt", "private.txt")}
    assert modes == {"shared.txt": 0o644, "shared.pt": 0o644, "private.txt": 0o600}
