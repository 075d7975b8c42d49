"""Two real processes (gloo on CPU) compute what one process computes with the whole batch."""

import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from byol.losses import nt_xent

N, DIM, T = 6, 5, 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole_batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2 * N, DIM, generator=generator), torch.randn(2 * N, DIM, generator=generator)


def worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        z_1, z_2 = (z[rank * N:(rank + 1) * N].clone().requires_grad_() for z in whole_batch())
        loss = nt_xent(z_1, z_2, T)
        loss.backward()
        results[rank] = (loss.detach(), z_1.grad, z_2.grad)
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_loss_and_gradients_of_the_whole_batch():
    results = mp.Manager().dict()
    mp.spawn(worker, args=(free_port(), results), nprocs=2, join=True)
    z_1, z_2 = (z.clone().requires_grad_() for z in whole_batch())
    loss = nt_xent(z_1, z_2, T)
    loss.backward()
    # each process's loss is the mean over its own 2N views: their average is the global loss
    torch.testing.assert_close((results[0][0] + results[1][0]) / 2, loss.detach())
    # gradients come back summed over processes; DistributedDataParallel then averages over 2
    for rank in (0, 1):
        rows = slice(rank * N, (rank + 1) * N)
        torch.testing.assert_close(results[rank][1] / 2, z_1.grad[rows])
        torch.testing.assert_close(results[rank][2] / 2, z_2.grad[rows])


def test_each_process_takes_its_slice_of_the_same_global_batches():
    from byol.data.epochs import EpochBatches

    whole = EpochBatches(50, 8, seed=3)
    halves = [EpochBatches(50, 8, seed=3, rank=r, world=2) for r in (0, 1)]
    for sampler in (whole, *halves):
        sampler.set_epoch(2)
    for batch, first, second in zip(whole, *halves):
        assert len(first) == len(second) == 4 and first + second == batch
    assert len(list(whole)) == 50 // 8
    epoch_2 = list(whole)
    whole.set_epoch(2, start=4)  # a resumed run starts at the batch where it stopped
    assert list(whole) == epoch_2[4:]
    whole.set_epoch(3)
    assert list(whole) != epoch_2


IMAGES, STEPS = 8, 3


def tiny_byol():
    from byol.methods import BYOL
    from byol.nets.encoders import build_encoder

    torch.manual_seed(0)
    return BYOL(build_encoder("resnet18", width=1 / 8, cifar_stem=True), image_size=16, projector_hidden=32,
                projection_dim=16, predictor_hidden=32)


def views(step: int):
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(IMAGES, 3, 16, 16, generator=generator), torch.randn(IMAGES, 3, 16, 16, generator=generator)


def train(learner, model, rows):
    """STEPS steps of SGD and target updates; the losses and the first step's gradients."""
    optimizer = torch.optim.SGD(learner.trainable_parameters(), lr=0.05, momentum=0.9)
    losses, first_grads = [], None
    for step in range(STEPS):
        view_1, view_2 = views(step)
        loss = model(view_1[rows], view_2[rows])
        loss.backward()
        losses.append(loss.detach())
        if first_grads is None:
            first_grads = [p.grad.clone() for p in learner.trainable_parameters()]
        optimizer.step()
        optimizer.zero_grad()
        learner.update_target(0.9)
    return torch.stack(losses), first_grads, learner.state_dict()


