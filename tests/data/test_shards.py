"""WebDataset shards: the same images as their folder, every sample once an epoch across
processes and workers, exact resume, and bad shards refused in one line."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from byol.cli import main
from byol.core.errors import ByolError
from byol.data.epochs import EpochBatches
from byol.data.memory import decode_source
from byol.data.shard_writer import write_shards
from byol.data.shards import INDEX, open_shards
from byol.data.sources import list_source
from byol.data.views import view_specs
from byol.eval.features import labelled_pair

CLASSES = ("ant", "bee", "cat")


def colour(i: int) -> tuple[int, int, int]:
    """A colour that names image i (i < 256): crops of a plain image keep it."""
    return (i, 255 - i, (7 * i) % 256)


def plain_folder(root, count: int, classes=CLASSES):
    """`count` plain 20x14 PNGs, image i in class i mod len(classes), coloured `colour(i)`."""
    for i in range(count):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 14), colour(i)).save(folder / f"{i:03d}.png")
    return root


def identity(crop: torch.Tensor) -> int:
    """The image a crop of a plain image came from (its red channel)."""
    return int(crop[0, 0, 0])


def contents(source, size=12):
    """The source's images and class names as a sorted list: comparable whatever the order."""
    decoded = decode_source(source, size, workers=0)
    return sorted((image.numpy().tobytes(), source.classes[label]) for image, label in zip(decoded.images,
                                                                                          decoded.labels.tolist()))


def test_a_folder_its_file_list_and_its_shards_give_the_same_images_labels_and_classes(tmp_path):
    folder = plain_folder(tmp_path / "folder", 30)
    names = sorted(path.relative_to(folder) for path in folder.rglob("*.png"))
    (folder / "files.txt").write_text("".join(f"{name}\t{name.parent}\n" for name in names))
    assert main(["shard", "--data", str(folder), "--out", str(tmp_path / "shards"), "--shard-size", "1kB",
                 "--workers", "0"]) == 0
    sources = [list_source(spec, 12) for spec in (str(folder), str(folder / "files.txt"), str(tmp_path / "shards"),
                                                   str(tmp_path / "shards" / "shard-{000000..000029}.tar"))]
    assert [source.classes for source in sources] == [list(CLASSES)] * 4
    assert [len(source) for source in sources] == [30] * 4
    expected = sorted((np.full((12, 12, 3), colour(i), np.uint8).transpose(2, 0, 1).tobytes(), CLASSES[i % 3])
                      for i in range(30))
    assert all(contents(source) == expected for source in sources)
    assert len(json.loads((tmp_path / "shards" / INDEX).read_text())["shards"]) == 30  # 1 kB: an image a shard


def test_byol_shard_leaves_undecodable_files_out_and_lists_them(tmp_path):
    folder = plain_folder(tmp_path / "folder", 6)
    (folder / "ant" / "broken.png").write_bytes(b"not a png")
    result = write_shards(folder, tmp_path / "shards", shard_size=10**6, workers=0)
    assert result["images"] == 6 and result["skipped"] == 1 and result["shards"] == 1
    assert (tmp_path / "shards" / "skipped_files.txt").read_text() == "ant/broken.png\n"
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as tar:
        assert sorted(member.name.split(".", 1)[1] for member in tar.getmembers()) == ["cls"] * 6 + ["png"] * 6


def epoch_draws(shards, rank: int, world: int, workers: int, epoch: int = 0, start: int = 0):
    """The (image, label) pairs of each batch that process `rank` of `world` draws in an epoch."""
    source = open_shards(str(shards))
    batches = EpochBatches(len(source), 8, seed=5, rank=rank, world=world)
    batches.set_epoch(epoch, start)
    specs = view_specs("cifar", 6, transforms="crop-only")
    drawn = []
    for crops, labels, undecodable in source.crop_batches(batches, lambda: specs, workers, torch.device("cpu")):
        assert undecodable == 0 and all(identity(a) == identity(b) for a, b in zip(*crops))
        drawn.append([(identity(crop), label) for crop, label in zip(crops[0], labels.tolist())])
    return drawn


UNEVEN = (5, 1, 4, 2, 3, 5, 1, 4, 2, 3, 5, 2)  # 37 images


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    """37 plain images, image i of class i mod 3, in 12 shards of 1 to 5 images."""
    root = tmp_path_factory.mktemp("uneven")
    starts = np.cumsum((0,) + UNEVEN)
    for shard, (first, stop) in enumerate(zip(starts, starts[1:])):
        write_tar(root / f"u-{shard:02d}.tar", [dict(__key__=f"{i:03d}", png=png(i), cls=str(i % 3).encode())
                                                for i in range(first, stop)])
    return root / "u-{00..11}.tar"


