"""`byol compare`: several methods under one budget, one encoder and one seed list, evaluated alike.

Each (method, seed) is an ordinary run folder, OUT/METHOD/seedS (OUT/METHOD/KEY=VALUE/seedS
with `--sweep KEY=V1,V2,...`, which repeats the comparison at each value of one key, every
run seeing the same number of images); a compare that was interrupted picks up where it
stopped: finished runs (those with a summary.json) are kept, and an unfinished one resumes
from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from byol import config as cfg
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import claim_folder, write_json, write_text, write_with
from byol.core.locks import folder_lock
from byol.core.progress import note
from byol.eval.inspect import inspect_checkpoint
from byol.eval.protocols import evaluate
from byol.methods import METHODS
from byol.report.page import write_report
from byol.report.plots import sweep_curves
from byol.train.summary import SUMMARY, read_summary
from byol.train.trainer import RUNTIME_KEYS, pretrain, refuse_out_inside_inputs

REFERENCE = "byol"
RANDOM = "random encoder"
NOT_SWEPT = frozenset({"data", "test", "method", "seed"}) | RUNTIME_KEYS  # own flags, or nothing learned changes


def _run(config: Config, run_dir: Path) -> dict:
    if (run_dir / SUMMARY).is_file():
        return read_summary(run_dir)
    return pretrain(config, run_dir)  # a new run, or an interrupted one continued where it stopped


def _was_a_comparison(folder: Path) -> bool:
    """An unmarked folder is a compare folder when it holds only runs by method and the tables."""
    return all(p.name in METHODS or p.name in ("compare.json", "compare.md", "report") for p in folder.iterdir())


def _collapse(stats: dict, dim: int) -> dict:
    return dict(proj_std_sqrt_d=stats["proj_std"] * math.sqrt(dim), proj_rank=stats["proj_rank"],
                feature_rank=stats["feature_rank"], alarms=stats["alarms"])


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def sweep_settings(config: Config, sweep: tuple[str, list] | None) -> dict[str, Config]:
    """{label: config} for each value of the swept key ({"": config} without a sweep). A sweep
    compares runs that see the same number of images, so a time budget is refused."""
    if sweep is None:
        return {"": config}
    key, values = sweep
    if key in NOT_SWEPT:
        raise ByolError(f"--sweep {key}: sweep a key that changes what is learned (batch_size, augment, tau_base, "
                        "...); methods and seeds have --methods and --seeds")
    if config.minutes:
        raise ByolError("--sweep compares runs that see the same number of images: drop the time budget "
                        "(--minutes 0) and give --epochs")
    if config.steps and key in ("batch_size", "accumulate"):
        raise ByolError(f"--sweep {key} with steps: the runs would see different numbers of images; give --epochs")
    swept = {f"{key}={value}": cfg.apply(dataclasses.replace(config), {key: value}, "--sweep").checked()
             for value in values}
    settings = [repr(getattr(one, key)) for one in swept.values()]  # as the runs take them: 1 and 1.0 are one rate
    if len(set(settings)) < len(values) or len(values) < 2:
        raise ByolError(f"--sweep {key}: give two or more different values, e.g. {key}=A,B")
    return swept


def compare(config: Config, methods: list[str], seeds: list[int], out: Path, linear: bool = False,
            device: torch.device = torch.device("cpu"), notices: Sequence[str] = (),
            sweep: tuple[str, list] | None = None) -> dict:
    """Train every method with every seed under `config` (at every value of the swept key), score
    each, write OUT/compare.{json,md} and the overlaid report; returns the per-method results
    (by swept value when sweeping)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ByolError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
    for flag, values in (("--methods", methods), ("--seeds", seeds)):
        repeated = [value for i, value in enumerate(values) if value in values[:i]]
        if repeated:
            raise ByolError(f"{flag} names {repeated[0]} twice: one run would count as two, with a spread of 0; "
                            "name each once")
    if not config.data or not config.test:
        raise ByolError("compare needs labelled --data (k-NN bank, linear training split) and --test folders")
    settings = sweep_settings(config, sweep)
    refuse_out_inside_inputs(config, out)
    claim_folder(out, "compare", was_ours=_was_a_comparison)
    with folder_lock(out, "byol compare"):
        return _compare_in(out, settings, config, methods, seeds, linear, device, notices, sweep)


def _compare_in(out: Path, settings: dict[str, Config], config: Config, methods: list[str], seeds: list[int],
                linear: bool, device: torch.device, notices: Sequence[str], sweep: tuple[str, list] | None) -> dict:
    """The comparison's runs, tables and report, written into the locked folder `out`."""
    for notice in notices:
        note(notice)
    runs = {label: score_runs(setting, methods, seeds, out, label, linear, device) for label, setting in settings.items()}
    results = {label: {method: _aggregate(rows) for method, rows in by_method.items()}
               for label, by_method in runs.items()}
    if sweep is None:
        results, runs = results[""], runs[""]
        write_text(out / "compare.md", comparison_table(results, linear) + "\n")
    else:
        write_text(out / "compare.md", sweep_tables(results, linear) + "\n")
        figure = sweep_curves(results, sweep[0], RANDOM)
        write_with(out / "sweep.png", lambda temporary: figure.savefig(temporary, format="png"))
    write_json(out / "compare.json", dict(results=results, runs=runs, seeds=seeds, config=config.to_dict(),
                                          sweep=None if sweep is None else dict(key=sweep[0], values=sweep[1])))
    write_report([out / m / label / f"seed{seeds[0]}" for label in settings for m in methods], out / "report",
                 device=device)
    return results


