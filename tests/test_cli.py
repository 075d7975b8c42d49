"""The command line end to end on a small CIFAR-10 subset, and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from byol.cli import main
from byol.eval.checkpoints import load_run_encoder
from tests.conftest import resolved_from_command_line

TINY = ["--epochs", "2", "--batch-size", "32", "--width", "0.0625", "--optimizer", "adamw", "--lr", "0.002",
        "--set", "projector_hidden=64", "--set", "predictor_hidden=64", "--set", "projection_dim=16",
        "--set", "log_every=2", "--set", "knn_every=1", "--set", "warmup_epochs=0.5", "--set", "collapse_every=4"]


@pytest.fixture(scope="module")
def run(small_folders, tmp_path_factory):
    train, test = small_folders
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


def test_eval_knn_scores_the_encoder_and_its_random_init_baseline(run, small_folders, capsys):
    train, test = small_folders
    assert main(["eval", "knn", "--checkpoint", str(run), "--train", str(train), "--test", str(test)]) == 0
    result = json.loads((run / "eval_knn.json").read_text())
    assert result == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["pretrained"]["top1"] <= result["pretrained"]["top5"] <= 100 and "random_init" not in result
    # the same numbers the run itself logged at its end
    assert result["pretrained"]["top1"] == pytest.approx(json.loads((run / "knn.json").read_text())["top1"])
    assert main(["eval", "knn", "--checkpoint", str(run / "checkpoint.pt"), "--train", str(train),
                 "--test", str(test), "--baseline", "--k", "10", "--out", str(run / "knn10.json")]) == 0
    both = json.loads((run / "knn10.json").read_text())
    assert both["k"] == 10 and (both["train_images"], both["test_images"], both["classes"]) == (256, 64, 4)
    assert both["gain_top1"] == pytest.approx(both["pretrained"]["top1"] - both["random_init"]["top1"])
    # two different encoders (their scores on 64 images may tie): the run's and the one it started from
    trained, random_init = (load_run_encoder(run, random_init=flag)[0].state_dict() for flag in (False, True))
    assert not all(torch.equal(trained[k], random_init[k]) for k in trained)


def test_the_probe_takes_the_best_validation_penalty_and_the_stronger_on_a_tie():
    from byol.eval.linear import best_penalty

    assert best_penalty({1e-6: 40.0, 1e-4: 55.0, 1e-2: 50.0}) == 1e-4
    assert best_penalty({1e-6: 60.0, 1e-4: 60.0, 1e-2: 20.0}) == 1e-4
    assert best_penalty({1e-6: 10.0, 1e-4: 10.0, 1e-2: 10.0}) == 1e-2


def test_eval_linear_chooses_the_penalty_on_validation_never_on_the_test_split(run, small_folders, tmp_path):
    """The same images with their test labels moved one class on: the test scores change, the
    penalty and its validation scores do not."""
    import shutil

    train, test = small_folders
    classes = sorted(p.name for p in test.iterdir())
    for i, name in enumerate(classes):
        shutil.copytree(test / name, tmp_path / "moved" / classes[(i + 1) % len(classes)])
    results = []
    for labels, out in ((test, tmp_path / "a.json"), (tmp_path / "moved", tmp_path / "b.json")):
        assert main(["eval", "linear", "--checkpoint", str(run), "--train", str(train), "--test", str(labels),
                     "--out", str(out)]) == 0
        results.append(json.loads(out.read_text())["pretrained"])
    right, moved = results
    assert (right["weight_decay"], right["val_top1"]) == (moved["weight_decay"], moved["val_top1"])
    assert right["top1"] != moved["top1"]


def test_transfer_to_grayscale_images_of_another_size(run, small_folders, tmp_path):
    from PIL import Image

    for split, count in (("train", 12), ("test", 4)):
        for label, class_dir in enumerate(sorted(small_folders[1].iterdir())[:2]):
            (tmp_path / split / f"kind{label}").mkdir(parents=True)
            for i, src in enumerate(sorted(class_dir.iterdir())[:count]):
                Image.open(src).convert("L").resize((20, 24)).save(tmp_path / split / f"kind{label}" / f"{i}.png")
    assert main(["eval", "linear", "--checkpoint", str(run), "--train", str(tmp_path / "train"),
                 "--test", str(tmp_path / "test"), "--out", str(tmp_path / "transfer.json"), "--baseline"]) == 0
    result = json.loads((tmp_path / "transfer.json").read_text())
    assert (result["classes"], result["train_images"], result["test_images"]) == (2, 24, 8)
    # checkerboards against discs, resized grey: any working conversion keeps them apart (8 of 8
    # here), while a broken one (channels, scaling, sizes) leaves a linear probe near chance
    assert result["pretrained"]["top1"] >= 87.5 and result["random_init"]["top1"] >= 87.5


def test_inspect_reports_the_statistics_and_flags_a_collapsed_checkpoint(run, small_folders, tmp_path, capsys):
    from byol.core.files import safe_load, save_torch

    assert main(["inspect", "--checkpoint", str(run), "--data", str(small_folders[0]), "--images", "128"]) == 0
    out, err = capsys.readouterr()
    healthy = json.loads(out)
    assert healthy["images"] == 128 and healthy["projection_dim"] == 16 and healthy["alarms"] == []
    assert {"proj_std", "proj_rank", "feature_rank", "alignment", "uniformity"} <= healthy.keys()
    assert err.strip() == "no sign of collapse"
    assert main(["inspect", "--checkpoint", str(run), "--data", str(small_folders[0]), "--random-init"]) == 0
    start = json.loads(capsys.readouterr().out)
    assert start["random_init"] is True and start["proj_std"] != healthy["proj_std"]
    # the logged probe at the last step saw the same network on the same kind of views
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "proj_std" in x][-1]
    assert healthy["proj_std"] == pytest.approx(logged["proj_std"], rel=0.5)

    state = safe_load(run / "checkpoint.pt")  # every projection the same vector
    state["learner"]["online.projector.3.weight"].zero_()
    save_torch(state, tmp_path / "collapsed.pt")
    assert main(["inspect", "--checkpoint", str(tmp_path / "collapsed.pt"), "--data", str(small_folders[0])]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["proj_rank"] < 1.01 and err.startswith("COLLAPSED: proj_std is 0")


def test_report_writes_figures_and_pages_for_one_run_and_overlays_several(run, tmp_path):
    assert main(["report", str(run)]) == 0
    names = {p.name for p in (run / "report").iterdir()}
    assert names == {".byol", ".lock", "training.png", "knn.png", "collapse.png", "embedding.png", "report.md",
                     "report.html"}
    markdown = (run / "report" / "report.md").read_text()
    assert f"| {run.name} |" in markdown and "![embedding](embedding.png)" in markdown
    page = (run / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<details><summary>config of" in page

    assert main(["report", str(run), str(run), "--out", str(tmp_path / "both"), "--no-embedding"]) == 0
    assert not (tmp_path / "both" / "embedding.png").exists()
    # folder names repeat, so the runs are labelled parent/name
    assert (tmp_path / "both" / "report.md").read_text().count(f"| {run.parent.name}/{run.name} |") == 2


def test_a_collapsing_run_is_stopped_with_exit_code_3_keeping_the_last_checkpoint(small_folders, tmp_path, capsys):
    from byol.core.files import safe_load

    out = tmp_path / "r"  # a learning rate far too high for AdamW: measured, rank 2.4 at step 2, std 0.01/sqrt(d) at 4
    argv = ["pretrain", "--data", str(small_folders[0]), "--out", str(out), *TINY, "--lr", "1.0",
            "--set", "collapse_every=2", "--set", "checkpoint_every=2", "--set", "collapse_stop=true"]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().split("\n")[-1]  # after the progress bar's line
    assert err.startswith("byol: error: stopped: collapse at step 4: proj_std is")
    assert err.endswith(f"the last checkpoint in {out} is kept")
    assert safe_load(out / "checkpoint.pt")["step"] == 2
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "proj_std" in x]
    assert [r["step"] for r in logged] == [2, 4] and logged[-1]["proj_std"] < 0.05 / 4


def test_compare_trains_each_method_scores_it_and_resumes_without_retraining(small_folders, tmp_path, capsys):
    train, test = small_folders
    argv = ["compare", "--data", str(train), "--test", str(test), "--out", str(tmp_path / "c"),
            "--methods", "byol,simclr", "--seeds", "0,1", *TINY, "--epochs", "1"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert list(result["results"]) == ["byol", "simclr", "random encoder"]
    for method in ("byol", "simclr"):
        runs = result["runs"][method]
        assert [r["seed"] for r in runs] == [0, 1] and result["results"][method]["runs"] == 2
        knn = [json.loads((tmp_path / "c" / method / f"seed{s}" / "summary.json").read_text())["knn"]["top1"]
               for s in (0, 1)]
        assert result["results"][method]["knn_top1"] == pytest.approx(sum(knn) / 2)
    assert result["runs"]["byol"][0]["knn_top1"] != result["runs"]["byol"][1]["knn_top1"]  # seeds differ
    assert "| simclr | 2 |" in table and "| random encoder | 1 |" in table
    assert (tmp_path / "c" / "report" / "report.html").is_file()
    first = tmp_path / "c" / "simclr" / "seed0" / "checkpoint.pt"
    stamp = first.stat().st_mtime_ns
    assert main(argv) == 0 and first.stat().st_mtime_ns == stamp  # finished runs are kept


def test_a_sweep_compares_the_methods_at_each_value_on_as_many_images(small_folders, tmp_path, capsys):
    train, test = small_folders
    out = tmp_path / "c"
    assert main(["compare", "--data", str(train), "--test", str(test), "--out", str(out), "--methods", "byol,simclr",
                 *TINY, "--epochs", "1", "--sweep", "batch_size=16,32"]) == 0
    table = capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    assert result["sweep"] == dict(key="batch_size", values=[16, 32])
    assert list(result["results"]) == ["batch_size=16", "batch_size=32"]
    for label, batch in (("batch_size=16", 16), ("batch_size=32", 32)):
        assert list(result["results"][label]) == ["byol", "simclr", "random encoder"]
        for method in ("byol", "simclr"):
            run = out / method / label / "seed0"
            saved = yaml.safe_load((run / "config.yaml").read_text())
            assert (saved["batch_size"], saved["method"]) == (batch, method)
            assert result["runs"][label][method][0]["steps"] * batch == 256  # every run sees the 256 images once
    byol_16 = result["results"]["batch_size=16"]["byol"]["knn_top1"]
    assert table.startswith("| method | batch_size=16 | batch_size=32 |")
    assert f"| byol | {byol_16:.2f} |" in table and "### batch_size=32" in table
    assert (out / "sweep.png").stat().st_size > 10_000
    assert "byol/batch_size=16/seed0" in (out / "report" / "report.md").read_text()


def test_differences_within_the_spread_of_seeds_are_no_difference():
    from byol.compare import difference

    byol = dict(knn_top1=40.0, knn_top1_sd=1.5)
    assert difference(dict(knn_top1=41.0, knn_top1_sd=0.5), byol) == "no difference"
    assert difference(dict(knn_top1=35.0, knn_top1_sd=0.5), byol) == "-5.00"
    assert difference(dict(knn_top1=35.0), dict(knn_top1=40.0)) == "-5.00 (one seed: spread unknown)"


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
    (["--set", "epochs=ten"], "config key 'epochs' must be float, got 'ten'"),
    (["--optimizer", "adam"], "optimizer is 'adam': choose lars, sgd or adamw"),
])
def test_bad_settings_get_one_line_errors(capsys, small_folders, tmp_path, extra, message):
    err = error_of(capsys, ["pretrain", "--data", str(small_folders[0]), "--out", str(tmp_path / "r"), *TINY, *extra])
    assert message in err


def test_bad_data_folders_get_one_line_errors(capsys, tmp_path):
    assert "does not exist" in error_of(capsys, ["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    (tmp_path / "empty").mkdir()
    assert "no image files" in error_of(capsys, ["pretrain", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    assert "could be decoded" in error_of(capsys, ["pretrain", "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "r")])


def test_too_few_images_for_one_step_is_a_one_line_error(capsys, small_folders, tmp_path):
    err = error_of(capsys, ["pretrain", "--data", str(small_folders[0]), "--out", str(tmp_path / "r"), *TINY,
                            "--batch-size", "300"])
    assert f"{small_folders[0]} has 256 usable images, too few for one step of 300: lower --batch-size" in err


def mismatched(run, tmp_path):
    """The run's checkpoint, its config claiming a wider encoder than its weights."""
    from byol.core.files import safe_load, save_torch

    state = safe_load(run / "checkpoint.pt")
    state["config"]["width"] = 0.125
    save_torch(state, tmp_path / "wider.pt")
    return tmp_path / "wider.pt"


