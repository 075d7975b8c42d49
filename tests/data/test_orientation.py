"""Images are decoded upright, as their EXIF orientation says (phone photos store them sideways)."""

import numpy as np
import pytest
from PIL import Image

from byol.data.decode import decode_square, open_rgb
from byol.data.folders import list_images

ORIENTATION = 0x0112
UPRIGHT = {  # EXIF orientation -> the stored pixels turned upright, written out from the EXIF spec
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, k=-1),  # stored turned 90 degrees counter-clockwise: turn it clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, k=1),  # stored turned 90 degrees clockwise
}


def _stored(path, pixels: np.ndarray, orientation: int, format: str = "PNG") -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, format=format, exif=exif)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_every_exif_orientation_decodes_upright(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    _stored(tmp_path / "photo.png", stored, orientation)
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "photo.png")), UPRIGHT[orientation](stored))


def test_a_phone_photo_held_upright_trains_upright(tmp_path):
    """A 40-wide, 20-tall JPEG stored on its side (orientation 6, as phones write it): every path
    that decodes a file (listing and squares for evaluation, embed, predict) sees it landscape,
    its left half red and its right half blue."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, :20, 0] = upright[:, 20:, 2] = 255
    stored = np.rot90(upright, k=1)  # how the camera wrote it: 20 wide, 40 tall
    _stored(tmp_path / "phone.jpg", np.ascontiguousarray(stored), 6, format="JPEG")
    assert open_rgb(tmp_path / "phone.jpg").size == (40, 20)
    square = decode_square(list_images(tmp_path).files[0], 8).astype(int)
    assert square[:, :3, 0].min() > 200 and square[:, :3, 2].max() < 60  # left: red
    assert square[:, -3:, 2].min() > 200 and square[:, -3:, 0].max() < 60  # right: blue


def test_a_decode_cached_by_an_older_decoder_is_not_reused(tmp_path, monkeypatch):
    """Images decoded into the cache before orientation was applied are decoded again."""
    from byol.data import decode, folders, memory

    upright = np.zeros((16, 32, 3), np.uint8)
    upright[:, :16, 0] = 255
    (tmp_path / "photos").mkdir()
    _stored(tmp_path / "photos" / "phone.png", np.ascontiguousarray(np.rot90(upright, k=1)), 6)
    with monkeypatch.context() as before:
        before.setattr(memory, "DECODER", "sideways")
        before.setattr(decode.ImageOps, "exif_transpose", lambda img: img)
        sideways = memory.decode_into_memory(folders.list_images(tmp_path / "photos"), 8).images[0]
    now = memory.decode_into_memory(folders.list_images(tmp_path / "photos"), 8).images[0]
    assert sideways[0, -3:, :].float().mean() > 200 and sideways[0, :3, :].float().mean() < 60  # red at the bottom
    assert now[0, :, :3].float().mean() > 200 and now[0, :, -3:].float().mean() < 60  # red on the left