def test_under_2_processes_x_2_workers_each_sample_of_an_epoch_is_drawn_exactly_once(uneven_shards):
    """37 images, 8 a global step: 4 steps draw 32 distinct images, 4 a process a step; the 5
    left over are another epoch's (the shards' order differs by epoch)."""
    left_out = []
    for epoch in (0, 1):
        ranks = [epoch_draws(uneven_shards, rank, 2, workers=2, epoch=epoch) for rank in (0, 1)]
        assert [len(batch) for draws in ranks for batch in draws] == [4] * 8
        seen = [image for draws in ranks for batch in draws for image, _ in batch]
        assert len(seen) == len(set(seen)) == 32
        assert all(label == image % 3 for draws in ranks for batch in draws for image, label in batch)
        left_out.append(set(range(37)) - set(seen))
    assert left_out[0] != left_out[1]


def test_a_resumed_epoch_of_shards_draws_the_batches_the_uninterrupted_one_drew(uneven_shards):
    whole = epoch_draws(uneven_shards, 0, 1, workers=2, epoch=3)
    assert len(whole) == 4 and epoch_draws(uneven_shards, 0, 1, workers=2, epoch=3, start=1) == whole[1:]
    assert epoch_draws(uneven_shards, 0, 1, workers=2, epoch=3, start=3) == whole[3:]


def test_a_truncated_shard_is_one_line_naming_it(tmp_path):
    shards = tmp_path / "shards"
    write_shards(plain_folder(tmp_path / "folder", 12), shards, shard_size=10**6, workers=0)
    tar = shards / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    source = open_shards(str(shards))  # the index still lists 12 samples
    for workers in (0, 2):
        with pytest.raises(ByolError, match=r"^shard .*shard-000000.tar cannot be read after its \d+ samples .*: it is "
                                            r"truncated or not a tar file; write it again \(byol shard\)$"):
            decode_source(source, 8, workers=workers)


