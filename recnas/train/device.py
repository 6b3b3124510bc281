"""Where a run trains: the device and mixed precision a config asks for, resolved on this
machine (or refused, before the work), and what a failed torch.compile says."""

from __future__ import annotations

import torch

from recnas.errors import ConfigError, exception_chain
from recnas.train.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu': the config's device, or --device)")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """auto = bf16 autocast on CUDA, none on CPU; fp16 (with a grad scaler) is CUDA-only."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: 'fp16' needs a CUDA device (use 'bf16' or 'off' on CPU)")
    return torch.float16 if amp == "fp16" else torch.bfloat16


def check_runs_here(cfg: TrainConfig, section: str) -> None:
    """Refuse a training config whose device or amp this machine lacks, naming its `section` of
    a larger config: checked before a long job's first stage, not when its training starts."""
    try:
        resolve_amp(cfg.amp, resolve_device(cfg.device))
    except ConfigError as exc:
        raise ConfigError(f"{section}: {exc}") from None


def no_compiler_reason(exc: BaseException) -> str | None:
    """The reason, when `exc` (from a compiled step) says torch.compile found no C/C++ compiler
    to build its kernels with (inductor's InvalidCxxCompiler on the CPU, Triton's launcher on a
    GPU); None otherwise."""
    for e in exception_chain(exc):
        text = str(e).strip()
        if type(e).__name__ == "InvalidCxxCompiler" or "InvalidCxxCompiler" in text or "Failed to find C compiler" in text:
            return text.splitlines()[0] if text else type(e).__name__  # torch's further lines suggest its debug settings
    return None
