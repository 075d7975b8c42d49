import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.core.errors import ByolError
from byol.data.folders import UNLABELLED, CroppedViews, ImageFiles, list_images
from byol.data.memory import decode_into_memory
from tests.conftest import pattern_image


def write_image(path, size=(12, 12), colour=(200, 10, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)


def test_imagefolder_tree_gives_sorted_classes_and_labels(tmp_path):
    for name in ("dog", "cat"):
        for i in range(3):
            write_image(tmp_path / name / f"{i}.png")
    listing = list_images(tmp_path)
    assert listing.classes == ["cat", "dog"]
    assert listing.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_flat_or_nested_folder_without_class_layout_is_unlabelled(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "deep" / "er" / "b.png")
    listing = list_images(tmp_path)
    assert not listing.labelled and len(listing.files) == 2 and set(listing.labels.tolist()) == {-1}


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "does not exist"),
    (lambda p: p, "no image files"),
    (lambda p: (p / "notes.txt").write_text("x") and p, "no image files"),
])
def test_missing_or_empty_folders_get_clear_errors(tmp_path, make, message):
    with pytest.raises(ByolError, match=message):
        list_images(make(tmp_path))


def test_undecodable_files_are_skipped_and_counted(tmp_path):
    for i in range(3):
        write_image(tmp_path / "a" / f"{i}.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    data = decode_into_memory(list_images(tmp_path), size=8)
    assert data.images.shape == (3, 3, 8, 8) and data.images.dtype == torch.uint8
    assert sorted(p.rsplit("/", 1)[1] for p in data.skipped) == ["broken.jpg", "empty.png"]


def test_folder_with_no_decodable_image_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ByolError, match="none of the 1 image files"):
        decode_into_memory(list_images(tmp_path), size=8)


def test_odd_images_become_rgb_at_the_asked_size(tmp_path):
    write_image(tmp_path / "grey.png", mode="L", colour=(90,))
    Image.new("RGBA", (20, 10), (0, 0, 255, 255)).save(tmp_path / "alpha.png")
    Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.full((6, 6), 257 * 100, dtype=np.int32), mode="I").save(tmp_path / "int.tif")
    data = decode_into_memory(list_images(tmp_path), size=8)
    assert data.images.shape == (4, 3, 8, 8)
    by_name = dict(zip(["alpha", "deep", "grey", "int"], data.images))
    assert by_name["int"].min() == by_name["int"].max() == 100
    assert by_name["grey"].float().std() == 0 and by_name["grey"][0, 0, 0] == 90
    assert by_name["alpha"][:, 4, 4].tolist() == [0, 0, 255]
    assert by_name["deep"].min() == 255


def test_decoded_images_are_cached_and_the_cache_follows_file_changes(tmp_path, monkeypatch):
    for i in range(2):
        write_image(tmp_path / "imgs" / f"{i}.png", colour=(i * 100, 0, 0))
    first = decode_into_memory(list_images(tmp_path / "imgs"), size=8)
    assert len(list(Path(os.environ["BYOL_CACHE_DIR"]).glob("images-*.pt"))) == 1
    monkeypatch.setattr("byol.data.memory.decode_square", lambda path, size: pytest.fail("decoded again"))
    torch.testing.assert_close(decode_into_memory(list_images(tmp_path / "imgs"), size=8).images, first.images)
    monkeypatch.undo()
    write_image(tmp_path / "imgs" / "2.png")
    assert len(decode_into_memory(list_images(tmp_path / "imgs"), size=8).images) == 3


def test_images_of_the_training_size_decode_exactly_as_pil_reads_them(small_folders, tmp_path):
    shutil.copytree(small_folders[1] / "disc", tmp_path / "disc", ignore=lambda d, names: sorted(names)[5:])
    data = decode_into_memory(list_images(tmp_path), size=32)
    first = sorted((tmp_path / "disc").iterdir())[0]
    expected = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(data.images[0], expected)
    assert data.classes == ["disc"]


