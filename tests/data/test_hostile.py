"""Messy and hostile folders: what decodes is used as RGB, the rest is skipped, listed and counted."""

import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from byol.config import Config
from byol.core.errors import ByolError
from byol.data.folders import list_images
from byol.data.memory import decode_into_memory
from byol.train.trainer import pretrain


def hostile_folder(root, small_folders):
    """Four real JPEG images plus one of every kind of trouble; returns (folder, usable, unusable)."""
    folder = root / "messy"
    folder.mkdir()
    for image in sorted((small_folders[0] / "disc").iterdir())[:4]:
        shutil.copy(image, folder / image.name)
    jpeg = (folder / sorted(os.listdir(folder))[0]).read_bytes()
    usable = {
        "alpha.png": lambda p: Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(p),
        "grey.png": lambda p: Image.new("L", (20, 20), 90).save(p),
        "cmyk.jpg": lambda p: Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(p),
        "sixteen.png": lambda p: Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(p),
        "palette.gif": lambda p: Image.new("P", (20, 20), 3).save(p),
        "huge.jpg": lambda p: Image.new("RGB", (4000, 3000), (0, 0, 200)).save(p, quality=50),
    }
    unusable = {
        "empty.jpg": lambda p: p.write_bytes(b""),
        "truncated.jpg": lambda p: p.write_bytes(jpeg[: len(jpeg) // 3]),
        "notes.jpg": lambda p: p.write_text("this is text, not a JPEG"),
        "loop.png": lambda p: os.symlink(p, p),  # a link to itself
        "dangling.png": lambda p: os.symlink(root / "nowhere.png", p),
        os.fsdecode(b"caf\xe9-latin1.png"): lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n garbage"),
    }
    for name, make in {**usable, **unusable}.items():
        make(folder / name)
    os.mkfifo(folder / "pipe.jpg")  # would block a decoder for ever; never listed
    (folder / "sub").mkdir()
    os.symlink(folder, folder / "sub" / "back")  # a folder loop: links to folders are not followed
    return folder, 4 + len(usable), sorted(unusable)


def test_every_decodable_image_is_used_as_rgb_and_the_rest_listed(tmp_path, small_folders):
    folder, usable, unusable = hostile_folder(tmp_path, small_folders)
    data = decode_into_memory(list_images(folder), size=16)
    assert data.images.shape == (usable, 3, 16, 16)
    assert sorted(os.path.basename(p) for p in data.skipped) == unusable
    kept = [p.name for p in list_images(folder).files if str(p) not in data.skipped]
    assert data.images[kept.index("alpha.png")].min() == 255  # transparent pixels become white, not black
    assert data.images[kept.index("sixteen.png")].min() == 255  # 16-bit white stays white (scaled, not clipped)
    assert data.images[kept.index("grey.png")].unique().tolist() == [90]  # grey in all three channels


def test_a_run_lists_the_skipped_files_or_with_strict_data_refuses_to_start(tmp_path, small_folders):
    folder, _, unusable = hostile_folder(tmp_path, small_folders)
    config = Config(data=str(folder), image_size=16, width=1 / 8, projector_hidden=16, predictor_hidden=16,
                    projection_dim=8, batch_size=4, steps=2, optimizer="adamw", lr=1e-3, warmup_epochs=0,
                    collapse_every=0).checked()
    result = pretrain(config, tmp_path / "run")
    assert result["skipped_files"] == len(unusable) and result["steps"] == 2
    listed = (tmp_path / "run" / "skipped_files.txt").read_bytes().decode("utf-8").splitlines()
    assert sorted(os.path.basename(p) for p in listed) == sorted(
        n.encode("utf-8", "backslashreplace").decode() for n in unusable)
    config.strict_data = True
    with pytest.raises(ByolError, match=f"{len(unusable)} image files cannot be decoded .* drop strict_data"):
        pretrain(config, tmp_path / "strict")


def test_a_folder_with_nothing_usable_is_one_clear_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"junk")
    os.mkfifo(tmp_path / "c.jpg")
    with pytest.raises(ByolError, match="none of the 2 image files under .* could be decoded"):
        decode_into_memory(list_images(tmp_path), size=8)


def test_images_beyond_the_decompression_bomb_limit_are_skipped(tmp_path, monkeypatch):
    Image.new("RGB", (300, 300)).save(tmp_path / "bomb.png")
    Image.new("RGB", (30, 30)).save(tmp_path / "fine.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 // 4)  # more than twice the limit is refused
    data = decode_into_memory(list_images(tmp_path), size=8)
    assert len(data.images) == 1 and [os.path.basename(p) for p in data.skipped] == ["bomb.png"]


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>


def without_root_file_access() -> None:
    """Drop the capabilities that let root read any file; the exec that follows loses them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_files_are_skipped(tmp_path):
    """Run as root too (as CI does): the decoding process gives up root's right to read anything."""
    Image.new("RGB", (10, 10)).save(tmp_path / "ok.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "locked.png")
    (tmp_path / "locked.png").chmod(0)
    code = ("import os, sys; from byol.data.folders import list_images; from byol.data.memory import decode_into_memory; "
            "data = decode_into_memory(list_images(sys.argv[1]), size=8); "
            "print(len(data.images), *[os.path.basename(p) for p in data.skipped])")
    checked = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             preexec_fn=without_root_file_access if os.geteuid() == 0 else None)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["1", "locked.png"]
