"""Every file byol reads back from a run folder (summary.json, eval_*.json, config.yaml) is
checked through a table: damaged, it is one line naming the file and the field, or it is read."""

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byol.cli import main
from byol.core.errors import ByolError
from byol.report.runs import read_run
from byol.train.summary import FIELDS

ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.sampled_from(["top1", "top5", "x"]), st.one_of(st.floats(), st.text())))


@pytest.fixture(scope="module")
def run(small_folders, tmp_path_factory) -> Path:
    train, test = small_folders
    out = tmp_path_factory.mktemp("read_back") / "run"
    assert main(["pretrain", "--data", str(train), "--test", str(test), "--out", str(out), "--width", "0.125",
                 "--batch-size", "32", "--set", "steps=2", "--set", "projector_hidden=32", "--set",
                 "predictor_hidden=32", "--set", "projection_dim=16", "--set", "tensorboard=false"]) == 0
    assert main(["eval", "knn", "--checkpoint", str(out), "--train", str(train), "--test", str(test)]) == 0
    return out


def _copy(run: Path, where: Path) -> Path:
    copy = where / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def _edit_json(path: Path, field: str, value=..., remove: bool = False) -> None:
    record = json.loads(path.read_text())
    if remove:
        record.pop(field, None)
    else:
        record[field] = value
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("file,field,value,says", [
    ("summary.json", "steps", "2", "summary.json is damaged: steps is '2' (a number of steps); remove it and run "
                                   "`byol pretrain --resume"),
    ("summary.json", "knn", {"top1": 140.0}, "summary.json is damaged: knn is {'top1': 140.0} (a mapping with top1"),
    ("eval_knn.json", "protocol", "kNN", "eval_knn.json is damaged: protocol is 'kNN' (choose knn or linear); "
                                         "evaluate again"),
    ("eval_knn.json", "pretrained", [1, 2], "eval_knn.json is damaged: pretrained is [1, 2]"),
])
def test_a_damaged_field_is_one_line_in_the_report(run, tmp_path, capsys, file, field, value, says):
    copy = _copy(run, tmp_path)
    _edit_json(copy / file, field, value)
    assert main(["report", str(copy), "--out", str(tmp_path / "report"), "--no-embedding"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_a_damaged_config_yaml_is_one_line(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace("batch_size: 32", "batch_size: -4"))
    assert main(["report", str(copy), "--out", str(tmp_path / "report"), "--no-embedding"]) == 2
    assert "invalid config: batch_size is -4: BatchNorm needs at least 2 images" in capsys.readouterr().err


def test_a_summary_that_is_not_json_is_one_line(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    (copy / "summary.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ByolError, match="summary.json cannot be read as JSON"):
        read_run(copy)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(sorted(FIELDS)), value=ANY_JSON, remove=st.booleans())
def test_any_edit_of_a_summary_field_is_refused_in_one_line_or_read(run, tmp_path, field, value, remove):
    copy = _copy(run, tmp_path)
    _edit_json(copy / "summary.json", field, value, remove)
    try:
        summary = read_run(copy).summary
    except ByolError as err:
        assert "\n" not in str(err) and f"{copy / 'summary.json'} is damaged: " in str(err)
        return
    assert (remove and field == "knn") or summary[field] == value
