"""Self-attention over a few dozen tokens with tiny heads, as one Triton program per (row, head).

The supernet's attention operator runs on [batch, <= 64 tokens, 16] with two 8-wide heads.
PyTorch's fused kernels are built for long sequences and wide heads: the memory-efficient
kernel pads each head to 32 columns and took 2.2 ms of a 14.4 ms masked supernet step at batch
4,096 on an H100 (the explicit form: 2.4 ms; cuDNN's: 3.6 ms; docs/benchmarks.md). Here one
program holds a whole sequence (scores are at most 128 x 128), so there is no tiling, no online
softmax and no [b, heads, t, t] tensor in memory; it reads the fused qkv projection in place
and writes the output already in [b, t, heads * d] order, so no permute copies either: 32 us
forward + 45 us backward per block in that step, which then ran at 316k samples/s.

Only CUDA tensors of 16- or 32-bit floats with <= 128 tokens take this path
(`supported`); everything else uses `F.scaled_dot_product_attention` (recnas.ops.sparse).
Registered as a custom op, so torch.compile keeps it and CUDA graphs capture it.
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs never take this path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on GPU machines only
    triton = None

MAX_TOKENS = 128
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def supported(qkv: torch.Tensor, heads: int) -> bool:
    """Whether `attention(qkv, heads, mask)` runs here (else the caller uses SDPA)."""
    return triton is not None and qkv.is_cuda and qkv.dtype in _DTYPES and qkv.dim() == 3 and qkv.shape[1] <= MAX_TOKENS and qkv.shape[2] % (3 * heads) == 0


def attention(qkv: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V per head for `qkv` = [b, t, 3 * e] (q, k, v each [heads, d] per
    token); `mask` ([t], 0/1) hides keys. Returns [b, t, e]."""
    return torch.ops.recnas.token_attention(qkv.contiguous(), None if mask is None else mask.contiguous(), heads)[0]