def test_folder_batches_square_images_of_any_size_and_count_the_files_that_do_not_decode(tmp_path):
    from byol import FolderBatches

    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "wide.png")
    Image.new("RGB", (100, 200), (0, 255, 0)).save(tmp_path / "tall.jpg")
    Image.new("L", (20, 20), 90).save(tmp_path / "grey.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    batches = FolderBatches(tmp_path, image_size=16, batch_size=4, workers=0)
    seen = list(batches)
    assert len(batches) == 1 and sum(len(b) for b in seen) == 3 and batches.skipped == 1
    assert all(b.dtype == torch.uint8 and b.shape[1:] == (3, 16, 16) for b in seen)
    colours = sorted(tuple(img[:, 8, 8].tolist()) for b in seen for img in b)
    assert (90, 90, 90) in colours and (255, 0, 0) in colours  # grey became RGB; PNG is exact
    assert any(g > 200 and r < 50 and b < 50 for r, g, b in colours)  # the JPEG's green, near enough


def test_folder_batches_never_yield_a_batch_of_one_image_which_batchnorm_cannot_train_on(tmp_path):
    from byol import FolderBatches

    for shade in range(5):
        Image.new("RGB", (16, 16), (50 * shade, 0, 0)).save(tmp_path / f"{shade}.png")
    batches = FolderBatches(tmp_path, image_size=16, batch_size=2, workers=0, seed=3)
    passes = [[img[0, 0, 0].item() for b in batches for img in b] for _ in range(4)]
    assert all(len(seen) == 4 for seen in passes) and batches.left_out == 4 and batches.skipped == 0
    missing = {({0, 50, 100, 150, 200} - set(seen)).pop() for seen in passes}
    assert len(missing) > 1  # a new order each pass: not always the same image left out


@pytest.mark.parametrize(("width", "height", "view_size"), [(1600, 1200, 32), (1200, 1600, 96), (900, 700, 224),
                                                            (400, 300, 32), (120, 90, 96)])
def test_a_jpeg_is_decoded_at_the_smallest_scale_that_still_holds_its_smallest_crop(tmp_path, width, height, view_size):
    from byol.data.decode import open_for_crops, smallest_crop_source
    from byol.data.views import view_specs

    specs = view_specs("imagenet", view_size, crop_min_scale=0.2)
    need = smallest_crop_source(specs[0])  # a crop of a fifth of the area at an aspect ratio of 3:4
    assert need == math.ceil(view_size / math.sqrt(0.2 * 0.75))
    pattern_image("checks", 64, np.random.default_rng(0)).resize((width, height)).save(tmp_path / "a.jpg")
    pattern_image("checks", 64, np.random.default_rng(0)).resize((width, height)).save(tmp_path / "a.png")
    decoded = open_for_crops(tmp_path / "a.jpg", specs)
    assert min(decoded.size) >= min(need, width, height)  # never fewer pixels across than the view needs
    if min(width, height) >= 2 * need:  # a reduced scale holds them: the smallest that does
        assert min(decoded.size) < 2 * need
    else:
        assert decoded.size == (width, height)
    assert open_for_crops(tmp_path / "a.png", specs).size == (width, height)  # PNG has no reduced scales
    *crops, label = CroppedViews(ImageFiles(tmp_path, [tmp_path / "a.jpg"], [UNLABELLED], []), specs)[0]
    assert [tuple(crop.shape) for crop in crops] == [(3, view_size, view_size)] * 2 and label == UNLABELLED


def test_streamed_small_crops_come_in_the_order_of_the_batched_path(tmp_path):
    from byol.data.source import collate_crops
    from byol.data.views import Views

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (120, 90), colour).save(tmp_path / f"{i}.png")
    views = Views.preset("imagenet", 48, transforms="crop-only", small_crops=2)
    listing = list_images(tmp_path)
    items = CroppedViews(listing, views.crop_specs, seed=0)
    crops, _, undecodable = collate_crops([items[i] for i in range(len(colours))])
    assert undecodable == 0 and [tuple(c.shape) for c in crops] == [(4, 3, 48, 48)] * 2 + [(4, 3, 24, 24)] * 2
    out = views.from_crops(*crops)
    assert [tuple(v.shape) for v in out] == [(4, 3, 48, 48)] * 2 + [(8, 3, 24, 24)]
    spec = views.small
    small = out[2] * torch.tensor(spec.std)[None, :, None, None] + torch.tensor(spec.mean)[None, :, None, None]
    expected = torch.tensor([colours[int(p.stem)] for p in listing.files]).float() / 255
    torch.testing.assert_close(small.mean(dim=(2, 3)), expected.repeat(2, 1), atol=0.01, rtol=0)