def ddp_worker(rank: int, port: int, results) -> None:
    from byol.core.distributed import data_parallel, sync_batchnorm
    from byol.train.trainer import LossOf

    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        learner = sync_batchnorm(tiny_byol(), torch.device("cpu"))
        model = data_parallel(LossOf(learner), torch.device("cpu"))
        half = IMAGES // 2
        results[rank] = train(learner, model, slice(rank * half, (rank + 1) * half))
    finally:
        dist.destroy_process_group()


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to float64 rounding: |got - expected| <= 1e-10 |expected| + 1e-13."""
    return torch.linalg.vector_norm(got - expected) <= 1e-10 * torch.linalg.vector_norm(expected) + 1e-13


def test_ddp_on_two_processes_matches_one_process_with_the_global_batch():
    """In float64, so that what is compared is the arithmetic and not fp32 rounding: with
    BatchNorm over a few images, fp32 differences of 1e-5 grow to percents within 3 steps."""
    from byol.train.trainer import LossOf

    results = mp.Manager().dict()
    mp.spawn(ddp_worker, args=(free_port(), results), nprocs=2, join=True)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        learner = tiny_byol()
        losses, grads, state = train(learner, LossOf(learner), slice(None))
    finally:
        torch.set_default_dtype(previous)
    # the global batch's loss is the mean of the two processes' losses, BatchNorm statistics included
    assert close((results[0][0] + results[1][0]) / 2, losses)
    for rank in (0, 1):
        for got, expected in zip(results[rank][1], grads):  # DistributedDataParallel's averaged gradients
            assert close(got, expected)
    for key, value in state.items():
        # both processes move online and target identically, with no communication for the target
        assert torch.equal(results[0][2][key], results[1][2][key]), key
        assert close(results[0][2][key].double(), value.double()), key
    assert any(key.startswith("target.") for key in state)


def test_torchrun_trains_with_two_processes_and_only_rank_0_writes(small_folders, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "byol", "pretrain", "--data", str(small_folders[0]), "--out", str(out)]
    for setting in ("image_size=16", "width=0.125", "projector_hidden=32", "predictor_hidden=32",
                    "projection_dim=16", "batch_size=32", "epochs=1", "optimizer=adamw", "lr=0.004",
                    "log_every=1", "collapse_every=4", "threads=1"):
        command += ["--set", setting]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 256 // 32  # 32 is the global batch
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))  # one writer, no duplicates
    assert [r["step"] for r in records if "proj_std" in r] == [4, 8]
    assert finished.stdout.count('"processes": 2') == 1  # the result is printed once


def test_torchrun_streams_uneven_shards_to_two_processes_in_step(large_shards, tmp_path):
    """Shards of uneven counts, 256 images streamed at 72 px by a worker in each of 2
    processes: 8 steps of 32, every process drawing its 16 images a step (none waits for ever)."""
    import json
    import re
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "byol", "pretrain", "--data", str(large_shards), "--out", str(out)]
    for setting in ("image_size=72", "cifar_stem=false", "width=0.125", "projector_hidden=32", "predictor_hidden=32",
                    "projection_dim=16", "batch_size=32", "epochs=1", "optimizer=adamw", "lr=0.004", "workers=1",
                    "decode_once=false",
                    "log_every=1", "collapse_every=0", "knn_every=0", "threads=1"):
        command += ["--set", setting]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert re.search(r"data: 256 images in \d+ shards, streamed", finished.stderr)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 8 and summary["skipped_files"] == 0


def budgeted_worker(rank: int, port: int, data: str, out: str, results) -> None:
    """pretrain with a 12-second budget, where rank 1's clock runs three times too fast."""
    import time

    from byol.config import Config
    from byol.train.trainer import Trainer, pretrain

    if rank == 1:
        real = time.perf_counter
        time.perf_counter = lambda: 3 * real()
    finish = Trainer.finish

    def finish_and_report(self):
        results[rank] = dict(steps=self.progress.step, lr=self.lr, tau=self.tau,
                             weights={k: v.clone() for k, v in self.learner.state_dict().items()})
        return finish(self)

    Trainer.finish = finish_and_report
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    config = Config(data=data, image_size=16, width=0.125, projector_hidden=32, predictor_hidden=32,
                    projection_dim=16, batch_size=32, epochs=100, minutes=0.2, optimizer="adamw", lr=0.004,
                    warmup_epochs=0.5, log_every=5, checkpoint_every=1000, collapse_every=0, threads=1)
    pretrain(config.checked(), out)


def test_with_a_time_budget_every_process_follows_the_lead_clock_and_stops_at_the_same_step(small_folders, tmp_path):
    results = mp.Manager().dict()
    context = mp.spawn(budgeted_worker, args=(free_port(), str(small_folders[0]), str(tmp_path / "run"), results),
                       nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the processes did not end together: a collective was left waiting")
    assert 10 < results[0]["steps"] == results[1]["steps"] < 800  # the budget ended the run, not the epochs
    assert (results[0]["lr"], results[0]["tau"]) == (results[1]["lr"], results[1]["tau"])
    for key, value in results[0]["weights"].items():
        assert torch.equal(value, results[1]["weights"][key]), key


def test_a_batch_that_does_not_split_over_the_processes_is_refused_before_anything_is_built(small_folders, tmp_path,
                                                                                          monkeypatch):
    """On a GPU (where the layout trial, which also splits the batch, does not run): the refusal
    comes first, before the learner is moved to a device this machine may not have."""
    from byol.config import Config
    from byol.core import distributed
    from byol.core.errors import ByolError
    from byol.train.trainer import Trainer

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    config = Config(data=str(small_folders[0]), batch_size=16, width=0.0625).checked()
    with pytest.raises(ByolError, match=r"^batch_size 16 does not split over 3 processes: use a multiple of 3$"):
        Trainer(config, tmp_path / "run", torch.device("cuda", 0))


def decoding_worker(rank: int, port: int, folder: str, cache: str, log: str, results) -> None:
    """Decode `folder` as a run's data loading does, as process `rank` of one node."""
    import os
    from pathlib import Path

    from byol.core.distributed import node_leader_first
    from byol.data import decode, memory
    from byol.data.folders import list_images

    os.environ.update(LOCAL_RANK=str(rank), BYOL_CACHE_DIR=cache)
    real = decode.decode_square

    def logged(path, size):
        with open(log, "a") as file:
            file.write(f"{rank} {path}\n")
        return real(path, size)

    memory.decode_square = logged
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        with node_leader_first():
            data = memory.decode_into_memory(list_images(folder), 8)
        cached = next(Path(cache).glob("images-*.pt"))
        results[rank] = (data.images.clone(), str(cached) in Path("/proc/self/maps").read_text())
    finally:
        dist.destroy_process_group()


def test_a_nodes_processes_decode_a_folder_once_and_share_the_cached_pages(small_folders, tmp_path):
    """The node's first process decodes the 256 images and caches them; the other maps the
    cache; both hold the file's pages mapped, which the page cache keeps once for the node."""
    log = tmp_path / "decoded.txt"
    results = mp.Manager().dict()
    mp.spawn(decoding_worker, args=(free_port(), str(small_folders[0]), str(tmp_path / "cache"), str(log), results),
             nprocs=2, join=True)
    decoded = log.read_text().splitlines()
    assert len(decoded) == 256 and {line.split()[0] for line in decoded} == {"0"}
    assert torch.equal(results[0][0], results[1][0]) and results[0][1] and results[1][1]
