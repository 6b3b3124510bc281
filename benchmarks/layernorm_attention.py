"""The attention operator's kernels, alone: LayerNorm and the attention core.

LayerNorm over the 16-wide embedding axis of [batch, tokens, 16] fp32 (what autocast runs):
`nn.LayerNorm` (PyTorch's fused kernel) vs `recnas.ops.norm.RowLayerNorm`'s closed form.
The attention core softmax(QK^T/sqrt(8))V of 2 heads x 8 columns, from the fused [batch,
tokens, 48] bf16 qkv projection to [batch, tokens, 16], a quarter of the keys masked (as on
a masked supernet path): written out (softmax in bf16), PyTorch's SDPA kernels
(memory-efficient, cuDNN; the batch must stay below 65,536 for them), and
`recnas.ops.token_attention` (one Triton program per row and head, what the operator uses
on CUDA). Forward + backward, mean of `--reps` timed calls after 3 warm-up calls. Needs a GPU.

    python benchmarks/layernorm_attention.py --batch 65536 --tokens 64,32
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from recnas.configs import write_text_atomic
from recnas.ops import token_attention
from recnas.ops.norm import RowLayerNorm
from recnas.scripts import mean_seconds, output_file, positive_int, positive_ints, provenance


def _heads(qkv: torch.Tensor):
    b, t, _ = qkv.shape
    return qkv.view(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)


def _written_out(qkv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    q, k, v = _heads(qkv)
    scores = torch.matmul(q, k.transpose(-1, -2)) * 8**-0.5
    scores = scores.masked_fill(mask == 0, float("-inf"))
    out = torch.matmul(torch.softmax(scores, -1, dtype=scores.dtype), v)
    return out.transpose(1, 2).reshape(qkv.shape[0], qkv.shape[1], 16)


def _sdpa(qkv: torch.Tensor, mask: torch.Tensor, backend) -> torch.Tensor:
    q, k, v = _heads(qkv)
    with sdpa_kernel(backend):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[None, :])
    return out.transpose(1, 2).reshape(qkv.shape[0], qkv.shape[1], 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=positive_int, default=65536, help="rows of each [batch, tokens, 16] input (SDPA is timed only below 65,536)")
    ap.add_argument("--tokens", type=positive_ints, default="64,32", help="comma-separated token counts, one set of timings each")
    ap.add_argument("--reps", type=positive_int, default=20, help="timed calls per kernel, after 3 warm-up calls")
    ap.add_argument("--out", type=output_file, default="benchmarks/out/layernorm_attention.json", help="the result JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():  # one error line and exit code 2, as every script's user error
        print("error: this benchmark times CUDA kernels (Triton, SDPA) and needs a CUDA GPU; none is available here", file=sys.stderr)
        sys.exit(2)
    dev = torch.device("cuda")
    rows = []
    for t in args.tokens:
        x = torch.randn(args.batch, t, 16, device=dev, requires_grad=True)
        for name, norm in (("nn.LayerNorm", nn.LayerNorm(16)), ("RowLayerNorm", RowLayerNorm(16, min_elements=0))):
            norm = norm.to(dev)

            def step():
                norm(x).backward(torch.ones_like(x))

            rows.append({"kernel": "LayerNorm fp32 fwd+bwd", "variant": name, "tokens": t, "ms": mean_seconds(step, args.reps, "cuda") * 1e3})
        qkv = torch.randn(args.batch, t, 48, device=dev, dtype=torch.bfloat16, requires_grad=True)
        mask = (torch.arange(t, device=dev) < 3 * t // 4).float()
        grad = torch.randn(args.batch, t, 16, device=dev, dtype=torch.bfloat16)
        variants = {"written out, softmax in bf16": partial(_written_out, mask=mask), "triton token_attention": lambda x: token_attention.attention(x, 2, mask)}
        if args.batch < 65536:
            variants["SDPA memory-efficient"] = partial(_sdpa, mask=mask, backend=SDPBackend.EFFICIENT_ATTENTION)
            variants["SDPA cuDNN"] = partial(_sdpa, mask=mask, backend=SDPBackend.CUDNN_ATTENTION)
        for name, fn in variants.items():

            def attention(fn=fn):
                fn(qkv).backward(grad)

            rows.append({"kernel": "attention core bf16 fwd+bwd", "variant": name, "tokens": t, "ms": mean_seconds(attention, args.reps, "cuda") * 1e3})
    print("| kernel | variant | batch x tokens x 16 | ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['kernel']} | {r['variant']} | {args.batch} x {r['tokens']} | {r['ms']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch, "rows": rows}
    write_text_atomic(out, json.dumps(provenance(result, args, "cuda"), indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