def write_tar(path, samples):
    """A shard of `samples` (dicts of member suffix -> bytes, with __key__), written with tarfile."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for suffix, data in sample.items():
                if suffix != "__key__":
                    info = tarfile.TarInfo(f"{sample['__key__']}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10), colour(i)).save(buffer, "PNG")
    return buffer.getvalue()


def test_shards_without_an_index_are_counted_and_a_member_that_is_not_an_image_is_undecodable(tmp_path):
    write_tar(tmp_path / "a-0.tar", [dict(__key__="x0", png=png(0), cls=b"1"), dict(__key__="x1", txt=b"hello", cls=b"0")])
    write_tar(tmp_path / "a-1.tar", [dict(__key__="x2", png=png(2), cls=b"1")])
    source = list_source(str(tmp_path / "a-{0..1}.tar"), 8)
    assert len(source) == 3 and source.labels.tolist() == [1, 0, 1] and source.classes == ["0", "1"]
    decoded = decode_source(source, 8, workers=0)
    assert len(decoded.images) == 2 and decoded.skipped == ["a-0.tar#1"]


def test_a_labelled_set_with_a_sample_missing_its_cls_is_refused(tmp_path):
    write_tar(tmp_path / "a-0.tar", [dict(__key__="x0", png=png(0), cls=b"1"), dict(__key__="x1", png=png(1))])
    with pytest.raises(ByolError, match=r"sample 1 of shard .*a-0.tar has no .cls label and other samples have one"):
        list_source(str(tmp_path / "a-0.tar"), 8)


def test_a_brace_pattern_that_matches_no_file_is_one_line(tmp_path):
    with pytest.raises(ByolError, match=r"no shard matches .*train-\{0..3\}.tar \(e.g. '.*train-0.tar' does not exist\)"):
        list_source(str(tmp_path / "train-{0..3}.tar"), 8)
    write_tar(tmp_path / "train-0.tar", [dict(__key__="x0", png=png(0))])
    with pytest.raises(ByolError, match=r"3 of the 4 shards of .* do not exist \(e.g. '.*train-1.tar'\): fix the pattern"):
        list_source(str(tmp_path / "train-{0..3}.tar"), 8)


def test_train_and_test_shards_whose_classes_differ_are_refused(tmp_path):
    write_shards(plain_folder(tmp_path / "train", 6), tmp_path / "train-shards", shard_size=10**6, workers=0)
    write_shards(plain_folder(tmp_path / "test", 6, ("ant", "bee", "cow")), tmp_path / "test-shards",
                 shard_size=10**6, workers=0)
    train, test = (open_shards(str(tmp_path / name)) for name in ("train-shards", "test-shards"))
    with pytest.raises(ByolError, match=r"the classes of test differ from those of train \(only in train \['cat'\], "
                                        r"only in test \['cow'\]\)"):
        labelled_pair(train, test, "train", "test")


def test_byol_shard_refuses_a_folder_of_the_users_files_and_rewrites_its_own(tmp_path, capsys):
    folder = plain_folder(tmp_path / "folder", 9)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["shard", "--data", str(folder), "--out", str(tmp_path / "mine")]) == 2
    assert "already holds files that byol did not write" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    out = tmp_path / "shards"
    assert main(["shard", "--data", str(folder), "--out", str(out), "--shard-size", "1kB", "--workers", "0"]) == 0
    assert main(["shard", "--data", str(folder), "--out", str(out), "--shard-size", "1MB", "--workers", "0"]) == 0
    assert sorted(path.name for path in out.glob("shard-*.tar")) == ["shard-000000.tar"]
    assert len(open_shards(str(out))) == 9


def test_knn_on_shards_equals_knn_on_their_folders(small_folders, tmp_path):
    """The same images, in another order and container: the same features, the same scores."""
    from byol.eval.protocols import evaluate
    from tests.test_export import write_run

    for split, folder in zip(("train", "test"), small_folders):
        write_shards(folder, tmp_path / split, shard_size=20_000, workers=0)
    run = write_run(tmp_path / "run", width=0.125)
    on_folders = evaluate("knn", run, str(small_folders[0]), str(small_folders[1]))
    on_shards = evaluate("knn", run, str(tmp_path / "train"), str(tmp_path / "test"))
    assert on_shards["pretrained"] == on_folders["pretrained"] and on_shards["train_images"] == 256


def test_a_shard_holds_the_images_whose_tar_members_fit_its_size(tmp_path):
    """A plain 20x14 PNG (under 512 bytes) and its .cls take a header and a data block each:
    2,048 bytes a sample, so 6,144 bytes hold 3 samples."""
    folder = plain_folder(tmp_path / "folder", 7)
    assert all(path.stat().st_size <= 512 for path in folder.rglob("*.png"))
    write_shards(folder, tmp_path / "shards", shard_size=6144, workers=0)
    index = json.loads((tmp_path / "shards" / INDEX).read_text())
    assert [entry["count"] for entry in index["shards"]] == [3, 3, 1]


def test_embed_of_shards_gives_the_embeddings_of_their_folder_named_by_shard_and_position(tmp_path):
    from byol.export import embed_folder
    from tests.test_export import write_run

    folder = plain_folder(tmp_path / "folder", 10)
    write_shards(folder, tmp_path / "shards", shard_size=6144, workers=0)
    run = write_run(tmp_path / "run", width=0.125)
    embed_folder(run, folder, tmp_path / "folder.npy", workers=0)
    embed_folder(run, str(tmp_path / "shards"), tmp_path / "shards.npy", workers=2)
    rows = {name: row for name, row in zip((tmp_path / "shards.npy.files.txt").read_text().splitlines(),
                                           np.load(tmp_path / "shards.npy"))}
    assert sorted(rows) == sorted(f"shard-{shard:06d}.tar#{i}" for shard, count in enumerate((3, 3, 3, 1))
                                  for i in range(count))
    expected = np.load(tmp_path / "folder.npy")
    assert np.allclose(sorted(map(tuple, rows.values())), sorted(map(tuple, expected)), atol=1e-6)


def test_a_pipe_command_serves_the_shards_as_an_object_store_would(uneven_shards):
    """`pipe:cat ...` stands in for `pipe:aws s3 cp ... -`: the same samples, counted in one pass."""
    piped = list_source(f"pipe:cat {uneven_shards}", 8)
    local = list_source(str(uneven_shards), 8)
    assert len(piped) == 37 and piped.labels.tolist() == local.labels.tolist() and contents(piped) == contents(local)
    assert piped.name(36) == "u-11.tar#1"


def test_reading_shards_draws_nothing_from_the_global_random_stream(uneven_shards):
    """A resumed run restores the random state at its step: a loader that drew from it at an
    epoch's start would draw at another point of the stream after a resume."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epoch_draws(uneven_shards, 0, 1, workers=2)
    decode_source(open_shards(str(uneven_shards)), 8, workers=2)
    assert torch.equal(torch.rand(3), expected)


def test_the_index_places_each_image_where_its_bytes_lie_and_local_shards_are_read_there(tmp_path, monkeypatch):
    """Every image of the index is read back at its place as the file's bytes; reading an
    epoch of indexed local shards parses no tar (the tar reader, made to fail, is not called)."""
    from byol.data import shards

    folder = plain_folder(tmp_path / "folder", 9)
    write_shards(folder, tmp_path / "shards", shard_size=6144, workers=0)
    source = open_shards(str(tmp_path / "shards"))
    originals = sorted(path.read_bytes() for path in folder.rglob("*.png"))
    read = []
    for shard, url in enumerate(source.urls):
        with open(url, "rb") as file:
            for number in range(source.starts[shard], source.starts[shard + 1]):
                offset, size = source.places[number].tolist()
                file.seek(offset)
                read.append(file.read(size))
    assert sorted(read) == originals
    monkeypatch.setattr(shards, "raw_samples", lambda url: pytest.fail(f"parsed {url}"))
    batches = EpochBatches(len(source), 4, seed=0)
    specs = view_specs("cifar", 6, transforms="crop-only")
    drawn = [identity(crop) for crops, _, _ in source.crop_batches(batches, lambda: specs, 0, torch.device("cpu"))
             for crop in crops[0]]
    assert len(drawn) == len(set(drawn)) == 8