def _file_list(folder: Path, out: Path, with_class: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [os.path.relpath(p, out.parent) + (f"\t{p.parent.name}" if with_class else "")
             for p in sorted(folder.rglob("*.jpg"))]
    out.write_text("\n".join(lines) + "\n")
    return out


def test_a_file_list_gives_the_images_labels_and_classes_of_the_folder_it_lists(small_folders, tmp_path):
    folder = small_folders[0]
    listed = _file_list(folder, tmp_path / "lists" / "train.txt", with_class=True)  # paths as ../../train/...
    from_folder, from_list = decode_into_memory(list_images(folder), 16, tmp_path), decode_into_memory(list_images(listed), 16, tmp_path)
    assert from_list.classes == from_folder.classes == ["checks", "disc", "horizontal", "vertical"]
    assert torch.equal(from_list.images, from_folder.images) and torch.equal(from_list.labels, from_folder.labels)
    unlabelled = list_images(_file_list(folder, tmp_path / "plain.txt", with_class=False))
    assert unlabelled.classes == [] and set(unlabelled.labels.tolist()) == {-1} and len(unlabelled.files) == 256


def test_a_file_list_naming_missing_files_counts_them_as_undecodable(small_folders, tmp_path):
    names = [str(p) for p in sorted(small_folders[0].rglob("*.jpg"))[:20]] + ["gone/1.jpg", "gone/2.jpg"]
    listed = tmp_path / "files.txt"
    listed.write_text("\n".join(names) + "\n")
    data = decode_into_memory(list_images(listed), 16, tmp_path)
    assert len(data.images) == 20 and data.skipped == [str(tmp_path / "gone" / "1.jpg"), str(tmp_path / "gone" / "2.jpg")]


@pytest.mark.parametrize(("text", "says"), [
    ("a.jpg\tcat\nb.jpg\n", r"line 2 has no class column \(after a TAB\) and line 1 has one: give every line a class"),
    ("\n\n", "names no image"),
])
def test_a_malformed_file_list_is_one_line_naming_the_fix(tmp_path, text, says):
    listed = tmp_path / "files.txt"
    listed.write_text(text)
    with pytest.raises(ByolError, match=rf"^file list {listed}: {says}|^file list {listed} {says}"):
        list_images(listed)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="reads Linux's /proc/self/smaps_rollup")
def test_a_loader_worker_reads_the_listing_without_copying_it(tmp_path):
    """200,000 paths: a list of Path objects is copied into the reading child (tens of MB), the
    listing's own table is not (what a loader worker of a million-file folder would carry)."""
    from benchmarks.listing import private_growth

    names = (f"class{i % 1000:03d}/image_{i:08d}.jpg" for i in range(200_000))
    listing = ImageFiles(tmp_path, (tmp_path / name for name in names), [i % 1000 for i in range(200_000)],
                         [f"class{c:03d}" for c in range(1000)])
    # the child's own allocations land in pages it shares with the parent too: a loop that makes
    # the same Path objects from nothing shared is what reading costs without the listing
    made = private_growth(tmp_path / f"class{i % 1000:03d}/image_{i:08d}.jpg" for i in range(200_000))
    as_listed = private_growth(listing.files)
    as_objects = private_growth(list(listing.files))
    assert as_objects - made > 20 * 2**20  # the check can fail: Path objects are copied
    assert as_listed - made < 2 * 2**20, (as_listed, made, as_objects)
