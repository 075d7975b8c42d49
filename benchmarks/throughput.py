"""Images per second of one BYOL training step: ours, ours with each optimisation switched
off, the floor, byol-pytorch and lightly, side by side in one run.

An image is one sample that yields two views. Every variant trains the same network on the
same data: a CIFAR ResNet-18 (3x3 stride-1 stem, no max pool; `--width` scales its channels),
projector and predictor 4096/256 with BatchNorm (`--heads` sets the 4096), batch 128, SGD
with momentum 0.9, 32x32 images held in memory as uint8. A step is all a training loop does
per batch: draw the batch, make both views, forward and backward, optimiser step, target
update. Ours is `byol pretrain`'s own step, `Trainer.step` (train/trainer.py), called on the
benchmark's batches; each "ours, ..." row switches one of its optimisations off (or, "1
thread", runs on one core), "ours + ..." adds one. The floor is the same
networks' forward and backward alone, on fixed random views, in the same precision and
memory format: the work no implementation can avoid. Variants run round-robin, one step each
per round after a warm-up round, so that the machine's load touches all alike; the table gives
the median images/s over rounds, with min-max.

The peers as their users run them: byol-pytorch's `BYOL(net, image_size=32, hidden_layer=-1)`
with its default (batch-shared) augmentations; lightly's BYOL as its documentation's CIFAR-10
example builds it (BYOLTransform with input_size 32 and no blur, on PIL images one by one, as
a DataLoader's workers would). Both get our encoder and the same heads (byol-pytorch's
simplicial embedding, on by default in 0.9.1, is turned off to keep the heads equal).

    pip install -e '.[bench]'          # byol-pytorch and lightly from PyPI
    python benchmarks/throughput.py --data ../shared/datasets/cifar10 --out runs/throughput
    python benchmarks/throughput.py --quick    # width 1/8, no memory or quality runs: < 2 minutes
    python benchmarks/throughput.py --quick --batch 32 --heads 1024   # the cifar10-cpu preset's shape

Also measured: the augmentations alone (images/s, both views), FLOPs per image (counted with
torch.utils.flop_counter on the floor step) against a measured matrix-multiply peak, peak
memory of each variant (a fresh process each: the peak resident set, or CUDA's peak
allocation, above what it held before its first step), and, unless --quality-steps 0,
equal-steps training of ours and each peer at width 1/8 followed by k-NN on the test split,
so that speed is not bought with worse features.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from byol.config import Config
from byol.core.runtime import autocast, autocast_dtype, channels_last_is_safe, pick_device
from byol.data.sources import open_images
from byol.data.views import Views, ViewSpec, eval_transform, view_specs
from byol.eval.features import extract_features
from byol.eval.knn import knn_accuracy
from byol.losses import byol_loss
from byol.methods import build_learner
from byol.nets.encoders import ScaledResNet
from byol.train.optim import build_optimizer
from byol.train.trainer import Trainer

TAU = 0.99  # byol-pytorch's default decay; every variant uses it


@dataclass
class Runner:
    """One implementation, ready to train: `step()` takes one optimiser step on a fresh batch;
    `encoder` and `eval_spec` (its input normalisation) are what k-NN scores afterwards."""

    step: Callable[[], None]
    encoder: nn.Module
    eval_spec: ViewSpec


@dataclass
class Setup:
    images: torch.Tensor  # uint8 (N, 3, 32, 32), in memory
    batch: int
    width: float
    device: torch.device
    precision: str
    lr: float
    optimizer: str = "sgd"
    heads: int = 4096  # hidden width of the projector and the predictor (the paper's 4096)
    seed: int = 0  # initial weights; batches and views follow from it

    def batch_indices(self) -> torch.Tensor:
        return torch.randint(len(self.images), (self.batch,))

    def uint8_batch(self) -> torch.Tensor:
        return self.images[self.batch_indices()].to(self.device, non_blocking=True)

    def pil_batch(self) -> list[Image.Image]:
        return [Image.fromarray(a) for a in self.images[self.batch_indices()].permute(0, 2, 3, 1).numpy()]

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        groups = [dict(params=[p for p in params if p.requires_grad], weight_decay=1e-6, lr_mult=1.0)]
        return build_optimizer(self.optimizer, groups, self.lr, momentum=0.9)

    def encoder(self) -> nn.Module:
        return ScaledResNet("resnet18", width=self.width, cifar_stem=True).to(self.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(call: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, with the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - start


# --- ours --------------------------------------------------------------------------------


def our_learner(setup: Setup) -> nn.Module:
    config = Config(encoder="resnet18", width=setup.width, cifar_stem=True, projector_hidden=setup.heads,
                    predictor_hidden=setup.heads, projection_dim=256, augment="cifar", image_size=32)
    torch.manual_seed(setup.seed)
    return build_learner(config).to(setup.device)


def memory_format_for(learner: nn.Module, setup: Setup, channels_last: bool) -> torch.memory_format:
    safe = setup.device.type == "cuda" or channels_last_is_safe(learner)
    return torch.channels_last if channels_last and safe else torch.contiguous_format


class PerImageViews:
    """Our two view distributions as a per-image PIL pipeline (torchvision transforms), the way
    most implementations make views: what batched tensor augmentation replaces."""

    def __init__(self, specs: tuple[ViewSpec, ViewSpec]) -> None:
        self.pipelines = [self.pipeline(spec) for spec in specs]

    @staticmethod
    def pipeline(spec: ViewSpec) -> T.Compose:
        return T.Compose([
            T.RandomResizedCrop(spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio),
            T.RandomHorizontalFlip(spec.flip_p),
            T.RandomApply([T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
            T.RandomGrayscale(spec.grayscale_p),
            T.RandomApply([T.GaussianBlur(spec.blur_kernel, spec.blur_sigma)], p=spec.blur_p),
            T.RandomSolarize(128, p=spec.solarize_p),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ])

    def __call__(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.stack([pipeline(img) for img in images]) for pipeline in self.pipelines)


@torch.no_grad()
def ema_per_tensor(target: nn.Module, online: nn.Module, tau: float) -> None:
    """The target update as most implementations write it: one small kernel pair per tensor."""
    for target_param, online_param in zip(target.parameters(), online.parameters()):
        target_param.mul_(tau).add_(online_param, alpha=1 - tau)
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers()):
        target_buffer.copy_(online_buffer)


class PerTensorTargetUpdate:
    """`learner.update_target` with `ema_per_tensor` in place of the fused update."""

    def __init__(self, learner: nn.Module) -> None:
        self.learner = learner

    def __call__(self, tau: float) -> float:
        ema_per_tensor(self.learner.target, self.learner.online, tau)
        return tau


class JointLoss(nn.Module):
    """Both views through each network in one forward of 2N images. Not what BYOL's reference
    does: BatchNorm then normalises over both views together."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        both = torch.cat([view_1, view_2])
        p_1, p_2 = self.learner.predictor(self.learner.online(both)).chunk(2)
        with torch.no_grad():
            t_1, t_2 = self.learner.target(both).chunk(2)
        return byol_loss(p_1, p_2, t_1, t_2)


