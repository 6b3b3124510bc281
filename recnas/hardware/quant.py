"""Quantisation awareness: score a model as a PIM design point with limited precision would run it.

`quantized(model, config)` fake-quantises, for every crossbar-mapped layer
(`recnas.hardware.profile.is_crossbar`):
- its weights to `weight_bits` (in place, restored bit-exactly on exit);
- its inputs to `act_bits` (the DAC side);
- its outputs to `adc_bits`, but only when `adc_bits < config.lossless_adc_bits`, i.e. when
  the ADC cannot represent a column's partial sum exactly. This per-tensor output rounding is
  a pessimistic stand-in for dropping the low bits of every partial sum.
All quantisers are per tensor (symmetric, or unsigned for non-negative tensors) with a
straight-through gradient. Embedding tables
(DRAM) and digital units stay in full precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

from recnas.configs import require_type
from recnas.errors import ConfigError
from recnas.hardware.pim import PIMConfig
from recnas.hardware.profile import is_crossbar


def fake_quant(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round x to the levels of a `bits`-bit code over [-max|x|, max|x|] (per tensor): 2^(bits-1)-1
    steps each side when x has negative values, and 2^bits-1 steps over [0, max x] when it has
    none (e.g. after a ReLU: a DAC feeds unsigned bit-slices, so no bit goes to a sign that never
    occurs). Gradient passes straight through. No host synchronisation (GPU training stays async)."""
    if bits < 2:
        raise ConfigError(f"fake_quant needs at least 2 bits (sign + magnitude), got {bits}")
    d = x.detach()
    unsigned = d.amin() >= 0
    levels = torch.where(unsigned, 2.0**bits - 1, 2.0 ** (bits - 1) - 1)
    scale = (d.abs().amax() / levels).clamp_min(torch.finfo(d.dtype).tiny)
    q = torch.minimum(torch.maximum(torch.round(d / scale), torch.where(unsigned, 0.0, -levels)), levels) * scale
    q = torch.where(torch.isfinite(q), q, d).to(x.dtype)
    return x + (q - d)


@contextlib.contextmanager
def quantized(model: nn.Module, config: PIMConfig | None) -> Iterator[nn.Module]:
    """Run `model` under `config`'s weight, activation and ADC precision inside the block
    (`config=None`: at full precision, so callers need no branch for models without hardware).
    The weights are rounded in place and restored bit-exactly when the block ends."""
    if config is not None:
        require_type(config, PIMConfig, "quantized's config", "PIMConfig.from_dict(d) makes one from a dict")
    if config is None:
        yield model
        return
    layers = [m for m in model.modules() if is_crossbar(m)]
    saved = [m.weight.detach().clone() for m in layers]
    quant_out = config.adc_bits < config.lossless_adc_bits

    def pre(module, args):
        return (fake_quant(args[0], config.act_bits), *args[1:])

    def post(module, args, output):
        return fake_quant(output, config.adc_bits)

    handles = []
    try:
        with torch.no_grad():
            for m in layers:
                m.weight.copy_(fake_quant(m.weight, config.weight_bits))
        for m in layers:
            handles.append(m.register_forward_pre_hook(pre))
            if quant_out:
                handles.append(m.register_forward_hook(post))
        yield model
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, w in zip(layers, saved):
                m.weight.copy_(w)
