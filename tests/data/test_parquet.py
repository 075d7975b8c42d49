"""Parquet image tables as the Hub publishes them: the same images as their folder."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from byol.core.errors import ByolError
from byol.data.epochs import EpochBatches
from byol.data.memory import decode_source
from byol.data.sources import list_source
from byol.data.views import view_specs
from tests.data.test_shards import CLASSES, contents, identity, plain_folder, png


def hub_table(path, first: int, count: int, row_group: int):
    """Images first..first+count-1 as the Hub writes an image dataset: an `image` struct of
    bytes and path, a `label` ClassLabel named in the schema's metadata."""
    images = pa.array([dict(bytes=png(i), path=f"{i:03d}.png") for i in range(first, first + count)],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    labels = pa.array([i % 3 for i in range(first, first + count)], pa.int64())
    features = dict(image=dict(_type="Image"), label=dict(_type="ClassLabel", names=list(CLASSES)))
    metadata = {b"huggingface": json.dumps(dict(info=dict(features=features))).encode()}
    table = pa.Table.from_arrays([images, labels], names=["image", "label"]).replace_schema_metadata(metadata)
    pq.write_table(table, path, row_group_size=row_group)


def test_parquet_tables_give_the_images_labels_and_classes_of_their_folder(tmp_path):
    hub_table(tmp_path / "train-00000-of-00002.parquet", 0, 17, row_group=5)
    hub_table(tmp_path / "train-00001-of-00002.parquet", 17, 13, row_group=5)
    tables = list_source(str(tmp_path / "train-*.parquet"), 12)
    folder = list_source(str(plain_folder(tmp_path / "folder", 30, CLASSES)), 12)
    assert tables.classes == list(CLASSES) and len(tables) == 30 and len(tables.urls) == 7  # 4 + 3 row groups
    assert contents(tables) == contents(folder)
    assert tables.name(20) == "train-00001-of-00002.parquet#3"


def test_parquet_row_groups_split_an_epoch_as_shards_do(tmp_path):
    hub_table(tmp_path / "t.parquet", 0, 37, row_group=4)
    source = list_source(str(tmp_path / "t.parquet"), 6)
    seen = []
    for rank in (0, 1):
        batches = EpochBatches(len(source), 8, seed=2, rank=rank, world=2)
        specs = view_specs("cifar", 6, transforms="crop-only")
        for crops, labels, _ in source.crop_batches(batches, lambda: specs, 2, torch.device("cpu")):
            seen += [identity(crop) for crop in crops[0]]
            assert [identity(crop) % 3 for crop in crops[0]] == labels.tolist()
    assert len(seen) == len(set(seen)) == 32


def test_a_table_without_images_and_a_pattern_without_files_are_one_line(tmp_path):
    pq.write_table(pa.table(dict(text=["a", "b"])), tmp_path / "words.parquet")
    with pytest.raises(ByolError, match=r"words.parquet has no column of encoded images"):
        list_source(str(tmp_path / "words.parquet"), 8)
    with pytest.raises(ByolError, match=r"no Parquet file matches .*nothing-\*.parquet"):
        list_source(str(tmp_path / "nothing-*.parquet"), 8)


def test_a_table_truncated_after_it_was_listed_is_one_line_naming_it(tmp_path):
    hub_table(tmp_path / "t.parquet", 0, 12, row_group=4)
    source = list_source(str(tmp_path / "t.parquet"), 8)
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[:len(data) // 2])
    for workers in (0, 2):
        with pytest.raises(ByolError, match=r"^row group 0 of .*t.parquet cannot be read \(.*\): the file is truncated "
                                            r"or not Parquet; export it again$"):
            decode_source(source, 8, workers=workers)
