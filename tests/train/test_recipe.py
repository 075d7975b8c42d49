"""With no preset, the recipe follows the images and the device; explicit keys always win."""

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from byol import config as cfg
from byol.cli import main
from byol.methods.byol import BYOL
from byol.train import recipe
from tests.conftest import resolved_from_command_line
from tests.data.test_fit import photos

GIB = 2**30


def resolved(*argv):
    return resolved_from_command_line(["pretrain", "--out", "unused", *argv])


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of 10 GiB free on which a step holds 1 GiB and 60 MiB an image; the
    trial steps' measurement is counted instead of run."""
    calls = []
    monkeypatch.setattr(recipe, "device_for",
                        lambda config: torch.device("cuda", 0) if config.device == "auto" else torch.device(config.device))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GIB, 16 * GIB))
    monkeypatch.setattr(recipe, "step_memory", lambda config, device: calls.append(config.image_size) or (GIB, GIB / 16))
    monkeypatch.setattr(recipe, "usable_cores", lambda: 16)
    return calls


@pytest.fixture
def photo_folder(tmp_path):
    return photos(tmp_path / "photos", [(300, 400), (640, 480), (350, 300), (500, 500), (1024, 768)])


def test_photos_on_a_cpu_get_the_cpu_recipe_at_96_px(photo_folder):
    config, notices = resolved("--data", str(photo_folder), "--device", "cpu")
    cpu = cfg.resolve("cifar10-cpu")
    assert (config.image_size, config.augment, config.cifar_stem) == (96, "imagenet", False)
    assert {key: getattr(config, key) for key in recipe.CPU_KEYS} == {key: getattr(cpu, key) for key in recipe.CPU_KEYS}
    assert (config.width, config.batch_size, config.optimizer, config.tau_base) == (0.125, 32, "sgd", 0.99)
    assert config.epochs == 100 and config.minutes is None  # the estimate line says how long that takes
    assert notices == [f"no preset: the images of {photo_folder} are about 480 px (median shorter side of a sample); "
                       "on the CPU, the networks and optimisation of the cifar10-cpu preset (byol presets show "
                       "cifar10-cpu); a CPU trains at up to 96 px; streamed, every image would be decoded at every "
                       "epoch, which on a CPU takes about as long as the step, so they are decoded once (0.00 GiB in "
                       "memory); so image_size=96, augment=imagenet, cifar_stem=False, "
                       f"workers={min(8, recipe.usable_cores())}, decode_once=True (all in the run's config.yaml); "
                       "a --preset, --config or flag overrides any of these"]


def test_on_a_cpu_images_are_decoded_once_where_a_quarter_of_the_memory_holds_them(photo_folder, monkeypatch):
    five_at_96 = 5 * 96 * 96 * 3
    monkeypatch.setattr(recipe, "memory_bytes", lambda: 4 * five_at_96)
    assert resolved("--data", str(photo_folder), "--device", "cpu")[0].decode_once
    monkeypatch.setattr(recipe, "memory_bytes", lambda: 4 * five_at_96 - 1)
    config, notices = resolved("--data", str(photo_folder), "--device", "cpu")
    assert not config.decode_once and "decode" not in notices[0]
    monkeypatch.setattr(recipe, "memory_bytes", lambda: 10**12)
    assert not resolved("--data", str(photo_folder), "--device", "cpu", "--set", "decode_once=false")[0].decode_once


def test_decode_once_counts_a_copy_for_each_process_of_the_node(photo_folder, monkeypatch):
    """Two processes on the node (torchrun's LOCAL_WORLD_SIZE): twice the memory for the same images."""
    five_at_96 = 5 * 96 * 96 * 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(recipe, "memory_bytes", lambda: 8 * five_at_96 - 1)
    assert not resolved("--data", str(photo_folder), "--device", "cpu")[0].decode_once
    monkeypatch.setattr(recipe, "memory_bytes", lambda: 8 * five_at_96)
    config, notices = resolved("--data", str(photo_folder), "--device", "cpu")
    assert config.decode_once and "2 processes" in notices[0]


def test_small_images_on_a_cpu_train_at_their_own_size_with_cifars_views(small_folders):
    config, notices = resolved("--data", str(small_folders[0]), "--device", "cpu")
    assert (config.image_size, config.augment, config.cifar_stem, config.width, config.optimizer) == (
        32, "cifar", True, 0.125, "sgd")
    assert "are about 32 px" in notices[0] and "up to 96 px" not in notices[0] and not config.decode_once


def test_photos_on_a_gpu_get_the_papers_recipe_at_224_in_micro_batches_that_fit(photo_folder, fake_gpu):
    config, notices = resolved("--data", str(photo_folder))
    paper = cfg.Config()
    assert (config.image_size, config.augment, config.cifar_stem) == (224, "imagenet", False)
    assert (config.width, config.optimizer, config.lr, config.tau_base, config.warmup_epochs) == (
        paper.width, "lars", paper.lr, paper.tau_base, paper.warmup_epochs)
    # 0.8 x 10 GiB holds 1 GiB and 112 images of 1/16 GiB: 64 is the largest divisor of 256 that fits
    assert (config.batch_size, config.accumulate, config.workers) == (64, 4, 15)
    assert fake_gpu == [224] and not config.decode_once
    assert "on Fake GPU, the paper's recipe with 256 images a step in micro-batches that fit" in notices[0]
    assert "batch_size=64, accumulate=4" in notices[0]


