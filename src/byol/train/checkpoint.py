"""Writing a run's checkpoints: atomic writes (byol.core.files), a history of the newest, and finding the last."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from byol.core.errors import ByolError
from byol.core.files import replacing, save_torch

CHECKPOINT = "checkpoint.pt"  # a run's last checkpoint
HISTORY = "checkpoints"  # the folder of its recent ones
HISTORY_PATTERN = "step-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].pt"  # what history_name writes


def history_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def save_with_history(obj: Any, latest: Path, history: Path, keep: int) -> Path:
    """Write `obj` atomically as `history` (e.g. checkpoints/step-00000500.pt), point `latest`
    at it with a hard link (renamed into place, so also atomic), and delete all but the `keep`
    newest checkpoints beside `history` (files named as `history_name` names them, no others).
    Returns the file written."""
    save_torch(obj, history)
    try:
        with replacing(latest) as link:
            link.unlink()
            os.link(history, link)
    except ByolError:  # a filesystem without hard links: a second copy
        save_torch(obj, latest)
    for old in sorted(history.parent.glob(HISTORY_PATTERN))[:-keep]:
        old.unlink()
    return history


def last_checkpoint(run: Path) -> Path | None:
    """RUN/checkpoint.pt, or the newest of RUN/checkpoints/ when a kill came between writing
    it and linking checkpoint.pt to it; None when the run has none."""
    if (run / CHECKPOINT).exists():
        return run / CHECKPOINT
    history = sorted((run / HISTORY).glob(HISTORY_PATTERN))
    return history[-1] if history else None
