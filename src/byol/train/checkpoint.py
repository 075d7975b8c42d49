"""Writing and reading checkpoints: atomic writes (byol.files), loads that never unpickle code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from byol.errors import ByolError
from byol.files import replacing, save_torch

CHECKPOINT = "checkpoint.pt"  # a run's last checkpoint
HISTORY = "checkpoints"  # the folder of its recent ones
CHECKPOINT_FORMAT = "byol-checkpoint-1"  # the "format" entry of every checkpoint byol writes
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


def _reason(err: BaseException) -> str:
    """The line of an exception's message that says what is wrong, short."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if "unsupported" in line.lower() or "global" in line.lower()]
    reason = (telling or lines or [type(err).__name__])[0]
    return reason.split(" Please use")[0][:160]  # torch's advice there is to allow the code to run


def safe_load(path: str | Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, no code. Anything
    that is not such a file (empty, text, an image, a truncated archive) is one ByolError."""
    path = Path(path)
    if not path.is_file():
        raise ByolError(f"checkpoint {path} does not exist: pass a checkpoint file or a run folder")
    if path.stat().st_size == 0:
        raise ByolError(f"{path} is empty, not a checkpoint: pass the checkpoint.pt of a byol run folder")
    if not zipfile.is_zipfile(path):
        raise ByolError(f"{path} is not a PyTorch checkpoint (not a torch.save archive): pass the checkpoint.pt "
                        "of a byol run folder")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ByolError(f"refused to load {path}: it holds pickled objects beyond tensors and plain data "
                        f"({_reason(err)}); only load checkpoints written by byol") from None
    except Exception as err:  # torch.load's errors on a damaged archive vary by version and damage
        raise ByolError(f"{path} is not a readable checkpoint ({_reason(err)}): pass the checkpoint.pt of a "
                        "byol run folder") from None
