"""NT-Xent's negatives gathered across 2 real processes (gloo on CPU) equal the one-process loss."""

import socket

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
