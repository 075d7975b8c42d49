"""What a pretraining checkpoint holds, field by field, and the one way to write and read it.

A checkpoint is everything a run needs to continue exactly: the learner's weights, the
optimiser and grad scaler, the budget's position, the run's progress (`Progress`), the
collapse alarm's count, the metrics file's length, every process's RNG states and the identity of the data. On disk it
is a plain dict (torch.save) of tensors and Python values, so that it loads with
weights_only=True; `Checkpoint` is that dict as a type.

A run folder holds its last checkpoint as RUN/checkpoint.pt, a hard link to the newest of
RUN/checkpoints/step-NNNNNNNN.pt, of which the `keep` newest are kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byol import config as cfg
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import keep_newest, link_into_place, safe_load, save_torch

FORMAT = "byol-checkpoint-1"  # the "format" entry of every checkpoint byol writes
LATEST = "checkpoint.pt"  # a run's last checkpoint
HISTORY = "checkpoints"  # the folder of its recent ones
HISTORY_PATTERN = "step-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].pt"  # what history_name writes


@dataclass
class Progress:
    """Where a run stands: the counters that a resume continues from."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches of the current epoch already drawn
    skipped_steps: int = 0  # steps left out for a non-finite loss (nonfinite=skip)
    train_seconds: float = 0.0  # training time, k-NN evaluation left out
    data_changes: list[dict] = field(default_factory=list)  # resumes on changed data: step, files before and after


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly where it was saved."""

    learner: dict[str, Any]  # the learner's state_dict: online, predictor, target
    config: dict[str, Any]  # the run's Config as a dict
    optimizer: dict[str, Any]
    scaler: dict[str, Any]  # the fp16 grad scaler's state (unused otherwise)
    budget: dict[str, Any]  # byol.train.budget.Budget's fields
    progress: Progress
    collapse_strikes: int  # consecutive collapse probes that raised an alarm
    metrics_bytes: int  # the length of RUN/metrics.jsonl at this step
    rng: list[dict]  # every process's RNG states, by rank
    data: dict | None = None  # the files listed and their digest; None where a checkpoint predates it

    def to_dict(self) -> dict[str, Any]:
        """The dict that torch.save writes: the progress fields at the top level, and the format."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "progress"}
        return fields | dataclasses.asdict(self.progress) | dict(format=FORMAT)

    @classmethod
    def from_dict(cls, content: Any, source: Path) -> Checkpoint:
        """The checkpoint in a loaded file; anything else (another file, an older byol's) is one ByolError."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("progress", "data")]
        progress = [f.name for f in dataclasses.fields(Progress) if f.name != "data_changes"]
        whole = (isinstance(content, dict) and content.get("format") == FORMAT
                 and all(name in content for name in names + progress) and "reached" in content["budget"])
        if not whole:
            raise ByolError(f"{source} is not a byol checkpoint (or one written by an older byol): pass the "
                            f"{LATEST} of a byol run folder")
        return cls(**{name: content[name] for name in names}, data=content.get("data"),
                   progress=Progress(**{name: content[name] for name in progress},
                                     data_changes=list(content.get("data_changes", []))))

    def run_config(self, source: Path) -> Config:
        """The run's Config (keys added to byol since the run was saved take their defaults)."""
        return cfg.apply(Config(), self.config, str(source))


def history_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def is_checkpoint_file(path: Path) -> bool:
    """Whether `path` holds a checkpoint that byol wrote (whole or not)."""
    try:
        content = safe_load(path)
    except ByolError:
        return False
    return isinstance(content, dict) and content.get("format") == FORMAT


def write_checkpoint(checkpoint: Checkpoint, run: Path, keep: int) -> Path:
    """Write `checkpoint` atomically as RUN/checkpoints/step-NNNNNNNN.pt, point RUN/checkpoint.pt
    at it with a hard link (renamed into place, so also atomic), and delete all but the `keep`
    newest checkpoints there (files named as `history_name` names them, no others). Returns
    the file written."""
    content = checkpoint.to_dict()
    history = run / HISTORY / history_name(checkpoint.progress.step)
    save_torch(content, history)
    try:
        link_into_place(history, run / LATEST)
    except ByolError:  # a filesystem without hard links: a second copy
        save_torch(content, run / LATEST)
    keep_newest(history.parent, HISTORY_PATTERN, keep)
    return history


def last_checkpoint(run: Path) -> Path | None:
    """RUN/checkpoint.pt, or the newest of RUN/checkpoints/ when a kill came between writing
    it and linking checkpoint.pt to it; None when the run has none."""
    if (run / LATEST).exists():
        return run / LATEST
    history = sorted((run / HISTORY).glob(HISTORY_PATTERN))
    return history[-1] if history else None


def read_checkpoint(path: Path) -> tuple[Checkpoint, Path]:
    """The checkpoint in a run folder (its last one) or in a checkpoint file, and the file it came from."""
    path = Path(path)
    file = (last_checkpoint(path) or path / LATEST) if path.is_dir() else path
    return Checkpoint.from_dict(safe_load(file), file), file