def test_small_images_on_a_gpu_keep_their_size_and_a_whole_batch_when_it_fits(small_folders, fake_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * GIB, 100 * GIB))
    config, _ = resolved("--data", str(small_folders[0]))
    assert (config.image_size, config.augment, config.cifar_stem, config.optimizer) == (32, "cifar", True, "lars")
    assert (config.batch_size, config.accumulate) == (256, 1) and fake_gpu == [32]


def test_explicit_keys_win_on_either_device(photo_folder, fake_gpu):
    config, notices = resolved("--data", str(photo_folder), "--batch-size", "48", "--set", "image_size=128")
    assert (config.batch_size, config.accumulate, config.image_size) == (48, 1, 128) and fake_gpu == []
    assert notices[0].startswith("no preset: image_size is 128;")
    config, _ = resolved("--data", str(photo_folder), "--device", "cpu", "--width", "0.5", "--set", "image_size=160",
                         "--optimizer", "adamw", "--set", "workers=0")
    assert (config.width, config.image_size, config.optimizer, config.workers) == (0.5, 160, "adamw", 0)
    assert (config.batch_size, config.cifar_stem) == (32, False)  # the rest still chosen


def test_a_preset_or_a_config_file_turns_the_recipe_off(photo_folder, fake_gpu, tmp_path):
    config, notices = resolved("--data", str(photo_folder), "--preset", "stl10-resnet18")
    assert notices == [] and config == cfg.resolve("stl10-resnet18", overrides=dict(data=str(photo_folder)))
    (tmp_path / "mine.yaml").write_text("width: 0.25\n")
    config, notices = resolved("--data", str(photo_folder), "--config", str(tmp_path / "mine.yaml"))
    assert notices == [] and (config.width, config.image_size, config.batch_size) == (0.25, 32, 256)
    assert fake_gpu == []


@given(fixed=st.floats(0, 50 * GIB), per_image=st.floats(1e3, 4 * GIB), free=st.floats(GIB / 4, 200 * GIB),
       images=st.integers(2, 4096), world=st.sampled_from([1, 2, 3, 8]))
def test_the_micro_batch_fits_and_is_at_least_half_the_largest_that_does(fixed, per_image, free, images, world):
    share = max(2, images // world)
    fits = lambda micro: fixed + per_image * micro <= recipe.GPU_MEMORY_SHARE * free  # noqa: E731
    if not fits(2):
        with pytest.raises(recipe.ByolError, match="2 images a GPU do not fit"):
            recipe.batch_that_fits(images, world, fixed, per_image, free)
        return
    batch, accumulate = recipe.batch_that_fits(images, world, fixed, per_image, free)
    micro = batch // world
    assert batch % world == 0 and fits(micro) and (micro == share or not fits(2 * micro))
    assert abs(micro * accumulate - share) <= micro / 2
    largest = max(m for m in range(2, share + 1) if fits(m))
    if any(share % m == 0 for m in range(largest // 2 + 1, largest + 1)):
        assert micro * accumulate == share


def test_the_papers_256_images_split_into_powers_of_two():
    assert recipe.batch_that_fits(256, 1, GIB, GIB / 16, 10 * GIB) == (64, 4)
    assert recipe.batch_that_fits(256, 1, GIB, GIB / 16, 100 * GIB) == (256, 1)
    assert recipe.batch_that_fits(256, 2, GIB, GIB / 16, 10 * GIB) == (128, 2)


def test_the_choice_is_printed_once_and_written_in_the_runs_config(tmp_path, capsys):
    folder = photos(tmp_path / "photos", [(100, 120), (110, 100), (130, 100), (100, 100)] * 2)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--out", str(out), "--device", "cpu", "--batch-size", "4",
                 "--set", "steps=1", "--set", "projector_hidden=16", "--set", "predictor_hidden=16",
                 "--set", "projection_dim=8", "--set", "workers=0"]) == 0
    err = capsys.readouterr().err
    assert err.count("no preset: the images of") == 1 and "are about 100 px" in err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["image_size"], saved["augment"], saved["cifar_stem"], saved["width"], saved["optimizer"]) == (
        96, "imagenet", False, 0.125, "sgd")


