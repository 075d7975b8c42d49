"""A classifier folder is byol's as a run folder is: written as a whole once trained, locked
while fine-tuning, and never replaced by a file of another kind (an encoder's export)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import byol
from byol import classifier as clf
from byol.cli import main
from byol.core import files
from byol.core.errors import ByolError
from byol.eval.finetune import FinetuneSettings
from byol.eval.cards import CARD_FORMAT
from byol.export import write_weights_and_card

CARD = dict(format=CARD_FORMAT, architecture="resnet18", width=0.125, cifar_stem=True, input_size=32,
            feature_dim=64, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], method="byol")
QUICK = FinetuneSettings(epochs=1, batch_size=32, lr=0.05, precision="fp32", workers=0)


@pytest.fixture
def encoder_file(tmp_path) -> Path:
    torch.manual_seed(0)
    write_weights_and_card(byol.build_encoder("resnet18", 0.125, True), CARD, tmp_path / "encoder.pt")
    return tmp_path / "encoder.pt"


@pytest.fixture
def classifier(tmp_path, encoder_file, small_folders) -> Path:
    out = tmp_path / "classifier"
    clf.finetune_folder(encoder_file, str(small_folders[0]), str(small_folders[1]), out, "2", QUICK,
                        torch.device("cpu"), seed=0, baseline=False)
    return out


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("into", ["model.safetensors", "other.safetensors", "model.pt"])
def test_an_export_into_a_classifier_folder_is_refused_and_changes_nothing(classifier, encoder_file, capsys, into):
    before = _contents(classifier)
    assert main(["export", "--checkpoint", str(encoder_file), "--out", str(classifier / into)]) == 2
    assert "is inside a byol classifier folder" in capsys.readouterr().err
    assert _contents(classifier) == before


def test_an_export_replaces_only_an_export_of_its_own_kind(classifier, encoder_file, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(classifier), "--out", str(tmp_path / "clf.pt")]) == 0
    before = (tmp_path / "clf.pt").read_bytes()
    assert main(["export", "--checkpoint", str(encoder_file), "--out", str(tmp_path / "clf.pt")]) == 2
    assert "exists and is not a encoder export byol wrote" in capsys.readouterr().err
    assert (tmp_path / "clf.pt").read_bytes() == before
    assert main(["export", "--checkpoint", str(classifier), "--out", str(tmp_path / "clf.pt")]) == 0


def test_ctrl_c_while_fine_tuning_leaves_the_last_classifier_whole(classifier, encoder_file, small_folders,
                                                                   monkeypatch):
    before = _contents(classifier)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clf, "finetune", interrupted)
    with pytest.raises(KeyboardInterrupt):  # other labels: a new labels.txt would differ
        clf.finetune_folder(encoder_file, str(small_folders[0]), str(small_folders[1]), classifier, "4", QUICK,
                            torch.device("cpu"), seed=1, baseline=False)
    assert _contents(classifier) == before
    assert byol.load_classifier(classifier).classes == ["checks", "disc", "horizontal", "vertical"]


def test_a_crash_while_renaming_is_finished_by_the_next_reader(tmp_path, monkeypatch):
    folder = tmp_path / "pair"
    files.write_together(folder, {"a.txt": lambda t: t.write_text("old a"), "b.txt": lambda t: t.write_text("old b")})
    real_replace, renames = os.replace, []

    def crash_after_the_journal_and_one_file(source, target):
        if len(renames) == 2:
            raise KeyboardInterrupt  # as a crash between two renames
        renames.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", crash_after_the_journal_and_one_file)
    with pytest.raises(KeyboardInterrupt):
        files.write_together(folder, {"a.txt": lambda t: t.write_text("new a"),
                                      "b.txt": lambda t: t.write_text("new b")})
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert renames == [files.JOURNAL, "a.txt"]
    assert {(folder / n).read_text() for n in ("a.txt", "b.txt")} == {"new a", "old b"}  # the mix a crash leaves
    files.finish_writing(folder)
    assert [(folder / n).read_text() for n in ("a.txt", "b.txt")] == ["new a", "new b"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]


def test_a_write_that_fails_before_its_journal_leaves_the_old_files_and_no_temporary(tmp_path):
    folder = tmp_path / "pair"
    files.write_together(folder, {"a.txt": lambda t: t.write_text("old a"), "b.txt": lambda t: t.write_text("old b")})

    def fails(temporary):
        raise OSError(28, "No space left on device")

    with pytest.raises(ByolError, match="no space left on device"):
        files.write_together(folder, {"a.txt": lambda t: t.write_text("new a"), "b.txt": fails})
    assert [(folder / n).read_text() for n in ("a.txt", "b.txt")] == ["old a", "old b"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]


def test_a_second_finetune_on_the_same_folder_is_refused_while_the_first_runs(classifier, encoder_file,
                                                                              small_folders):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from byol.core.locks import acquire; acquire(Path(sys.argv[1]), 'byol finetune'); "
                               "print('held', flush=True); time.sleep(60)", str(classifier)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _contents(classifier)
        with pytest.raises(ByolError, match=f"is in use by another byol finetune \\(process {holder.pid}\\)"):
            clf.finetune_folder(encoder_file, str(small_folders[0]), str(small_folders[1]), classifier, "2", QUICK,
                                torch.device("cpu"), seed=0, baseline=False)
        assert _contents(classifier) == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    clf.finetune_folder(encoder_file, str(small_folders[0]), str(small_folders[1]), classifier, "2", QUICK,
                        torch.device("cpu"), seed=0, baseline=False)  # the lock died with its process


def test_a_journal_left_by_a_crash_is_finished_before_the_next_write_replaces_it(tmp_path, monkeypatch):
    folder = tmp_path / "pair"
    real_replace = os.replace
    calls = []

    def crash_after_the_journal(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", crash_after_the_journal)
    with pytest.raises(KeyboardInterrupt):
        files.write_together(folder, {"a.txt": lambda t: t.write_text("a"), "b.txt": lambda t: t.write_text("b")})
    monkeypatch.setattr(files.os, "replace", real_replace)
    files.write_together(folder, {"c.txt": lambda t: t.write_text("c")})
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt", "c.txt"]
