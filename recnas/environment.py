"""What a result was computed with. On the CPU the number of threads changes the order in which
every sum is added up, so the same job and seed with 1 and with 2 threads train slightly
different supernets, and a supernet-scored search can then pick another winner (measured: the
default job gives 0.4925 with 1 thread and 0.4943 with 2, docs/benchmarks.md). A recorded number
is reproducible only with the same threads, library versions, device and CPU kernels: they are
written beside it, and `threads` pins the one a user can choose."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch

import recnas


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what `platform` says; else "unknown")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: str | torch.device = "cpu") -> dict:
    """The versions, CPU threads and device a result comes from (for results.json), and the
    CPU and the kernel set PyTorch picked for it (`cpu_capability`: AVX512, AVX2, ...): the same
    code, data and threads gave another default job on another machine (2026-12-06: searched
    0.4943; 2026-12-07, with the code of 12-06: 0.4933, docs/benchmarks.md), as the kernels of
    another instruction set add up in another order."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine() or "unknown"
    return {
        "recnas": recnas.__version__,
        "torch": str(torch.__version__),  # a TorchVersion, which weights_only loading refuses
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": name,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """PyTorch's intra-op CPU threads set to `n` for the block, then restored (None: left as it
    is, PyTorch's default of one per core)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tf32_flags() -> tuple:
    """PyTorch's switches of TF32 on CUDA: float32 matmuls, and cuDNN's convolutions."""
    return (torch.backends.cuda.matmul, torch.backends.cudnn)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool = True) -> Iterator[None]:
    """CUDA's float32 matmuls and convolutions on tensor cores (TF32) inside the block, PyTorch's
    own settings put back after it: the trainer runs on CUDA so (docs/benchmarks.md, "TF32"), and
    a job keeps it for its whole run. It used to be switched on for the rest of the process as a
    Trainer was built, so every later float32 matmul of the caller's ran at TF32 precision.
    A setting already on is left alone (PyTorch refuses to report a precision set through both
    its legacy and its new API); `enabled=False` changes nothing."""
    turned = [f for f in _tf32_flags() if enabled and not f.allow_tf32]
    for f in turned:
        f.allow_tf32 = True
    try:
        yield
    finally:
        for f in turned:
            f.allow_tf32 = False


def tf32_for_this_process() -> None:
    """TF32 matmuls on CUDA (if there is a GPU) for the rest of this process: a worker process
    (a `side_by_side` task's, a Ray actor's) trains and scores as a job does inside
    `tf32_matmuls`, so its scores match the serial ones."""
    if torch.cuda.is_available():
        for flag in _tf32_flags():
            flag.allow_tf32 = True