def test_the_trial_steps_give_the_fixed_bytes_and_the_bytes_an_image(monkeypatch):
    """The arithmetic of step_memory, on the CPU, with the GPU's peak counter faked: a step that
    holds 5 MB and 2 MB an image gives back those, plus the optimiser's momentum buffer. The
    trial steps run the run's own views, small crops included."""
    config = cfg.Config(width=0.0625, projector_hidden=16, predictor_hidden=16, projection_dim=8, small_crops=3)
    trials = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 5e6 + 2e6 * len(trials[-1][0]))
    loss = BYOL.loss
    monkeypatch.setattr(BYOL, "loss", lambda self, *views: trials.append(views) or loss(self, *views))
    before = torch.random.get_rng_state()
    fixed, per_image = recipe.step_memory(config, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)  # the run's networks are drawn from its own seed
    momentum = sum(p.numel() * 4 for p in recipe.build_learner(config).trainable_parameters())
    assert [tuple(v.shape[:2]) for views in trials for v in views] == [
        shape for batch in recipe.TRIAL_BATCHES for shape in [(batch, 3), (batch, 3), (3 * batch, 3)]]
    assert per_image == pytest.approx(2e6) and fixed == pytest.approx(5e6 + momentum)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measures a real GPU's memory")
def test_the_trial_steps_predict_the_memory_of_a_larger_batch():
    device = torch.device("cuda")
    config = cfg.Config(image_size=96, cifar_stem=False, augment="imagenet")
    fixed, per_image = recipe.step_memory(config, device)
    learner = recipe.build_learner(config).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(learner.trainable_parameters(), lr=0.1, momentum=0.9)
    torch.cuda.reset_peak_memory_stats(device)
    views = torch.rand(2, 32, 3, 96, 96, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = learner.loss(views[0], views[1])
    loss.backward()
    optimizer.step()
    predicted = fixed + 32 * per_image
    assert 0.8 * predicted < torch.cuda.max_memory_allocated(device) < 1.2 * predicted


def test_the_folder_is_listed_once_to_choose_the_recipe(photo_folder, monkeypatch):
    from byol.data import folders, sources

    calls = []
    listed = folders.list_images
    counted = lambda root: calls.append(root) or listed(root)  # noqa: E731
    monkeypatch.setattr(sources, "list_images", counted)
    config, _ = resolved("--data", str(photo_folder), "--device", "cpu")
    assert config.decode_once and calls == [str(photo_folder)]


def test_pretrain_from_python_with_run_settings_gets_the_recipe_that_the_command_line_gets(small_folders, tmp_path,
                                                                                         monkeypatch):
    """RunSettings given to `pretrain` resolve as the same flags do on the command line: on a
    CPU the cifar10-cpu networks, not the paper's GPU defaults (width 1, batch 256, LARS)."""
    from byol.train.trainer import Trainer, pretrain

    seen = {}
    monkeypatch.setattr(Trainer, "run", lambda self: seen.setdefault("config", self.config) and {})
    values = dict(data=str(small_folders[0]), device="cpu", steps=1)
    pretrain(cfg.RunSettings(values=values), tmp_path / "py")
    from_cli, _ = resolved("--data", str(small_folders[0]), "--device", "cpu", "--set", "steps=1")
    preset = cfg.resolve("cifar10-cpu")
    assert seen["config"] == from_cli
    assert (seen["config"].width, seen["config"].batch_size, seen["config"].optimizer) == (
        preset.width, preset.batch_size, preset.optimizer) == (0.125, 32, "sgd")


def test_config_yaml_says_where_each_value_came_from_and_a_resume_keeps_it(small_folders, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(small_folders[0]), "--out", str(run), "--device", "cpu", "--width",
                 "0.0625", "--set", "steps=2", "--set", "knn_every=0", "--set", "collapse_every=0"]) == 0
    written = (run / "config.yaml").read_text()
    lines = dict(line.split(":", 1) for line in written.splitlines())
    assert lines["width"] == " 0.0625  # from the command line"  # a flag wins over the recipe's 0.125
    assert lines["steps"] == " 2  # from the command line"
    assert lines["optimizer"] == " sgd  # from the recipe"
    assert lines["seed"] == " 0  # from the default"
    assert cfg.resolve(config_file=str(run / "config.yaml")).width == 0.0625  # still a config file
    (run / "summary.json").unlink()  # a finished run is not resumed: make it look unfinished
    assert main(["pretrain", "--resume", str(run), "--threads", "1"]) == 0
    again = dict(line.split(":", 1) for line in (run / "config.yaml").read_text().splitlines())
    assert again["optimizer"] == " sgd  # from the recipe" and again["threads"] == " 1  # from the command line"


def test_a_run_lists_its_folder_once_the_recipe_and_the_training_share_the_listing(small_folders, tmp_path,
                                                                                   monkeypatch):
    from byol.data import folders, sources
    from byol.train.trainer import pretrain

    calls = []
    listed = folders.list_images
    monkeypatch.setattr(sources, "list_images", lambda root: calls.append(root) or listed(root))
    settings = dict(data=str(small_folders[0]), steps=2, knn_every=0, collapse_every=0, threads=1)
    assert pretrain(cfg.RunSettings(None, None, settings), tmp_path / "run")["steps"] == 2
    assert calls == [str(small_folders[0])]
