"""The image settings that follow a folder's images: size, views and stem."""

import pytest
from PIL import Image

from byol.data.fit import settings_for, typical_size


def photos(folder, sizes):
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 40 % 256, 90, 20)).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return folder


def test_the_typical_size_is_the_median_shorter_side_read_from_the_headers(tmp_path):
    folder = photos(tmp_path / "photos", [(300, 400), (640, 480), (350, 300), (500, 500), (1024, 768)])
    assert typical_size(str(folder)) == 480
    (folder / "broken.jpg").write_bytes(b"not an image")
    assert typical_size(str(folder)) == 480  # the unreadable file is not a size of 0
    assert typical_size("stl10") == 96 and typical_size("cifar10:test") == 32


@pytest.mark.parametrize(("size", "expected"), [
    (20, (32, "cifar", True)), (32, (32, "cifar", True)), (48, (32, "cifar", True)),
    (64, (64, "imagenet", True)), (80, (64, "imagenet", True)),
    (96, (96, "imagenet", False)), (160, (96, "imagenet", False)),
    (161, (224, "imagenet", False)), (4000, (224, "imagenet", False)),
])
def test_small_images_keep_the_small_stem_and_photos_get_imagenet_views(size, expected):
    chosen = settings_for(size)
    assert (chosen["image_size"], chosen["augment"], chosen["cifar_stem"]) == expected