def pretrain_trainer(setup: Setup, **changes) -> Trainer:
    """`byol pretrain`'s Trainer for the benchmark's networks, optimiser and rates (constant tau,
    no warm-up), over a scratch folder of one batch of the images (the steps get their batches
    from `setup`), writing its run folder to scratch too."""
    scratch = Path(tempfile.mkdtemp(prefix="byol-throughput-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    (scratch / "images" / "all").mkdir(parents=True)
    for i, array in enumerate(setup.images[:setup.batch].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(array).save(scratch / "images" / "all" / f"{i}.png")
    config = Config(data=str(scratch / "images"), image_size=32, augment="cifar", encoder="resnet18", width=setup.width,
                    cifar_stem=True, projector_hidden=setup.heads, predictor_hidden=setup.heads, projection_dim=256,
                    batch_size=setup.batch, optimizer=setup.optimizer, lr=setup.lr * 256 / setup.batch,
                    weight_decay=1e-6, momentum=0.9, warmup_epochs=0, steps=10**6, tau_base=TAU,
                    tau_schedule="constant", precision=setup.precision, seed=setup.seed, collapse_every=0,
                    tensorboard=False, log_every=10**6, checkpoint_every=10**6)
    (scratch / "run").mkdir()
    return Trainer(replace(config, **changes).validate(), scratch / "run", setup.device)


def ours(setup: Setup, *, channels_last: bool = True, batched_views: bool = True, fused_ema: bool = True,
         joint: bool = False, compile: bool = False, precision: str | None = None) -> Runner:
    """`byol pretrain`'s own step (Trainer.step) on the benchmark's batches, with switches."""
    trainer = pretrain_trainer(setup, channels_last=channels_last, compile=compile,
                               precision=precision or setup.precision)
    learner = trainer.learner
    pil_views = None if batched_views else PerImageViews(learner.views.specs)
    if not fused_ema:
        learner.update_target = PerTensorTargetUpdate(learner)
    if joint:
        trainer.model = JointLoss(learner)

    def step() -> None:
        if pil_views is None:
            pair = learner.views(setup.uint8_batch())
        else:
            pair = tuple(v.to(setup.device) for v in pil_views(setup.pil_batch()))
        trainer.step([pair])

    return Runner(step, learner.encoder, learner.views.specs[0])


def one_thread(runner: Runner) -> Runner:
    """The same step with torch's intra-op threads at 1 (the other variants run with all cores)."""
    def step() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            runner.step()
        finally:
            torch.set_num_threads(threads)

    return replace(runner, step=step)


def floor(setup: Setup) -> Runner:
    """Forward and backward of our networks alone, on fixed random views."""
    learner = our_learner(setup)
    memory_format = memory_format_for(learner, setup, True)
    learner = learner.to(memory_format=memory_format)
    dtype = autocast_dtype(setup.precision, setup.device)
    views = [torch.randn(setup.batch, 3, 32, 32, device=setup.device).contiguous(memory_format=memory_format)
             for _ in range(2)]

    def step() -> None:
        with autocast(setup.device, dtype):
            loss = learner.loss(*views)
        loss.backward()
        learner.zero_grad(set_to_none=True)

    return Runner(step, learner.encoder, learner.views.specs[0])


# --- the peers -----------------------------------------------------------------------------


def byol_pytorch(setup: Setup) -> Runner:
    from byol_pytorch import BYOL as LucidBYOL

    torch.manual_seed(setup.seed)
    learner = LucidBYOL(setup.encoder(), image_size=32, hidden_layer=-1, projection_size=256,
                        projection_hidden_size=setup.heads, moving_average_decay=TAU, use_simplicial_embeddings=False)
    optimizer = setup.optimizer_for(learner.parameters())

    def step() -> None:
        loss = learner(setup.uint8_batch().float().div_(255))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        learner.update_moving_average()

    return Runner(step, learner.net, ViewSpec(size=32))  # its default views normalise with ImageNet's statistics


class LightlyBYOL(nn.Module):
    """lightly's BYOL model as its documentation's example defines it."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int) -> None:
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, hidden, 256)
        self.prediction_head = BYOLPredictionHead(256, hidden, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


def lightly_transform():
    """lightly's BYOLTransform as its CIFAR-10 example sets it: 32 px, no blur."""
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    return BYOLTransform(view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                         view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0))


def lightly(setup: Setup) -> Runner:
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.utils import update_momentum

    torch.manual_seed(setup.seed)
    encoder = setup.encoder()
    model = LightlyBYOL(encoder, encoder.feature_dim, setup.heads).to(setup.device)
    transform = lightly_transform()
    criterion = NegativeCosineSimilarity()
    optimizer = setup.optimizer_for(model.parameters())

    def step() -> None:
        pairs = [transform(img) for img in setup.pil_batch()]
        x0, x1 = (torch.stack(views).to(setup.device) for views in zip(*pairs))
        update_momentum(model.backbone, model.backbone_momentum, m=TAU)
        update_momentum(model.projection_head, model.projection_head_momentum, m=TAU)
        p0, z0 = model(x0), model.forward_momentum(x0)
        p1, z1 = model(x1), model.forward_momentum(x1)
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return Runner(step, model.backbone, ViewSpec(size=32))  # BYOLTransform normalises with ImageNet's statistics


# --- the variants --------------------------------------------------------------------------


def variants(setup: Setup, compile: bool) -> dict[str, Callable[[], Runner]]:
    """Name -> factory. Ours first, then each of our optimisations off in turn, then the rest."""
    out: dict[str, Callable[[], Runner]] = {"ours": lambda: ours(setup)}
    if autocast_dtype(setup.precision, setup.device) is not None:
        out["ours, fp32 (no autocast)"] = lambda: ours(setup, precision="fp32")
    if memory_format_for(our_learner(setup), setup, True) == torch.channels_last:
        out["ours, no channels_last"] = lambda: ours(setup, channels_last=False)
    if setup.device.type == "cpu" and torch.get_num_threads() > 1:
        out["ours, 1 thread"] = lambda: one_thread(ours(setup))
    out["ours, per-image PIL views"] = lambda: ours(setup, batched_views=False)
    out["ours, per-tensor target update"] = lambda: ours(setup, fused_ema=False)
    out["ours + one forward of both views"] = lambda: ours(setup, joint=True)
    if compile:
        out["ours + torch.compile"] = lambda: ours(setup, compile=True)
    out["floor (model forward + backward)"] = lambda: floor(setup)
    out["byol-pytorch 0.9.1"] = lambda: byol_pytorch(setup)
    out["lightly 1.6.0"] = lambda: lightly(setup)
    return out


def time_round_robin(trainers: dict[str, Runner], rounds: int, setup: Setup) -> dict[str, list[float]]:
    """images/s of every round after the first (warm-up), one step per variant per round."""
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for round_ in range(rounds + 1):
        for name, trainer in trainers.items():
            elapsed = seconds(trainer.step, setup.device)
            if round_:
                rates[name].append(setup.batch / elapsed)
        print(f"round {round_}/{rounds}: " + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items() if r),
              file=sys.stderr)
    return rates


def flops_per_image(setup: Setup) -> int:
    step = floor(setup).step
    step()  # lazily built state (cuDNN plans) out of the count
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() // setup.batch


def gemm_peak_gflops(device: torch.device, dtype: torch.dtype | None) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype or torch.float32) for _ in range(2))
    a @ b
    best = 0.0
    for _ in range(5):
        best = max(best, 2 * n**3 / seconds(lambda: a @ b, device) / 1e9)
    return best


