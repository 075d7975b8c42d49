"""Milliseconds of one optimiser step and one target update on a preset's networks, alone.

At the cifar10-cpu preset's shape (a width-1/8 ResNet-18 with 1024-wide heads: 138 small
tensors) a step's fixed costs are kernel launches, not arithmetic, so how many kernels the
optimiser and the target update take shows. Each optimiser is `build_optimizer`'s, as
`byol pretrain` builds it (SGD under an fp16 grad scaler is the multi-tensor `foreach` one,
otherwise fused); the target update is `update_target`. Variants alternate, one call each
per round, so that the machine's load touches all alike; the median over rounds is reported.

    python benchmarks/optimizer_step.py                 # the cifar10-cpu preset's networks
    python benchmarks/optimizer_step.py --preset NAME --rounds 500
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from byol import config as cfg
from byol.methods import build_learner
from byol.train.optim import build_optimizer, param_groups


def optimiser_steps(learner: torch.nn.Module, config: cfg.Config) -> dict[str, Callable[[], None]]:
    """Name -> one step of that optimiser over the learner's trained tensors (gradients fixed)."""
    steps = {}
    for name, optimizer, grad_scaler in (("sgd, fused", "sgd", False),
                                         ("sgd, foreach (under an fp16 grad scaler)", "sgd", True),
                                         ("adamw, fused", "adamw", False), ("lars", "lars", False)):
        groups = param_groups(learner.trained_modules(), config.weight_decay, {"predictor": config.predictor_lr_mult})
        steps[name] = build_optimizer(optimizer, groups, config.lr, config.momentum, config.lars_eta,
                                      grad_scaler=grad_scaler).step
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10-cpu")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    config = cfg.resolve(preset=args.preset)
    torch.manual_seed(0)
    learner = build_learner(config)
    for param in learner.parameters():
        if param.requires_grad:
            param.grad = torch.randn_like(param) * 1e-3
    calls = {**optimiser_steps(learner, config), "target update": lambda: learner.update_target(config.tau_base)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(args.rounds + 5):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= 5:  # the first rounds build optimiser state
                times[name].append(time.perf_counter() - start)
    tensors = sum(1 for p in learner.parameters() if p.requires_grad)
    print(f"{args.preset}: {tensors} trained tensors; CPU, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print("| call | ms (median) |\n| --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