def test_eval_errors(capsys, run, small_folders, tmp_path):
    train, test = small_folders
    assert "does not exist" in error_of(capsys, ["eval", "knn", "--checkpoint", str(tmp_path / "x.pt"),
                                                 "--train", str(train), "--test", str(test)])
    other = tmp_path / "other"
    (other / "zebra").mkdir(parents=True)
    for src in sorted((test / sorted(p.name for p in test.iterdir())[0]).iterdir())[:3]:
        (other / "zebra" / src.name).write_bytes(src.read_bytes())
    assert "differ from those of" in error_of(
        capsys, ["eval", "knn", "--checkpoint", str(run), "--train", str(train), "--test", str(other)])
    assert "a single class ('zebra')" in error_of(
        capsys, ["eval", "linear", "--checkpoint", str(run), "--train", str(other), "--test", str(other)])
    assert "does not match this encoder" in error_of(
        capsys, ["eval", "linear", "--checkpoint", str(mismatched(run, tmp_path)), "--train", str(train),
                 "--test", str(test)])
    (tmp_path / "norun").mkdir()
    assert "has no metrics.jsonl" in error_of(capsys, ["report", str(tmp_path / "norun")])
    assert "say where it goes with --out" in error_of(capsys, ["report", str(run), str(run)])
    assert "holds a finished run" in error_of(capsys, ["pretrain", "--data", str(train), "--out", str(run)])
    assert "not a run folder" in error_of(capsys, ["pretrain", "--resume", str(tmp_path / "norun")])
    assert "--resume RUN_DIR takes the run's own config" in error_of(
        capsys, ["pretrain", "--resume", str(run), "--out", str(tmp_path / "x")])


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "byol", "pretrain", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"byol: error: data folder {tmp_path / 'none'} does not exist: pass an existing folder of images"


