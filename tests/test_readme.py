"""The README's Python API example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_trains_and_moves_the_target(tmp_path, monkeypatch):
    code = re.search(r"## Python API\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    code = code.replace('width=0.25', 'width=0.125')  # smaller, same code path
    monkeypatch.chdir(tmp_path)
    batches = [torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8) for _ in range(3)]
    scope = {"batches": batches, "total_steps": 3}
    exec(compile(code, "README.md", "exec"), scope)
    learner = scope["learner"]
    assert (tmp_path / "encoder.pt").exists()
    online, target = learner.online.encoder.conv1.weight, learner.target.encoder.conv1.weight
    assert not torch.equal(online, target)  # trained, and the target followed only partly
