"""The README's Python API example runs as written."""

import math
import re
import subprocess
import sys
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(folder) -> str:
    """The README's example, on `folder` and smaller, but the same code path."""
    code = re.search(r"## Python API\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    for original, smaller in (("width=0.25", "width=0.125"), ("batch_size=256", "batch_size=64"),
                              ("epochs, step = 10, 0", "epochs, step = 1, 0"), ('"my_images/"', repr(str(folder)))):
        assert original in code
        code = code.replace(original, smaller)
    return code


def test_readme_python_example_trains_and_moves_the_target_by_the_ema_rule(small_folders, tmp_path, monkeypatch):
    """The target after the example equals xi_{k+1} = tau_k xi_k + (1 - tau_k) theta_{k+1} over the
    online weights of every step, with tau_k = 1 - 0.01 (cos(pi k / K) + 1) / 2."""
    from byol.methods.byol import BYOL

    monkeypatch.chdir(tmp_path)
    onlines, targets = [], []
    update = BYOL.update_target

    def recorded(self, tau):
        targets.append(self.target.encoder.conv1.weight.detach().clone())  # before the update
        onlines.append(self.online.encoder.conv1.weight.detach().clone())
        return update(self, tau)

    monkeypatch.setattr(BYOL, "update_target", recorded)
    scope = {"__name__": "__main__"}
    exec(compile(readme_example(small_folders[0]), "README.md", "exec"), scope)
    learner, batches = scope["learner"], scope["batches"]
    assert (tmp_path / "encoder.pt").exists() and scope["step"] == len(batches) == 4 and batches.skipped == 0
    steps = scope["epochs"] * len(batches)
    expected = targets[0].double()  # the target as built: a copy of the online network
    for k, online in enumerate(onlines):
        tau = 1 - (1 - 0.99) * (math.cos(math.pi * k / steps) + 1) / 2
        expected = tau * expected + (1 - tau) * online.double()
    assert len(onlines) == steps and not torch.equal(targets[0], onlines[-1])
    torch.testing.assert_close(learner.target.encoder.conv1.weight.double(), expected, rtol=1e-5, atol=1e-7)


def test_readme_python_example_runs_as_a_script_where_workers_are_spawned(small_folders, tmp_path):
    """macOS and Windows start loader workers by importing the script again: without its
    __main__ guard, each worker would start the training over and the run would fail."""
    script = tmp_path / "example.py"
    code = readme_example(small_folders[0]).replace("batch_size=64)", "batch_size=64, workers=1)")  # one spawn
    script.write_text("import multiprocessing\nmultiprocessing.set_start_method('spawn', force=True)\n" + code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "encoder.pt").exists()
