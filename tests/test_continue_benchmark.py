"""The command behind docs/results.md's continued-pretraining table runs, on a few digits."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "continue_pretraining.py"


def bench(*arguments: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--digits", "60", "--steps", "2", "--set", "collapse_every=0",
                    *arguments], check=True, capture_output=True, cwd=SCRIPT.parent)


def test_the_continued_pretraining_benchmark_runs_each_arm_on_a_few_digits(tmp_path):
    out = tmp_path / "bench"
    bench("--start", "unused", "--out", str(out), "--arms", "random")  # its run is the next call's start
    start = out / "random-2steps-test"
    bench("--start", str(start), "--out", str(out), "--arms", "start,random,continued")
    rows = json.loads((out / "continue_pretraining-test.json").read_text())
    assert [row["arm"] for row in rows] == ["start, as it is", "BYOL from random init", "continued BYOL (init)"]
    assert all(0 <= row[score] <= 100 for row in rows for score in ("knn", "linear"))
    assert [row.get("steps") for row in rows] == [None, 2, 2]
    summary = json.loads((out / "continued-init-2steps-test" / "summary.json").read_text())
    assert summary["init"]["source"] == str(start)
    assert sum(1 for _ in (out / "domain" / "test").rglob("*.png")) == 20 * 3  # every third of 60 digits, 3 renderings
