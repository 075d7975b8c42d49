import io
import sys

from byol.core.progress import progress


def test_progress_in_a_log_writes_whole_lines(monkeypatch):
    log = io.StringIO()  # not a terminal, as a log file or a pipe
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(total=4, desc="pretrain", unit="step", mininterval=0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 4 and all(line.startswith("pretrain:") for line in lines)
    assert lines[-1].startswith("pretrain: 100%") and "4/4" in lines[-1]
    assert lines[-2] != lines[-1]  # the final state once, though tqdm redraws it on closing
