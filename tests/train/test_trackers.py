"""W&B and MLflow, offline: what a run logs there, read back with each library's own reader,
equals metrics.jsonl; a tracker that cannot start is one line before training."""

import json
import struct
import sys
from pathlib import Path

import pytest

from byol.config import Config
from byol.core.errors import ByolError
from byol.train.trainer import pretrain

TINY = dict(image_size=16, width=0.125, projector_hidden=32, projection_dim=16, predictor_hidden=32, batch_size=16,
            steps=6, log_every=2, collapse_every=3, device="cpu", tensorboard=False, precision="fp32")


def metrics(run: Path, key: str) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line[key]) for line in lines if key in line]


def wandb_history(run: Path) -> list[dict]:
    """The history records of the offline run's transaction log (.wandb): 32-KiB blocks of
    chunks (crc, length, kind: full, first, middle, last) holding W&B's protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = next(run.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    position, records, pending = 7, [], b""  # after the file's header
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a chunk header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    history = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return history


def test_wandb_offline_gets_the_loss_series_of_metrics_jsonl(small_folders, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    pretrain(Config(data=str(small_folders[0]), logger="wandb", **TINY), run)
    history = wandb_history(run)
    assert [(h["_step"], h["loss"]) for h in history if "loss" in h] == metrics(run, "loss")
    assert [(h["_step"], h["proj_std"]) for h in history if "proj_std" in h] == metrics(run, "proj_std")
    assert json.loads((run / "tracker.json").read_text())["logger"] == "wandb"


def test_mlflow_gets_the_loss_series_the_config_and_the_summary(small_folders, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    summary = pretrain(Config(data=str(small_folders[0]), logger="mlflow", **TINY), run)
    client = MlflowClient(store)
    run_id = json.loads((run / "tracker.json").read_text())["id"]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == metrics(run, "loss")
    assert client.get_run(run_id).data.params["batch_size"] == "16"
    logged = json.loads(Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text())
    assert logged["steps"] == summary["steps"] == 6


def test_a_tracker_that_is_not_installed_is_one_line_before_training(small_folders, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ByolError, match=r"logger=wandb needs wandb: pip install 'byol\[wandb\]', or set logger=none"):
        pretrain(Config(data=str(small_folders[0]), logger="wandb", **TINY), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_tracker_that_cannot_start_is_one_line_and_the_run_resumes_without_it(small_folders, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    config = Config(data=str(small_folders[0]), logger="mlflow", **TINY)
    with pytest.raises(ByolError, match="logger=mlflow could not start .*check MLFLOW_TRACKING_URI, or set logger=none"):
        pretrain(config, tmp_path / "run")
    config.logger = "none"  # a runtime key: the same run goes on without the tracker
    assert pretrain(config, tmp_path / "run")["steps"] == 6


def test_a_tracker_that_fails_mid_run_says_so_once_and_the_run_finishes(small_folders, tmp_path, monkeypatch,
                                                                        capsys):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    def server_gone(*args, **kwargs):
        raise ConnectionError("the tracking server went away")

    monkeypatch.setattr(mlflow, "log_metrics", server_gone)
    run = tmp_path / "run"
    assert pretrain(Config(data=str(small_folders[0]), logger="mlflow", **TINY), run)["steps"] == 6
    err = capsys.readouterr().err
    assert err.count("logger=mlflow stopped logging (ConnectionError: the tracking server went away)") == 1
    assert [step for step, _ in metrics(run, "loss")] == [2, 4, 6] and (run / "summary.json").is_file()
