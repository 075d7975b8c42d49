"""Experiment trackers beside metrics.jsonl: Weights & Biases or MLflow (`--set logger=...`).

Each is the library's own client, installed as an extra, configured as its users configure
it (WANDB_PROJECT, WANDB_MODE, `wandb login`; MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME). A
tracker logs the config when the run starts, every numeric value of metrics.jsonl at its
step, and the summary at the end. One that cannot start (not installed, no login, no
server) is one line before training; one that fails mid-run says so once and stops, and the
run and its own files go on. RUN/tracker.json keeps the tracker's run id, so that a resumed
run logs into the same tracker run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from byol.core.errors import ByolError
from byol.core.files import write_json
from byol.core.progress import note

STATE = "tracker.json"


def _state(out: Path, name: str) -> dict:
    try:
        state = json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("logger") == name else {}


class WandbRun:
    def __init__(self, out: Path, config: dict) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "byol"), name=out.name, dir=str(out),
                              config=config, id=_state(out, "wandb").get("id"), resume="allow")
        self.id = self.run.id

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def finish(self, summary: dict) -> None:
        self.run.summary.update(summary)
        self.run.finish()


class MlflowRun:
    def __init__(self, out: Path, config: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        known = _state(out, "mlflow").get("id")
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "byol"))
        self.id = mlflow.start_run(run_id=known, run_name=None if known else out.name).info.run_id
        if not known:
            mlflow.log_params({key: str(value)[:500] for key, value in config.items()})

    def log(self, scalars: dict, step: int) -> None:
        self.mlflow.log_metrics(scalars, step=step)

    def finish(self, summary: dict) -> None:
        self.mlflow.log_dict(summary, "summary.json")
        self.mlflow.end_run()


CLIENTS = {"wandb": WandbRun, "mlflow": MlflowRun}
HOW = {"wandb": "log in (wandb login) or set WANDB_MODE=offline", "mlflow": "check MLFLOW_TRACKING_URI"}


class Tracker:
    """The run's tracker, or none: `log` and `finish` never raise."""

    def __init__(self, name: str, out: Path, config: dict) -> None:
        self.name, self.client = name, None
        if name == "none":
            return
        try:
            __import__(name)
        except ImportError:
            raise ByolError(f"logger={name} needs {name}: pip install 'byol[{name}]', or set logger=none") from None
        try:
            self.client = CLIENTS[name](out, config)
        except Exception as err:  # each library's own errors: no login, no server, a bad URI
            raise ByolError(f"logger={name} could not start ({type(err).__name__}: {str(err)[:120]}): "
                            f"{HOW[name]}, or set logger=none") from None
        write_json(out / STATE, dict(logger=name, id=self.client.id))

    def log(self, record: dict) -> None:
        scalars = {key: value for key, value in record.items()
                   if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        self._safely(lambda: self.client.log(scalars, record["step"]))

    def finish(self, summary: dict) -> None:
        self._safely(lambda: self.client.finish(summary))

    def _safely(self, call) -> None:
        if self.client is None:
            return
        try:
            call()
        except Exception as err:  # a tracker's failure must not end the run
            note(f"warning: logger={self.name} stopped logging ({type(err).__name__}: {str(err)[:120]}); "
                 "metrics.jsonl and the run go on")
            self.client = None
