"""The report's figures, one function each, drawn on matplotlib Figures (no pyplot, no display).

Every run given is a line on the same axes, so several runs compare at a glance.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from byol.eval.collapse import RANK_MIN, STD_MIN
from byol.report.runs import Run


def _grid(panels: int, columns: int = 3) -> tuple[Figure, list]:
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * min(panels, columns), 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, min(panels, columns), squeeze=False).flatten()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, list(axes[:panels])


def _finish(ax, xlabel: str, title: str, runs: list[Run]) -> None:
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(runs) > 1 and ax.get_lines():
        ax.legend(fontsize="small")


def training_curves(runs: list[Run]) -> Figure:
    """Loss, learning rate and tau against optimiser steps."""
    figure, axes = _grid(3)
    for ax, key in zip(axes, ("loss", "lr", "tau")):
        for run in runs:
            ax.plot(*run.series("steps", key), label=run.name)
        _finish(ax, "step", key, runs)
    return figure


def knn_curves(runs: list[Run]) -> Figure:
    """k-NN top-1 against optimiser steps, epochs and training minutes (evaluation time excluded)."""
    figure, axes = _grid(3)
    for xlabel, ax, x_of in (("step", axes[0], lambda r: r["step"]), ("epoch", axes[1], lambda r: r["epoch"]),
                             ("training minutes", axes[2], lambda r: r["time_s"] / 60)):
        for run in runs:
            ax.plot([x_of(r) for r in run.knn], [r["knn_top1"] for r in run.knn], marker="o", label=run.name)
        _finish(ax, xlabel, "k-NN top-1 (%)", runs)
    return figure


COLLAPSE_PANELS = (  # key, title, log scale
    ("proj_std", "std of normalised projections", True),
    ("proj_rank", "effective rank of projections", True),
    ("feature_rank", "effective rank of encoder features", True),
    ("alignment", "alignment (lower: views agree)", False),
    ("uniformity", "uniformity (lower: spread out)", False),
)


def collapse_curves(runs: list[Run]) -> Figure:
    """The collapse statistics against steps, with the healthy level and the collapse line."""
    panels = [p for p in COLLAPSE_PANELS if any(run.series("collapse", p[0])[0] for run in runs)]
    figure, axes = _grid(len(panels))
    for ax, (key, title, log) in zip(axes, panels):
        for run in runs:
            ax.plot(*run.series("collapse", key), label=run.name)
        dim = runs[0].config.get("projection_dim")
        if key == "proj_std" and dim:
            ax.axhline(1 / math.sqrt(dim), color="green", linestyle="--", linewidth=1, label="1/sqrt(d): spread over the sphere")
            ax.axhspan(0, STD_MIN / math.sqrt(dim), color="red", alpha=0.15, label="collapse")
        if key == "proj_rank":
            ax.axhspan(0, RANK_MIN, color="red", alpha=0.15, label="collapse")
        if log and any(y > 0 for run in runs for y in run.series("collapse", key)[1]):
            ax.set_yscale("log")
        _finish(ax, "step", title, runs)
    axes[0].legend(fontsize="small")
    return figure


def embedding_scatter(points: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], method: str) -> Figure:
    """2-D embeddings of test features, one panel per run, coloured by class."""
    figure, axes = _grid(len(points))
    for ax, (name, (xy, labels, classes)) in zip(axes, points.items()):
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10" if len(classes) <= 10 else "tab20",
                             s=4, alpha=0.7, linewidths=0)
        if len(classes) <= 20:
            handles = [ax.scatter([], [], color=scatter.cmap(scatter.norm(i)), s=12, label=c)
                       for i, c in enumerate(classes)]
            ax.legend(handles=handles, fontsize="x-small", loc="best", markerscale=1.5)
        ax.set_title(f"{name}: {method} of test features")
        ax.set_xticks([])
        ax.set_yticks([])
    return figure


def sweep_curves(results: dict[str, dict[str, dict]], key: str, baseline: str) -> Figure:
    """k-NN top-1 (mean, and the seeds' sd as a bar) of each method against the swept value:
    on a log axis for numbers spanning 8x or more, in the given order for names; the
    `baseline` row (the random encoder) dashed."""
    labels = list(results)
    values = [label.partition("=")[2] for label in labels]
    numbers = [_number(v) for v in values]
    numeric = all(n is not None for n in numbers)
    figure, (ax,) = _grid(1)
    for method in results[labels[0]]:
        means = [results[label][method]["knn_top1"] for label in labels]
        sds = [results[label][method].get("knn_top1_sd") or 0.0 for label in labels]
        ax.errorbar(numbers if numeric else range(len(values)), means, yerr=sds, marker="o", capsize=3, label=method,
                    linestyle="--" if method == baseline else "-")
    if numeric and min(numbers) > 0 and max(numbers) >= 8 * min(numbers):
        ax.set_xscale("log", base=2)
    ax.set_xticks(numbers if numeric else range(len(values)), values)
    ax.set_xlabel(key)
    ax.set_ylabel("k-NN top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
