"""A memory format whose training step crashes the process is found by a trial in a child
process, and the run falls back to one that does not, or is refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byol.config import Config
from byol.core.errors import ByolError
from byol.train import layout
from byol.train.trainer import pretrain

TINY = dict(width=0.125, projector_hidden=32, projection_dim=16, predictor_hidden=32, batch_size=8, steps=2,
            log_every=1, device="cpu", tensorboard=False, precision="fp32")


@pytest.fixture
def crashing_python(tmp_path, monkeypatch) -> Path:
    """The trial's interpreter, wrapped: a trial whose spec matches CRASH_ON dies by a real
    SIGSEGV, as the broken kernels end it; every trial started is counted in `trials`."""
    wrapper, trials = tmp_path / "python", tmp_path / "trials"
    wrapper.write_text(f"""#!/bin/sh
spec=$(cat)
echo x >> {trials}
case "$spec" in *$CRASH_ON*) kill -SEGV $$;; esac
printf '%s' "$spec" | exec {sys.executable} "$@"
""")
    wrapper.chmod(0o755)
    monkeypatch.setattr(layout.sys, "executable", str(wrapper))
    monkeypatch.setenv("BYOL_LAYOUT_CACHE", str(tmp_path / "layouts.json"))
    return trials


def _trials(counted: Path) -> int:
    return len(counted.read_text().split()) if counted.exists() else 0


def test_a_format_whose_step_crashes_falls_back_to_contiguous_and_is_remembered(
        small_folders, tmp_path, crashing_python, monkeypatch, capsys):
    monkeypatch.setenv("CRASH_ON", '"channels_last": true')
    config = Config(data=str(small_folders[0]), **TINY)
    pretrain(config, tmp_path / "run")
    assert "channels_last is off: a trial step at this run's shapes killed by SIGSEGV" in capsys.readouterr().err
    assert _trials(crashing_python) == 2  # channels_last died, contiguous passed
    verdicts = sorted(json.loads(Path(os.environ["BYOL_LAYOUT_CACHE"]).read_text()).values())
    assert verdicts == [[False, "killed by SIGSEGV"], [True, "ok"]]
    pretrain(config, tmp_path / "again")
    assert _trials(crashing_python) == 2  # the same shapes on the same CPU: no new trial


def test_a_step_that_crashes_in_every_format_is_refused_in_one_line(small_folders, tmp_path, crashing_python,
                                                                    monkeypatch):
    monkeypatch.setenv("CRASH_ON", '"channels_last"')
    with pytest.raises(ByolError, match="killed by SIGSEGV in a trial process on this CPU, in every memory format"):
        pretrain(Config(data=str(small_folders[0]), **TINY), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_format_that_passes_its_trial_is_kept(small_folders, tmp_path, crashing_python, monkeypatch):
    monkeypatch.setenv("CRASH_ON", "no spec holds this")
    config = Config(data=str(small_folders[0]), **TINY)
    assert layout.choose_channels_last(config, 8) == (True, None)
    assert _trials(crashing_python) == 1


def test_the_trial_takes_every_view_size_of_progressive_resizing():
    assert layout.view_sizes(Config(image_size=64, start_size=32)) == [32, 40, 48, 56, 64]
    assert layout.view_sizes(Config(image_size=72)) == [72]


def test_the_shape_that_segfaulted_on_zen_4_trains(tmp_path):
    """`--width 0.125 --batch-size 8 --set image_size=72` ended with exit 139 in loss.backward on
    AMD Zen 4 (AVX-512) with channels_last; on every CPU it must now train."""
    from PIL import Image

    (tmp_path / "data").mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(16):
        pixels = torch.randint(0, 256, (80, 80, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(tmp_path / "data" / f"{i}.png")
    done = subprocess.run([sys.executable, "-m", "byol", "pretrain", "--data", str(tmp_path / "data"), "--out",
                           str(tmp_path / "run"), "--width", "0.125", "--batch-size", "8", "--set", "image_size=72",
                           "--set", "steps=3", "--set", "tensorboard=false"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
