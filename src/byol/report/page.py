"""`byol report`: PNG figures plus one self-contained HTML page and a Markdown page."""

from __future__ import annotations

import base64
import html
import io
import math
from functools import partial
from pathlib import Path

import torch
import yaml
from matplotlib.figure import Figure

from byol.core.files import claim_folder, finish_writing, write_together
from byol.core.locks import folder_lock
from byol.report.embedding import embed_2d, sample_test_features
from byol.report.plots import collapse_curves, embedding_scatter, knn_curves, training_curves
from byol.report.runs import Run, read_run


def _last(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


def _score(run: Run, evaluation: str, encoder: str) -> float | None:
    """Top-1 of `byol eval` (eval_knn.json, eval_linear.json) for the pretrained or random encoder."""
    return (run.evaluations.get(evaluation, {}).get(encoder) or {}).get("top1")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_rows(runs: list[Run]) -> list[dict[str, str]]:
    """One row per run: config, data, time, throughput and final metrics."""
    rows = []
    for run in runs:
        c, s = run.config, run.summary
        knn = s.get("knn") or {}
        std = _last(run.collapse, "proj_std")
        dim = c.get("projection_dim") or 1
        seconds = s.get("train_seconds", _last(run.steps, "time_s"))  # a stopped run has no summary
        rows.append({
            "run": run.name,
            "data": str(c.get("data", "")),
            "encoder": f"{c.get('encoder', '')} x{c.get('width', '')}",
            "batch": str(c.get("batch_size", "")),
            "optimizer": f"{c.get('optimizer', '')} lr {c.get('lr', '')}",
            "tau_base": str(c.get("tau_base", "")),
            "steps": str(s.get("steps", _last(run.steps, "step") or "")),
            "epochs": str(s.get("epochs", "")),
            "train min": _fmt(seconds / 60 if seconds is not None else None, 1),
            "img/s": str(s.get("img_s", "")),
            "k-NN top-1": _fmt(knn.get("top1", _last(run.knn, "knn_top1"))),
            "k-NN random init": _fmt(_score(run, "eval_knn", "random_init")),
            "linear top-1": _fmt(_score(run, "eval_linear", "pretrained")),
            "linear random init": _fmt(_score(run, "eval_linear", "random_init")),
            "proj_std*sqrt(d)": _fmt(std * math.sqrt(dim) if std is not None else None, 3),
            "proj_rank": _fmt(_last(run.collapse, "proj_rank"), 1),
        })
    return rows


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Folder names, or as many of their last path parts as tell them apart (compare's
    METHOD/seedS and METHOD/KEY=VALUE/seedS)."""
    deepest = max(len(Path(p).parts) for p in run_dirs)
    for depth in range(1, deepest + 1):
        labels = ["/".join(Path(p).parts[-depth:]) for p in run_dirs]
        if len(set(labels)) == len(labels):
            return labels
    return ["/".join(Path(p).parts[-2:]) for p in run_dirs]  # the same run twice: parent/name


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _markdown_table(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[k] for k in header) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(rows: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}")


def _was_a_report(folder: Path) -> bool:
    """An unmarked folder is a report folder when its report.html is one byol wrote."""
    try:
        return "<title>byol report" in (folder / "report.html").read_text()
    except (OSError, UnicodeDecodeError):
        return False


def _figures(runs: list[Run], embedding: bool, device: torch.device) -> tuple[dict, list[str]]:
    """{name: (caption, figure)} of the runs, and notes on what could not be drawn."""
    figures = {"training": ("Loss, learning rate and tau", training_curves(runs))}
    if any(run.knn for run in runs):
        figures["knn"] = ("k-NN accuracy", knn_curves(runs))
    if any(run.collapse for run in runs):
        figures["collapse"] = ("Collapse statistics (red: past the collapse line)", collapse_curves(runs))
    notes = []
    if embedding:
        points, method = {}, ""
        for run in runs:
            found = sample_test_features(run.path, device=device) if (run.path / "checkpoint.pt").exists() \
                else "it has no checkpoint.pt"
            if isinstance(found, str):
                notes.append(f"No embedding for {run.name}: {found}.")
                continue
            features, labels, classes = found
            xy, method = embed_2d(features)
            points[run.name] = (xy, labels, classes)
        if points:
            figures["embedding"] = (f"{method} of test features", embedding_scatter(points, method))
    return figures, notes


def write_report(run_dirs: list[Path], out: Path, embedding: bool = True,
                 device: torch.device = torch.device("cpu")) -> list[Path]:
    """Figures and pages for the runs, overlaid, written into `out` as a whole; returns the files written."""
    runs = [read_run(path, name) for path, name in zip(run_dirs, run_labels(run_dirs))]
    claim_folder(out, "report", was_ours=_was_a_report)
    with folder_lock(out, "byol report"):
        finish_writing(out)
        figures, notes = _figures(runs, embedding, device)
        images = {name: _png(figure) for name, (_, figure) in figures.items()}
        rows = summary_rows(runs)
        title = "byol report: " + ", ".join(run.name for run in runs)

        markdown = [f"# {title}", "", _markdown_table(rows), ""] + [f"*{n}*" for n in notes]
        markdown += [f"## {caption}\n\n![{name}]({name}.png)\n" for name, (caption, _) in figures.items()]
        sections = [f"<h2>{html.escape(caption)}</h2><img src='data:image/png;base64,"
                    f"{base64.b64encode(images[name]).decode()}' alt='{name}'>" for name, (caption, _) in figures.items()]
        configs = "".join(f"<details><summary>config of {html.escape(run.name)}</summary><pre>"
                          f"{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>" for run in runs)
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{_html_table(rows)}"
                + "".join(f"<p><em>{html.escape(n)}</em></p>" for n in notes) + "".join(sections) + configs
                + "</body></html>")
        texts = {f"{name}.png": png for name, png in images.items()}
        texts.update({"report.md": ("\n".join(markdown) + "\n").encode(), "report.html": page.encode()})
        write_together(out, {name: partial(Path.write_bytes, data=content) for name, content in texts.items()})
    return [out / name for name in texts]
