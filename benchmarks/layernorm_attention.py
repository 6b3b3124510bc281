"""The two attention-operator kernels behind the supernet's large-batch speed-up, alone.

LayerNorm over the 16-wide embedding axis of [batch, tokens, 16] fp32 (what autocast runs):
`nn.LayerNorm` (PyTorch's fused kernel) vs `recnas.ops.norm.RowLayerNorm`'s closed form;
and the attention core softmax(QK^T)V on [batch, 2 heads, tokens, 8] bf16 with the softmax
in fp32 (autocast's default) vs in bf16 (what `recnas.ops.sparse.Attention` now asks for).
Forward + backward, mean of `--reps` timed calls after 3 warm-up calls. Needs a GPU.

    python benchmarks/layernorm_attention.py --batch 65536 --tokens 64,32
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn

from recnas.ops.norm import RowLayerNorm


def timed_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--tokens", default="64,32")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/out/layernorm_attention.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    dev = torch.device("cuda")
    rows = []
    for t in (int(v) for v in args.tokens.split(",")):
        x = torch.randn(args.batch, t, 16, device=dev, requires_grad=True)
        for name, norm in (("nn.LayerNorm", nn.LayerNorm(16)), ("RowLayerNorm", RowLayerNorm(16, min_elements=0))):
            norm = norm.to(dev)

            def step():
                norm(x).backward(torch.ones_like(x))

            rows.append({"kernel": "LayerNorm fp32 fwd+bwd", "variant": name, "tokens": t, "ms": timed_ms(step, args.reps)})
        q = torch.randn(args.batch, 2, t, 8, device=dev, dtype=torch.bfloat16, requires_grad=True)
        for name, dtype in (("softmax in fp32 (autocast)", None), ("softmax in bf16", torch.bfloat16)):

            def attention():
                with torch.autocast("cuda", torch.bfloat16):
                    scores = torch.matmul(q, q.transpose(-1, -2)) * 0.35
                    out = torch.matmul(torch.softmax(scores, -1, dtype=dtype), q)
                out.backward(torch.ones_like(out))

            rows.append({"kernel": "attention core bf16 fwd+bwd", "variant": name, "tokens": t, "ms": timed_ms(attention, args.reps)})
    print("| kernel | variant | batch x tokens x 16 | ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['kernel']} | {r['variant']} | {args.batch} x {r['tokens']} | {r['ms']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch, "rows": rows}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