if triton is not None:

    @triton.jit
    def _tiles(QKV, MASK, T, E: tl.constexpr, D: tl.constexpr, H: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's (row, head): its q, k, v tiles, their offsets in qkv and in the output,
        which tokens exist, and which keys may be attended."""
        pid = tl.program_id(0)
        row, head = pid // H, pid % H
        t = tl.arange(0, BLOCK_T)
        d = tl.arange(0, BLOCK_D)
        valid = t < T
        tile = valid[:, None] & (d < D)[None, :]
        offs = row.to(tl.int64) * T * 3 * E + head * D + t[:, None] * (3 * E) + d[None, :]
        out_offs = row.to(tl.int64) * T * E + head * D + t[:, None] * E + d[None, :]
        q = tl.load(QKV + offs, mask=tile, other=0.0)
        k = tl.load(QKV + offs + E, mask=tile, other=0.0)
        v = tl.load(QKV + offs + 2 * E, mask=tile, other=0.0)
        keep = valid
        if HAS_MASK:
            keep = keep & (tl.load(MASK + t, mask=valid, other=0.0) != 0)
        return pid, t, valid, tile, offs, out_offs, q, k, v, keep

    @triton.jit
    def _forward_kernel(QKV, MASK, OUT, LSE, T, scale, E: tl.constexpr, D: tl.constexpr, H: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        pid, t, valid, tile, offs, out_offs, q, k, v, keep = _tiles(QKV, MASK, T, E, D, H, HAS_MASK, BLOCK_T, BLOCK_D)
        s = tl.where(keep[None, :], tl.dot(q, tl.trans(k)) * scale, float("-inf"))
        m = tl.max(s, 1)
        p = tl.exp(s - m[:, None])
        total = tl.sum(p, 1)
        o = tl.dot((p / total[:, None]).to(v.dtype), v)
        tl.store(OUT + out_offs, o.to(OUT.dtype.element_ty), mask=tile)
        tl.store(LSE + pid.to(tl.int64) * T + t, m + tl.log(total), mask=valid)

    @triton.jit
    def _backward_kernel(QKV, MASK, OUT, DOUT, LSE, DQKV, T, scale, E: tl.constexpr, D: tl.constexpr, H: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        pid, t, valid, tile, offs, out_offs, q, k, v, keep = _tiles(QKV, MASK, T, E, D, H, HAS_MASK, BLOCK_T, BLOCK_D)
        o = tl.load(OUT + out_offs, mask=tile, other=0.0)
        do = tl.load(DOUT + out_offs, mask=tile, other=0.0)
        lse = tl.load(LSE + pid.to(tl.int64) * T + t, mask=valid, other=0.0)
        s = tl.where(keep[None, :], tl.dot(q, tl.trans(k)) * scale, float("-inf"))
        p = tl.where(valid[:, None], tl.exp(s - lse[:, None]), 0.0)  # padding query rows: none
        dv = tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        ds = p * (dp - delta[:, None]) * scale
        dq = tl.dot(ds.to(k.dtype), k)
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q)
        ty = DQKV.dtype.element_ty
        tl.store(DQKV + offs, dq.to(ty), mask=tile)
        tl.store(DQKV + offs + E, dk.to(ty), mask=tile)
        tl.store(DQKV + offs + 2 * E, dv.to(ty), mask=tile)

    def _launch(qkv: torch.Tensor, heads: int) -> tuple[tuple[int], dict]:
        """The grid (one program per row and head) and the shape arguments of both kernels."""
        b, t, e3 = qkv.shape
        e = e3 // 3
        d = e // heads
        return (b * heads,), dict(T=t, scale=d**-0.5, E=e, D=d, H=heads, BLOCK_T=max(16, triton.next_power_of_2(t)), BLOCK_D=max(16, triton.next_power_of_2(d)))

    # custom_op, not triton_op: as a triton_op, inductor emitted the kernel into the compiled
    # supernet step, where it ran at 183 + 96 us per block against 32 + 45 us when launched from
    # Python, which inductor keeps (and CUDA graphs capture) for an opaque custom op
    @torch.library.custom_op("recnas::token_attention", mutates_args=())
    def _token_attention(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, e3 = qkv.shape
        grid, cfg = _launch(qkv, heads)
        out = qkv.new_empty(b, t, e3 // 3)
        lse = torch.empty(b * heads, t, device=qkv.device, dtype=torch.float32)
        _forward_kernel[grid](qkv, qkv if mask is None else mask, out, lse, HAS_MASK=mask is not None, num_warps=4, **cfg)
        return out, lse

    @torch.library.custom_op("recnas::token_attention_backward", mutates_args=())
    def _token_attention_backward(grad: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
        grid, cfg = _launch(qkv, heads)
        dqkv = torch.empty_like(qkv)
        _backward_kernel[grid](qkv, qkv if mask is None else mask, out, grad, lse, dqkv, HAS_MASK=mask is not None, num_warps=4, **cfg)
        return dqkv

    @_token_attention.register_fake
    def _(qkv, mask, heads):
        b, t, e3 = qkv.shape
        return qkv.new_empty(b, t, e3 // 3), qkv.new_empty(b * heads, t, dtype=torch.float32)

    @_token_attention_backward.register_fake
    def _(grad, qkv, out, lse, mask, heads):
        return torch.empty_like(qkv)

    def _setup_context(ctx, inputs, output):
        qkv, mask, heads = inputs
        out, lse = output
        ctx.heads = heads
        ctx.save_for_backward(qkv, out, lse, mask)

    def _backward(ctx, grad_out, _grad_lse):  # lse: kept for this kernel; token_attention returns only out, so no gradient flows into lse
        qkv, out, lse, mask = ctx.saved_tensors
        return torch.ops.recnas.token_attention_backward(grad_out.contiguous(), qkv, out, lse, mask, ctx.heads), None, None

    torch.library.register_autograd("recnas::token_attention", _backward, setup_context=_setup_context)