def augmentation_rates(setup: Setup, batch: int = 512, reps: int = 5) -> dict[str, float]:
    """images/s (both views) of our batched views and of the same views per image with PIL."""
    batched, pil = Views.preset("cifar", 32), PerImageViews(view_specs("cifar", 32))
    images = setup.images[:batch].to(setup.device)
    pil_images = [Image.fromarray(a) for a in setup.images[:batch].permute(0, 2, 3, 1).numpy()]
    rates = {}
    for name, make in (("batched tensor views (ours)", lambda: batched(images)),
                       ("per-image PIL views", lambda: pil(pil_images))):
        make()
        rates[name] = batch / statistics.median(seconds(make, setup.device) for _ in range(reps))
    return rates


def peak_memory_mb(name: str, args: argparse.Namespace) -> float | None:
    """The variant's peak memory above its state before the first step, in a fresh process."""
    command = [sys.executable, __file__, "--memory-of", name, "--width", str(args.width), "--batch", str(args.batch),
               "--heads", str(args.heads), "--device", args.device, "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print(f"memory of {name} not measured: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout)["peak_mb"]


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_memory(name: str, setup: Setup) -> float:
    step = variants(setup, compile=True)[name]().step
    if setup.device.type == "cuda":
        sync(setup.device)
        before = torch.cuda.memory_allocated(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
        step(), step()
        return (torch.cuda.max_memory_allocated(setup.device) - before) / 2**20
    before = resident_mb()
    step(), step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def profile(setup: Setup, steps: int = 5) -> str:
    """torch.profiler's table of the operators that take the most time in our step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runner = ours(setup)
    runner.step()  # warm-up: lazily built state out of the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            runner.step()
            sync(setup.device)
    sort = "self_cuda_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"
    return f"top operators over {steps} steps of ours:\n" + prof.key_averages().table(sort_by=sort, row_limit=15)


# --- equal quality -------------------------------------------------------------------------


def quality(setup: Setup, test_images: torch.Tensor, train_labels: torch.Tensor, test_labels: torch.Tensor,
            steps: int) -> dict[str, float]:
    """k-NN top-1 after `steps` equal steps of ours and of each peer (AdamW, tau 0.99), and at random init."""
    runs = {"ours": lambda: ours(setup), "byol-pytorch 0.9.1": lambda: byol_pytorch(setup),
            "lightly 1.6.0": lambda: lightly(setup), "random init": None}
    scores = {}
    for name, make in runs.items():
        if make is None:
            torch.manual_seed(setup.seed)
            encoder, spec = setup.encoder(), view_specs("cifar", 32)[0]
        else:
            trainer = make()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            print(f"quality: {name} trained {steps} steps in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            encoder, spec = trainer.encoder, trainer.eval_spec
        scores[name] = knn_top1(encoder, spec, setup, test_images, train_labels, test_labels)
    return scores


def knn_top1(encoder: nn.Module, spec: ViewSpec, setup: Setup, test_images: torch.Tensor,
             train_labels: torch.Tensor, test_labels: torch.Tensor) -> float:
    """k-NN top-1 (k=200) of the test images against the training images as the bank."""
    features = [extract_features(encoder, images, lambda x: eval_transform(x, spec), device=setup.device)
                for images in (setup.images, test_images)]
    return knn_accuracy(features[0], train_labels, features[1], test_labels, 10)["top1"]


# --- report --------------------------------------------------------------------------------


def table(rates: dict[str, list[float]], flops: int, peak: float, memory: dict[str, float | None]) -> list[str]:
    median = {name: statistics.median(r) for name, r in rates.items()}
    peers = [n for n in median if n.startswith(("byol-pytorch", "lightly"))]
    floor_name = next(n for n in median if n.startswith("floor"))
    head = ["variant", "img/s median (min-max)", *[f"x {p.split()[0]}" for p in peers], "x floor",
            "GFLOP/s", "% of GEMM peak", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, value in median.items():
        gflops = value * flops / 1e9
        mem = memory.get(name)
        cells = [name, f"{value:.1f} ({min(rates[name]):.1f}-{max(rates[name]):.1f})",
                 *[f"{value / median[p]:.2f}" for p in peers], f"{value / median[floor_name]:.2f}",
                 f"{gflops:.1f}", f"{100 * gflops / peak:.0f}", "-" if mem is None else f"{mem:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def mean_and_spread(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{spread} ({', '.join(f'{v:.2f}' for v in values)})"


def measure_speed(setup: Setup, args: argparse.Namespace) -> tuple[list[str], dict]:
    """The round-robin table, FLOPs against the GEMM peak, memory, and the augmentations alone."""
    dtype = autocast_dtype(args.precision, setup.device)
    trainers = {name: make() for name, make in variants(setup, args.compile).items()}
    rates = time_round_robin(trainers, args.rounds, setup)
    del trainers
    flops, peak = flops_per_image(setup), gemm_peak_gflops(setup.device, dtype)
    memory = {} if args.quick else {name: peak_memory_mb(name, args) for name in rates}
    augment = augmentation_rates(setup)
    lines = table(rates, flops, peak, memory) + [
        "", f"autocast dtype {dtype}; {flops / 1e9:.2f} GFLOP per image (forward + backward); "
            f"GEMM peak {peak:.0f} GFLOP/s",
        "augmentation alone, both views of 512 images: " + ", ".join(f"{n} {r:.0f} img/s" for n, r in augment.items())]
    return lines, dict(rates=rates, flops_per_image=flops, gemm_peak_gflops=peak, peak_memory_mb=memory,
                       augmentation_img_s=augment)


def load_setup(args: argparse.Namespace) -> tuple[Setup, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    device = pick_device(args.device)
    lr = 0.05 if args.optimizer == "sgd" else 2e-3
    if args.data is None:
        images = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return Setup(images, args.batch, args.width, device, args.precision, lr, args.optimizer, args.heads), None, None, None
    train, test = open_images(str(args.data / "train"), 32), open_images(str(args.data / "test"), 32)
    setup = Setup(train.images, args.batch, args.width, device, args.precision, lr, args.optimizer, args.heads)
    return setup, test.images, train.labels, test.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder with train/ and test/ ImageFolders (default: random images)")
    parser.add_argument("--out", type=Path, help="folder for throughput.json")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4096, help="hidden width of the projector and the predictor")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up round; 0: no timing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--compile", action="store_true", help="add ours + torch.compile (slow to compile)")
    parser.add_argument("--quality-steps", type=int, default=300)
    parser.add_argument("--quality-width", type=float, default=0.125)
    parser.add_argument("--quality-seeds", default="0", help="comma-separated; each trains every implementation")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="print torch.profiler's top operators over STEPS of our step, and nothing else")
    parser.add_argument("--quick", action="store_true", help="width 1/8, 3 rounds, no memory or quality runs")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.width, args.rounds, args.quality_steps = 0.125, 3, 0
    setup, test_images, train_labels, test_labels = load_setup(args)
    if args.memory_of:
        print(json.dumps(dict(peak_mb=measure_memory(args.memory_of, setup))))
        return
    if args.profile:
        print(profile(setup, args.profile))
        return

    device_name = torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{device_name}; torch {torch.__version__}; width {args.width}, batch {args.batch}, heads {args.heads}",
          file=sys.stderr)
    lines, result = [], dict(device=device_name, torch=torch.__version__, args={k: str(v) for k, v in vars(args).items()})
    if args.rounds:
        lines, speed = measure_speed(setup, args)
        result.update(speed)
    if args.quality_steps and args.data is not None:
        seeds = [int(seed) for seed in args.quality_seeds.split(",")]
        runs = [quality(replace(setup, width=args.quality_width, lr=2e-3, optimizer="adamw", seed=seed),
                        test_images, train_labels, test_labels, args.quality_steps) for seed in seeds]
        result["quality"] = {name: [run[name] for run in runs] for name in runs[0]}
        lines += [f"k-NN top-1 after {args.quality_steps} steps of batch {setup.batch} at width {args.quality_width} "
                  f"(AdamW 2e-3, tau 0.99), seeds {args.quality_seeds}: "
                  + ", ".join(f"{name} {mean_and_spread(scores)}" for name, scores in result["quality"].items())]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
