"""Where a run's numbers go: metrics.jsonl always, TensorBoard event files when installed,
and W&B or MLflow when asked for (`logger`)."""

from __future__ import annotations

import json
from pathlib import Path

from byol.core.files import write_failure
from byol.train.trackers import Tracker

METRICS = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
COLLAPSE_KEYS = ("proj_std", "proj_rank", "feature_rank", "alignment", "uniformity")


def scalar_tag(key: str) -> str:
    """TensorBoard's name for a metrics key: knn_top1 -> knn/top1, proj_std -> collapse/proj_std."""
    if key.startswith("knn_"):
        return f"knn/{key[4:]}"
    return f"collapse/{key}" if key in COLLAPSE_KEYS else f"train/{key}"


class Logbook:
    """One JSON line per record, flushed at once (a crashed run keeps its curves), mirrored as
    TensorBoard scalars. `resume_bytes`/`resume_step` drop what a killed run wrote after its
    last checkpoint, so that a resumed run does not log those steps twice."""

    def __init__(self, folder: Path, tensorboard: bool = True, resume_bytes: int = 0, resume_step: int = 0,
                 tracker: Tracker | None = None) -> None:
        self.tracker = tracker  # W&B or MLflow (byol.train.trackers), given the same records
        self.file = (folder / METRICS).open("a+b")
        self.file.truncate(resume_bytes)
        self.file.seek(0, 2)
        self.board = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: pip install tensorboard
                pass
            else:
                # the checkpoint's own step was logged before it was written
                self.board = SummaryWriter(str(folder / TENSORBOARD_DIR), purge_step=resume_step + 1 if resume_step else None)

    def __call__(self, record: dict) -> None:
        try:
            self.file.write((json.dumps(record) + "\n").encode())
            self.file.flush()
        except OSError as err:
            raise write_failure(Path(self.file.name), err) from None
        if self.board is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.board.add_scalar(scalar_tag(key), value, record["step"])
            self.board.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def tell(self) -> int:
        """Bytes written so far: what a checkpoint records to resume from."""
        return self.file.tell()

    def close(self, summary: dict | None = None) -> None:
        """Close the files; the tracker also gets the run's summary when it ended finished."""
        self.file.close()
        if self.tracker is not None and summary is not None:
            self.tracker.finish(summary)
        if self.board is not None:
            self.board.close()
