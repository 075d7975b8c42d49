"""Reading a run folder back: its config, summary and logged series."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from byol.config import resolve
from byol.core.errors import ByolError
from byol.eval.protocols import read_result
from byol.train.logbook import METRICS
from byol.train.summary import SUMMARY, read_summary


@dataclass
class Run:
    """One run folder, its logged records split by kind."""

    path: Path
    config: dict
    summary: dict
    steps: list[dict] = field(default_factory=list)  # loss, lr, tau, img/s
    collapse: list[dict] = field(default_factory=list)  # proj_std, proj_rank, ...
    knn: list[dict] = field(default_factory=list)  # knn_top1, knn_top5 by epoch and time
    evaluations: dict[str, dict] = field(default_factory=dict)  # eval_*.json written by `byol eval`

    name: str = ""  # the label in tables and legends

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name

    def series(self, kind: str, key: str) -> tuple[list[float], list[float]]:
        """(x, y) of `key` against step for the records of `kind`."""
        records = [r for r in getattr(self, kind) if r.get(key) is not None]  # tau is null without a target
        return [r["step"] for r in records], [r[key] for r in records]


def read_run(path: str | Path, name: str = "") -> Run:
    path = Path(path)
    metrics = path / METRICS
    if not path.is_dir():
        raise ByolError(f"run folder {path} does not exist: pass the --out folder of a `byol pretrain` run")
    if not metrics.is_file() or metrics.stat().st_size == 0:
        raise ByolError(f"{path} has no {METRICS}: it is not a byol run folder, or the run logged nothing yet")
    lines = metrics.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only the last line can be cut, by a run killed mid-write
                raise ByolError(f"{metrics} line {number} is not JSON: the file was damaged") from None
    config = resolve(config_file=str(path / "config.yaml")).to_dict() if (path / "config.yaml").is_file() else {}
    summary = read_summary(path) if (path / SUMMARY).is_file() else {}
    evaluations = {p.stem: read_result(p) for p in sorted(path.glob("eval_*.json"))}
    return Run(path, config, summary,
               steps=[r for r in records if "loss" in r],
               collapse=[r for r in records if "proj_std" in r],
               knn=[r for r in records if "knn_top1" in r],
               evaluations=evaluations, name=name)
