"""threads: 0 on a CPU times real steps at each thread count and keeps the fastest, again
when the pace falls or after a while; known sequences of step times give known choices."""

import json

import torch

from byol.config import Config
from byol.train.threads import ThreadTuner
from byol.train.trainer import pretrain


def feed(tuner: ThreadTuner, seconds: float, steps: int) -> list[int | None]:
    return [tuner.step_took(seconds) for _ in range(steps)]


def test_on_shared_cores_one_thread_is_chosen_after_one_step_to_settle_and_six_timed_at_each():
    tuner = ThreadTuner(2)
    assert tuner.candidates == [2, 1]
    assert feed(tuner, 0.5, 7) == [None] * 6 + [1]  # 2 threads timed: now try 1
    assert feed(tuner, 0.2, 7) == [None] * 7  # 1 is faster: it stays
    assert (tuner.chosen, tuner.chosen_pace) == (1, 0.2)
    assert tuner.why() == "1 thread is fastest now (a step takes 0.500 s at 2, 0.200 s at 1)"


def test_alone_all_cores_win_and_the_run_goes_back_to_them():
    tuner = ThreadTuner(4)
    assert tuner.candidates == [4, 2, 1]
    steps = feed(tuner, 0.1, 7) + feed(tuner, 0.15, 7) + feed(tuner, 0.3, 7)
    assert steps == [None] * 6 + [2] + [None] * 6 + [1] + [None] * 6 + [4]
    assert tuner.chosen == 4


def test_a_pace_a_third_slower_starts_a_new_trial_from_the_chosen_count():
    tuner = ThreadTuner(2)
    feed(tuner, 0.2, 7)
    feed(tuner, 0.4, 7)  # 2 threads chosen at 0.2 s a step
    assert feed(tuner, 0.25, 20) == [None] * 20  # 1.25x slower: within the noise allowed
    assert feed(tuner, 0.5, 2) == [None] * 2 and tuner.trying == []
    assert tuner.step_took(0.5) is None  # the median of the last six is slow now: a trial, from the count in use
    assert tuner.trying == [2, 1]
    assert feed(tuner, 0.5, 7) == [None] * 6 + [1]
    assert feed(tuner, 0.3, 7) == [None] * 7 and tuner.chosen == 1  # the other load took a core: 1 now


def test_after_two_minutes_the_counts_are_timed_again():
    tuner = ThreadTuner(2)
    feed(tuner, 0.5, 7)
    feed(tuner, 0.2, 7)  # 1 chosen
    assert feed(tuner, 0.2, 600) == [None] * 600  # 120 s of steps
    assert tuner.step_took(0.2) is None and tuner.trying == [1, 2]  # the 601st starts a trial at the chosen count
    assert feed(tuner, 0.2, 6) == [None] * 5 + [2]


def test_a_run_with_threads_0_times_each_count_and_logs_it(small_folders, tmp_path):
    torch.set_num_threads(2)  # the run's cores; the run gives the caller its count back
    config = Config(data=str(small_folders[0]), image_size=16, width=0.125, projector_hidden=32, projection_dim=16,
                    predictor_hidden=32, batch_size=8, steps=20, log_every=1, device="cpu", tensorboard=False,
                    collapse_every=0, precision="fp32")
    pretrain(config, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    threads = [line["threads"] for line in lines if "loss" in line]
    assert threads[:13] == [2] * 6 + [1] * 7 and set(threads[13:]) <= {1, 2}
    pretrain(Config(**dict(vars(config), threads=1)), tmp_path / "pinned")
    pinned = (tmp_path / "pinned" / "metrics.jsonl").read_text()
    assert "threads" not in pinned and torch.get_num_threads() == 2


def test_more_threads_than_cores_are_cut_to_the_cores_and_said(small_folders, tmp_path, capsys):
    import yaml

    from byol.train.recipe import usable_cores

    config = Config(data=str(small_folders[0]), steps=1, batch_size=16, width=1 / 16, projector_hidden=16,
                    predictor_hidden=16, projection_dim=8, collapse_every=0, knn_every=0, threads=999).checked()
    pretrain(config, tmp_path / "run")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"] == usable_cores()
    assert f"threads 999 is more than the {usable_cores()} cores this process may use" in capsys.readouterr().err