def score_runs(config: Config, methods: list[str], seeds: list[int], out: Path, label: str, linear: bool,
               device: torch.device) -> dict[str, list[dict]]:
    """Each method's runs (OUT/METHOD[/LABEL]/seedS) trained and scored, and the random encoder's row."""
    runs: dict[str, list[dict]] = {}
    for method in methods:
        for seed in seeds:
            run_dir = out / method / label / f"seed{seed}"
            summary = _run(dataclasses.replace(config, method=method, seed=seed), run_dir)
            row = dict(seed=seed, run=str(run_dir), knn_top1=summary["knn"]["top1"], steps=summary["steps"],
                       epochs=summary["epochs"], img_s=summary["img_s"],
                       seconds_per_epoch=summary["train_seconds"] / max(summary["epochs"], 1e-9),
                       **_collapse(inspect_checkpoint(run_dir, config.test, device=device), config.projection_dim))
            if linear:
                row["linear_top1"] = evaluate("linear", run_dir, config.data, config.test, device=device)["pretrained"]["top1"]
            runs.setdefault(method, []).append(row)
    runs[RANDOM] = [_random_row(config, out / methods[0] / label / f"seed{seeds[0]}", linear, device)]
    return runs


def _random_row(config: Config, run_dir: Path, linear: bool, device: torch.device) -> dict:
    """The scores of the run's encoder at random initialisation: the floor every method must clear."""
    baseline = evaluate("knn", run_dir, config.data, config.test, encoders=("random_init",), device=device)
    row = dict(seed=config.seed, run=None, knn_top1=baseline["random_init"]["top1"],
               **_collapse(inspect_checkpoint(run_dir, config.test, device=device, random_init=True),
                           config.projection_dim))
    if linear:
        row["linear_top1"] = evaluate("linear", run_dir, config.data, config.test, encoders=("random_init",),
                                      device=device)["random_init"]["top1"]
    return row


def _aggregate(rows: list[dict]) -> dict:
    result = {"runs": len(rows)}
    for key in ("knn_top1", "linear_top1", "proj_std_sqrt_d", "proj_rank", "feature_rank",
                "seconds_per_epoch", "img_s", "epochs"):
        if key in rows[0]:
            result[key], result[f"{key}_sd"] = _mean_sd([r[key] for r in rows])
    result["collapse_alarms"] = sum(bool(r["alarms"]) for r in rows)
    return result


def difference(result: dict, reference: dict, key: str = "knn_top1") -> str:
    """The gap to the reference method, or 'no difference' when it is within the seeds' spread."""
    gap = result[key] - reference[key]
    spreads = [s for s in (result.get(f"{key}_sd"), reference.get(f"{key}_sd")) if s is not None]
    if not spreads:
        return f"{gap:+.2f} (one seed: spread unknown)"
    return "no difference" if abs(gap) <= max(spreads) else f"{gap:+.2f}"


def _cell(result: dict, key: str, digits: int = 2) -> str:
    if key not in result:
        return ""
    sd = result.get(f"{key}_sd")
    return f"{result[key]:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def comparison_table(results: dict, linear: bool) -> str:
    header = ["method", "runs", "k-NN top-1"] + (["linear top-1"] if linear else []) + [
        "proj_std x sqrt(d)", "proj_rank", "feature_rank", "collapse alarm", "s / epoch", f"k-NN vs {REFERENCE}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference = results.get(REFERENCE)
    for method, r in results.items():
        cells = [method, str(r["runs"]), _cell(r, "knn_top1")] + ([_cell(r, "linear_top1")] if linear else []) + [
            _cell(r, "proj_std_sqrt_d", 3), _cell(r, "proj_rank", 1), _cell(r, "feature_rank", 1),
            f"{r['collapse_alarms']} of {r['runs']}", _cell(r, "seconds_per_epoch", 0),
            difference(r, reference) if reference and method != REFERENCE else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_tables(results: dict[str, dict], linear: bool) -> str:
    """k-NN top-1 of every method at every swept value, then each value's full comparison."""
    labels = list(results)
    methods = list(results[labels[0]])
    lines = ["| method | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    lines += ["| " + " | ".join([method] + [_cell(results[label][method], "knn_top1") for label in labels]) + " |"
              for method in methods]
    for label in labels:
        lines += ["", f"### {label}", "", comparison_table(results[label], linear)]
    return "\n".join(lines)
