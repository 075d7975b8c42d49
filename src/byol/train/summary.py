"""What a finished run's summary.json holds, and how it is read back (compare, report)."""

from __future__ import annotations

from pathlib import Path

from byol import config as cfg
from byol.config import Field

SUMMARY = "summary.json"
FIELDS = {  # the keys readers use; a run also records more (loader_wait, skipped_files, data_changes, ...)
    "steps": Field((int,), cfg.number(0, cfg.LARGE, "a number of steps")),
    "epochs": Field((int, float), cfg.number(0, cfg.LARGE, "a number of epochs")),
    "train_seconds": Field((int, float), cfg.number(0, cfg.LARGE, "seconds of training")),
    "img_s": Field((int, float), cfg.number(0, cfg.LARGE, "images a second")),
    "knn": Field((dict,), cfg.SCORES, required=False),
}


def read_summary(run: Path) -> dict:
    """RUN/summary.json, checked field by field (a damaged one is one line naming the field)."""
    return cfg.read_record(run / SUMMARY, FIELDS, f"remove it and run `byol pretrain --resume {run}` to write it "
                           "again")
