"""The README's Python API example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_trains_and_moves_the_target(small_folders, tmp_path, monkeypatch):
    code = re.search(r"## Python API\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    for original, smaller in (("width=0.25", "width=0.125"), ("batch_size=256", "batch_size=64"),
                              ("epochs, step = 10, 0", "epochs, step = 1, 0"),
                              ('"my_images/"', repr(str(small_folders[0])))):  # the same code path, smaller
        assert original in code
        code = code.replace(original, smaller)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    learner, batches = scope["learner"], scope["batches"]
    assert (tmp_path / "encoder.pt").exists() and scope["step"] == len(batches) == 4 and batches.skipped == 0
    online, target = learner.online.encoder.conv1.weight, learner.target.encoder.conv1.weight
    assert not torch.equal(online, target)  # trained, and the target followed only partly
