import pytest
import torch

from byol.core.errors import ByolError
from byol.data.folders import list_images
from byol.data.memory import ImageTensor, decode_into_memory
from byol.eval.features import extract_features, features_and_labels, labelled_pair


def images(classes):
    return ImageTensor(torch.zeros(len(classes) * 2, 3, 8, 8, dtype=torch.uint8),
                       torch.arange(len(classes)).repeat_interleave(2), classes)


def test_features_are_raw_encoder_outputs_in_eval_mode():
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5), torch.nn.BatchNorm1d(5)).train()
    data = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    features = extract_features(encoder, data, lambda x: x.float() / 255, batch_size=4)
    encoder.eval()
    assert torch.allclose(features, encoder(data.float() / 255), atol=1e-6)
    assert encoder[2].num_batches_tracked == 0  # BatchNorm statistics untouched


@pytest.mark.parametrize("train, test, message", [
    (["cat", "dog"], ["cat", "cow"], r"differ from those of train \(only in train \['dog'\], only in test \['cow'\]\)"),
    (["cat"], ["cat"], r"train has a single class \('cat'\): a classifier needs at least two"),
    ([], ["cat"], "train has no class sub-folders"),
])
def test_unusable_label_sets_are_refused_in_one_line(train, test, message):
    with pytest.raises(ByolError, match=message) as err:
        labelled_pair(images(train), images(test), "train", "test")
    assert "\n" not in str(err.value)


def test_unlabelled_images_never_reach_the_bank_and_a_split_without_labels_says_so():
    # torchvision's STL-10 "train+unlabeled": 4 labelled images, then 6 labelled -1
    mixed = ImageTensor(torch.arange(10).view(10, 1, 1, 1).expand(10, 3, 8, 8).to(torch.uint8),
                        torch.tensor([0, 1, 0, 1] + [-1] * 6), ["airplane", "bird"])
    train, test = labelled_pair(mixed, images(["airplane", "bird"]), "stl10", "stl10:test")
    assert train.labels.tolist() == [0, 1, 0, 1] and train.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    unlabelled = ImageTensor(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.full((3,), -1), ["airplane", "bird"])
    with pytest.raises(ByolError, match=r"stl10:unlabeled has no labelled images \(all carry label -1"):
        labelled_pair(unlabelled, images(["airplane", "bird"]), "stl10:unlabeled", "test")


def test_a_flat_folder_is_refused_as_an_evaluation_split(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (9, 9)).save(tmp_path / f"{i}.png")
    with pytest.raises(ByolError, match="has no class sub-folders"):
        labelled_pair(list_images(tmp_path), images(["a", "b"]), str(tmp_path), "test")


def test_streamed_files_give_the_features_of_the_decoded_images_and_drop_what_does_not_decode(
        small_folders, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(small_folders[1], folder)
    (folder / "disc" / "broken.jpg").write_bytes(b"not a jpeg")
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    transform = lambda x: x.float() / 255  # noqa: E731
    decoded = decode_into_memory(list_images(folder), size=24)
    expected, expected_labels = features_and_labels(encoder, decoded, transform, 24)
    streamed, labels = features_and_labels(encoder, list_images(folder), transform, 24, batch_size=7, workers=0)
    assert len(streamed) == len(decoded.images) == 64  # the broken file is left out, with its label
    assert torch.allclose(streamed, expected, atol=1e-6) and torch.equal(labels, expected_labels)


def test_inspect_and_the_report_decode_their_sample_alone_not_the_whole_folder(small_folders, tmp_path, monkeypatch):
    """256 training images; inspect's sample of 40 and the report's of 30 decode 40 and 30 files."""
    from byol.data import decode
    from byol.eval.inspect import inspect_checkpoint
    from byol.report.embedding import sample_test_features
    from tests.test_export import write_run

    log, real = tmp_path / "decoded.txt", decode.decode_square

    def counted(path, size):  # runs in the loader's worker processes too: a file counts for all
        with log.open("a") as file:
            file.write(f"{path}\n")
        return real(path, size)

    def decoded() -> list[str]:
        files = log.read_text().splitlines()
        log.unlink()
        return files

    monkeypatch.setattr(decode, "decode_square", counted)
    run = write_run(tmp_path / "run", width=0.125, test=str(small_folders[0]))
    result = inspect_checkpoint(run, str(small_folders[0]), images=40)
    files = decoded()
    assert result["images"] == 40 and len(files) == len(set(files)) == 40
    features, labels, classes = sample_test_features(run, limit=30)
    assert features.shape[0] == len(labels) == len(decoded()) == 30
    assert classes == list_images(small_folders[0]).classes
