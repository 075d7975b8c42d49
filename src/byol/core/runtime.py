"""Where and how the networks run: device, precision, memory format, seeds and RNG states."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from byol.core.errors import ByolError


def pick_device(name: str) -> torch.device:
    """`auto` (a CUDA GPU when one is visible, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ByolError(f"device {name!r} is not one byol runs on: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ByolError("device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ByolError(f"device {name} does not exist: {torch.cuda.device_count()} GPUs are visible")
    return device


def cpu_has_bf16() -> bool:
    """bf16 pays on a CPU only with native bf16 units (AVX512-BF16 or AMX); elsewhere it is
    emulated and many times slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_identity() -> str:
    """The CPU's model and instruction-set flags: which kernels PyTorch runs, and which of them
    misbehave, depend on them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return "|".join(next((line for line in lines if line.startswith(field)), field) for field in ("model name", "flags"))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the networks run in under autocast; None for plain fp32."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 up to fp32; fp32 and fp64 as they are (losses and statistics are never computed in half)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def channels_last_is_safe(model: torch.nn.Module) -> bool:
    """False where channels_last would hit a PyTorch 2.14 / oneDNN bug on AVX2 CPUs: the weight
    gradient of a 1x1 stride-2 convolution with fewer than 8 input channels corrupts the heap
    (the downsampling shortcut of a ResNet narrower than width 1/8)."""
    return not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 8
        for m in model.modules()
    )


def refuse_compile_without_a_compiler(device: torch.device) -> None:
    """torch.compile builds C++ kernels for a CPU: without a compiler its first step would fail
    with a long traceback, so the run is refused before it starts."""
    if device.type != "cpu":
        return
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise ByolError("compile: true on a CPU needs a C++ compiler (torch.compile builds its kernels in C++), "
                        f"and none works here (CXX={os.environ.get('CXX', 'unset')}): install g++ or clang, "
                        "or set CXX to one, or drop compile") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def own_random_stream(seed: int | None = None) -> Iterator[None]:
    """Torch's CPU generator seeded with `seed` (left as it is with None) inside, and the
    caller's random stream as it was after: building a network here draws nothing from it."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def in_eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` in eval mode inside (BatchNorm's running statistics used, not moved), and in the
    mode it was in after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def make_deterministic() -> None:
    """Deterministic kernels where PyTorch has them (a warning where it has none), so that a
    resumed run can end bit-identical to an uninterrupted one."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Python's, NumPy's and torch's generator states as tensors and plain data
    (what torch.load(weights_only=True) reads back)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    return dict(python=random.getstate(), torch=torch.get_rng_state(),
                numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), position=position,
                           has_gauss=has_gauss, gauss=gauss),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def caller_state_kept() -> Iterator[None]:
    """Restore what a run changes process-wide (thread count, deterministic mode, RNG
    states) when it ends, so that calling `pretrain` in-process leaves the caller as it was."""
    threads = torch.get_num_threads()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark = torch.backends.cudnn.benchmark
    rngs = rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.benchmark = benchmark
        set_rng_state(rngs)