def test_compare_continues_an_interrupted_run_from_its_checkpoint(small_folders, tmp_path, capsys, monkeypatch):
    import dataclasses

    from byol.core.errors import ByolError
    from byol.train.trainer import Trainer, pretrain

    train, test = small_folders
    flags = [*TINY, "--epochs", "1", "--set", "checkpoint_every=2", "--set", "knn_every=0"]
    argv = ["compare", "--data", str(train), "--test", str(test), "--out", str(tmp_path / "c"), "--methods", "byol",
            *flags]
    config, _ = resolved_from_command_line(argv)  # what compare trains each run with
    step = Trainer.step

    def interrupted_at_step_4(self, pairs):
        if self.progress.step == 4:
            raise KeyboardInterrupt
        return step(self, pairs)

    monkeypatch.setattr(Trainer, "step", interrupted_at_step_4)
    with pytest.raises(ByolError, match="interrupted at step 4"):
        pretrain(dataclasses.replace(config, method="byol", seed=0), tmp_path / "c" / "byol" / "seed0")
    monkeypatch.undo()
    capsys.readouterr()
    assert main(argv) == 0
    assert f"resuming {tmp_path / 'c' / 'byol' / 'seed0'} at step 4" in capsys.readouterr().err
    records = [json.loads(x) for x in (tmp_path / "c" / "byol" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8]  # each step logged once


def test_eval_out_in_a_new_folder_is_created(run, small_folders, tmp_path):
    out = tmp_path / "new" / "folder" / "knn.json"
    assert main(["eval", "knn", "--checkpoint", str(run), "--train", str(small_folders[0]),
                 "--test", str(small_folders[1]), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["protocol"] == "knn"


def test_version_and_help_answer_without_importing_torch():
    code = ("import sys, contextlib, io\nfrom byol.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    for argv in (['--version'], ['--help'], ['pretrain', '--help']):\n"
            "        try:\n            main(argv)\n        except SystemExit as e:\n            assert e.code == 0\n"
            "print('torch' in sys.modules, out.getvalue().splitlines()[0])")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "byol", "0.1.0"]


def test_the_package_exports_load_on_first_use():
    import byol

    assert {"BYOL", "FolderBatches", "load_encoder", "tau_at"} <= set(dir(byol))
    assert byol.BYOL.__name__ == "BYOL" and byol.tau_at(0.5, 0.99) == pytest.approx(0.995)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        byol.nope


def test_presets_are_listed_with_their_purpose_and_shown_key_by_key(capsys):
    assert main(["presets"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("cifar10-cpu") and "12 minutes" in listed[0] and len(listed) >= 4
    assert main(["presets", "show", "cifar10-cpu"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    from byol.config import Config

    assert set(shown) == set(Config().to_dict())  # every key
    assert (shown["batch_size"], shown["minutes"], shown["optimizer"], shown["lr"], shown["crop_min_scale"]) == (
        32, 12.0, "sgd", 0.24, 0.2)


def test_the_presets_earlier_adamw_recipe_still_resolves_for_the_docs_that_name_it():
    from byol.config import resolve

    earlier = Path(__file__).resolve().parents[1] / "benchmarks" / "cifar10-cpu-adamw.yaml"
    config = resolve("cifar10-cpu", str(earlier))
    assert (config.optimizer, config.batch_size, config.tau_base, config.crop_min_scale, config.width,
            config.minutes) == ("adamw", 32, 0.95, 0.08, 0.125, 12.0)


def test_epochs_with_a_budget_say_which_ends_the_run_and_minutes_0_lifts_the_budget(small_folders):
    def resolved(*argv):
        return resolved_from_command_line(["pretrain", "--data", str(small_folders[0]), "--out", "x", *argv])

    config, notices = resolved("--preset", "cifar10-cpu", "--epochs", "0.5")
    assert config.epochs == 0.5 and notices == [
        "epochs 0.5 and a 12-minute budget: the run ends at whichever comes first (--minutes 0 lifts the time limit)"]
    config, notices = resolved("--preset", "cifar10-cpu", "--epochs", "0.5", "--minutes", "0")
    assert config.minutes is None and notices == []


def test_half_an_epoch_trains_half_the_steps_of_one(small_folders, tmp_path):
    out = tmp_path / "half"
    assert main(["pretrain", "--data", str(small_folders[0]), "--out", str(out), *TINY, "--epochs", "0.5",
                 "--set", "knn_every=0"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 4  # half of 8 steps an epoch


def test_each_flag_has_one_spelling_and_its_default_in_the_help(capsys):
    for argv in (["compare", "--out", "o", "--methods", "byol", "--seed", "1"],
                 ["compare", "--out", "o", "--methods", "byol", "--method", "simclr"],
                 ["pretrain", "--out", "o", "--epo", "1"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 100)" in text and "(default: lars)" in text and "timm:MODEL" in text
    for command in (["eval", "knn"], ["inspect"], ["report"], ["embed"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "cuda:N (default: auto)" in " ".join(capsys.readouterr().out.split())


def test_eval_scores_an_export_as_it_scores_its_run_and_a_source_without_a_folder_needs_out(
        run, small_folders, tmp_path, capsys):
    import hashlib

    train, test = small_folders
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "e.safetensors")]) == 0
    for source, out in ((run, "run.json"), (tmp_path / "e.safetensors", "export.json")):
        assert main(["eval", "knn", "--checkpoint", str(source), "--train", str(train), "--test", str(test),
                     "--out", str(tmp_path / out)]) == 0
    of_run, of_export = (json.loads((tmp_path / name).read_text()) for name in ("run.json", "export.json"))
    assert of_export["pretrained"] == of_run["pretrained"]
    assert of_export["sha256"] == hashlib.sha256((tmp_path / "e.safetensors").read_bytes()).hexdigest()
    assert of_run["sha256"] == hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()
    capsys.readouterr()
    assert "has no folder to write the result in: say where it goes with --out FILE.json" in error_of(
        capsys, ["eval", "knn", "--checkpoint", "torchvision:resnet18.IMAGENET1K_V1", "--train", str(train),
                 "--test", str(test)])


def test_a_weights_file_without_a_card_embeds_as_its_run_does(run, small_folders, tmp_path, capsys):
    import numpy as np
    from safetensors.torch import load_file

    torch.save(load_file(str(run / "encoder.safetensors")), tmp_path / "bare.pth")  # the keys alone, no card
    for source, out in ((run, "run.npy"), (tmp_path / "bare.pth", "bare.npy")):
        assert main(["embed", "--checkpoint", str(source), "--data", str(small_folders[1]), "--out",
                     str(tmp_path / out), "--workers", "0"]) == 0
    assert "read as resnet18 x0.0625 with the cifar stem from its keys, fed 32 px" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "bare.npy"), np.load(tmp_path / "run.npy"))


def test_a_sweep_that_names_one_value_twice_is_refused_before_training(small_folders, tmp_path, capsys):
    err = error_of(capsys, ["compare", "--data", str(small_folders[0]), "--test", str(small_folders[1]), "--out",
                            str(tmp_path / "c"), "--methods", "byol", "--sweep", "lr=1,1.0", *TINY])
    assert "--sweep lr: give two or more different values" in err
    assert not (tmp_path / "c").exists()
