"""Without a preset, the input size, views and stem follow the images."""

import yaml
from PIL import Image

from byol.cli import _config_from, build_parser, main


def photos(folder, sizes):
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 40 % 256, 90, 20)).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return folder


def resolved(*argv):
    return _config_from(build_parser().parse_args(["pretrain", "--out", "unused", *argv]))


def test_tiny_images_get_cifars_size_views_and_stem(small_folders):
    config, notices = resolved("--data", str(small_folders[0]))
    assert (config.image_size, config.augment, config.cifar_stem) == (32, "cifar", True)
    assert notices == [f"no preset: the images of {small_folders[0]} are about 32 px (median shorter side of a "
                       "sample), so image_size=32, augment=cifar, cifar_stem=True; a --preset or --set overrides this"]


def test_photos_of_mixed_sizes_get_imagenet_views_at_224_and_the_standard_stem(tmp_path):
    folder = photos(tmp_path / "photos", [(300, 400), (640, 480), (350, 300), (500, 500), (1024, 768)])
    config, notices = resolved("--data", str(folder))
    assert (config.image_size, config.augment, config.cifar_stem) == (224, "imagenet", False)
    assert "are about 480 px" in notices[0]


def test_a_preset_or_a_flag_wins(tmp_path):
    folder = photos(tmp_path / "photos", [(300, 400)] * 3)
    config, notices = resolved("--data", str(folder), "--preset", "cifar10-cpu")
    assert (config.image_size, config.augment, config.cifar_stem) == (32, "cifar", True) and notices == []
    config, notices = resolved("--data", str(folder), "--set", "image_size=64")
    assert (config.image_size, config.augment, config.cifar_stem) == (64, "imagenet", True)
    assert notices[0].startswith("no preset: image_size is 64, so augment=imagenet, cifar_stem=True")
    config, notices = resolved("--data", str(folder), "--set", "image_size=64", "--set", "augment=cifar",
                               "--set", "cifar_stem=false")
    assert (config.image_size, config.augment, config.cifar_stem) == (64, "cifar", False) and notices == []


def test_the_choice_is_printed_once_and_written_in_the_runs_config(tmp_path, capsys):
    folder = photos(tmp_path / "photos", [(100, 120), (110, 100), (130, 100), (100, 100)] * 2)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--out", str(out), "--batch-size", "4", "--width", "0.0625",
                 "--set", "steps=1", "--set", "projector_hidden=16", "--set", "predictor_hidden=16",
                 "--set", "projection_dim=8", "--set", "workers=0"]) == 0
    err = capsys.readouterr().err
    assert err.count("no preset: the images of") == 1 and "are about 100 px" in err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["image_size"], saved["augment"], saved["cifar_stem"]) == (96, "imagenet", False)
