"""The report's figures carry the logged series; checked on the Figure objects, not on pixels."""

import json
import math

import numpy as np
import pytest

from byol.core.errors import ByolError
from byol.report.plots import collapse_curves, embedding_scatter, knn_curves, training_curves
from byol.report.runs import read_run


def write_run(path, scale: float, damaged_tail: bool = False):
    path.mkdir()
    records = [dict(step=s, epoch=s / 10, loss=2 - scale * s / 10, lr=0.1 * s, tau=0.99, img_s=100.0, time_s=s * 1.5)
               for s in (10, 20, 30)]
    records += [dict(step=s, epoch=s / 10, proj_std=0.03 * scale, proj_rank=10.0 * scale, feature_rank=5.0,
                     alignment=0.5, uniformity=-2.0) for s in (10, 30)]
    records += [dict(step=30, epoch=3, time_s=45.0, knn_top1=40 * scale, knn_top5=90.0)]
    text = "".join(json.dumps(r) + "\n" for r in records) + ('{"step": 4' if damaged_tail else "")
    (path / "metrics.jsonl").write_text(text)
    (path / "config.yaml").write_text("projection_dim: 16\nbatch_size: 32\n")
    return read_run(path)


def test_every_run_is_a_line_on_the_same_axes(tmp_path):
    runs = [write_run(tmp_path / "a", 1.0), write_run(tmp_path / "b", 0.5, damaged_tail=True)]
    loss, lr, tau = training_curves(runs).axes[:3]
    assert [line.get_label() for line in loss.get_lines()] == ["a", "b"]
    assert list(loss.get_lines()[1].get_ydata()) == pytest.approx([1.5, 1.0, 0.5])
    assert list(lr.get_lines()[0].get_xdata()) == [10, 20, 30] and lr.get_title() == "lr"
    by_step, by_epoch, by_time = knn_curves(runs).axes[:3]
    assert list(by_time.get_lines()[0].get_xdata()) == [0.75] and list(by_epoch.get_lines()[1].get_ydata()) == [20.0]
    assert list(by_step.get_lines()[0].get_xdata()) == [30] and by_step.get_xlabel() == "step"


def test_the_collapse_panels_show_the_statistics_with_the_healthy_level_and_the_collapse_band(tmp_path):
    run = write_run(tmp_path / "a", 1.0)
    std_panel = collapse_curves([run]).axes[0]
    data_line, healthy = std_panel.get_lines()
    assert list(data_line.get_ydata()) == pytest.approx([0.03, 0.03])
    assert healthy.get_ydata()[0] == pytest.approx(1 / math.sqrt(16))
    band = std_panel.patches[0].get_extents()  # the collapse band is drawn below the healthy line
    assert len(std_panel.patches) == 1 and band.height > 0


def test_the_embedding_has_one_panel_per_run_coloured_by_class():
    xy = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.arange(30) % 3
    figure = embedding_scatter({"a": (xy, labels, ["x", "y", "z"]), "b": (xy, labels, ["x", "y", "z"])}, "t-SNE")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["a: t-SNE of test features", "b: t-SNE of test features"]
    assert np.array_equal(panels[0].collections[0].get_offsets(), xy)
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == ["x", "y", "z"]


def test_runs_with_the_same_folder_name_are_labelled_by_their_parent(tmp_path):
    from byol.report.page import run_labels

    assert run_labels([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]
    assert run_labels([tmp_path / "byol" / "seed0", tmp_path / "simclr" / "seed0"]) == ["byol/seed0", "simclr/seed0"]


def test_a_damaged_metrics_file_is_a_one_line_error(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ByolError, match="line 1 is not JSON: the file was damaged"):
        read_run(run)
