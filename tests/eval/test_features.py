import pytest
import torch

from byol.data.folders import ImageTensor
from byol.errors import ByolError
from byol.eval.features import check_labelled_pair, extract_features


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
        check_labelled_pair(images(train), images(test), "train", "test")
    assert "\n" not in str(err.value)
