"""CPU cost of the `cpu` budget's slowest components, before and after their rewrites, A/B in one process.

Each variant is timed in CPU seconds of this process (`time.process_time`, so other work on a
shared machine inflates it less than wall time; `--clock wall` for several threads),
interleaved with the others, `--repeats` times (AutoInt's evaluation, seconds a call, half as
many and at least twice); the table shows the minimum, the median and how many calls gave them.
Components:

- `cin`: xDeepFM's CIN [16, 16] over 39 fields of 16 dims, batch 1,024, forward + backward.
  `before` is the formulation of 2026-12-02 ([B, O, H, d] intermediate through `einsum`), kept
  here as the reference; `after` is `recnas.baselines.interactions.CIN`.
- `xdeepfm step`: one training step (forward, backward, Adam) of the `cpu` budget's xDeepFM.
- `autoint eval`: AutoInt's forward over 20,000 rows in batches of 4,096 (the old default) and
  of 1,024 (`recnas.train.metrics.CPU_EVAL_BATCH`).
- `autoint attention`: AutoInt's three attention layers, batch 1,024, forward + backward, as
  written (`InteractingLayer`), through `F.scaled_dot_product_attention`, and with one fused
  projection and per-head matrix products on strided views (neither alternative is used).

    python benchmarks/cpu_components.py --threads 1 --repeats 7
    python benchmarks/cpu_components.py --threads 2 --clock wall --out benchmarks/out/cpu_components_2t.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from recnas.baselines import build_baseline
from recnas.baselines.interactions import CIN, InteractingLayer
from recnas.configs import write_text_atomic
from recnas.scripts import output_file, positive_int, temporary_synthetic_store
from recnas.search.job import PRESETS
from recnas.train.metrics import predict


def cin_before(self: CIN, x0: torch.Tensor) -> torch.Tensor:
    """CIN.forward as of 2026-12-02: each layer in [B, maps, d], the cheapest of three orders."""
    h, pooled = x0, []
    for conv, half in zip(self.convs, self.split):
        o, n_h, n_f = conv.out_channels, h.shape[1], x0.shape[1]
        sizes = {"outer": n_h * n_f, "fields": o * n_h, "maps": o * n_f}
        way = min(sizes, key=sizes.get)
        w = conv.weight.view(o, n_h, n_f)
        if way == "outer":
            z = conv(torch.einsum("bhd,bfd->bhfd", h, x0).flatten(1, 2))
        elif way == "fields":
            z = (torch.einsum("ohf,bfd->bohd", w, x0) * h.unsqueeze(1)).sum(2) + conv.bias[:, None]
        else:
            z = (torch.einsum("ohf,bhd->bofd", w, h) * x0.unsqueeze(1)).sum(2) + conv.bias[:, None]
        h, out = (z[:, :half], z[:, half:]) if half else (z, z)
        pooled.append(out.sum(-1))
    return torch.cat(pooled, dim=1)


def attention_sdpa(layer: InteractingLayer, x: torch.Tensor) -> torch.Tensor:
    b, f, _ = x.shape
    q, k, v = layer.qkv(x).view(b, f, 3, layer.heads, layer.head_dim).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(b, f, -1)
    return torch.relu(out + layer.res(x))


def attention_per_head(layer: InteractingLayer, x: torch.Tensor) -> torch.Tensor:
    """One projection for q, k, v and the residual; per-head bmm on strided views (no permute copies)."""
    b, f, _ = x.shape
    n = layer.heads
    proj = x @ torch.cat([layer.qkv.weight, layer.res.weight]).t()
    parts = proj.view(b, f, 4 * n, layer.head_dim).unbind(2)
    outs = [torch.bmm(torch.softmax(torch.bmm(parts[i], parts[n + i].transpose(1, 2)), -1), parts[2 * n + i]) for i in range(n)]
    return torch.relu(torch.cat(outs, -1) + torch.cat(parts[3 * n :], -1))


CLOCK = time.process_time


def timed(fn) -> float:
    t = CLOCK()
    fn()
    return CLOCK() - t


def run(variants: dict, repeats: int) -> dict:
    for fn in variants.values():  # warm-up
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    return {k: {"min_ms": min(v) * 1e3, "median_ms": statistics.median(v) * 1e3, "repeats": len(v)} for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=positive_int, default=7, help="timed calls per variant, interleaved (AutoInt's evaluation: half, at least 2)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="cpu: process time (all threads' CPU seconds); wall: elapsed time, the measure with --threads > 1")
    ap.add_argument("--out", type=output_file, default="benchmarks/out/cpu_components.json", help="the result JSON")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    store = temporary_synthetic_store(40_000)
    meta, train = store.meta, store.split("train")
    hp = PRESETS["cpu"]["baseline_hparams"]
    torch.manual_seed(0)
    results = {}

    # CIN alone
    xdeepfm = build_baseline("xdeepfm", meta, **hp["xdeepfm"])
    cin = xdeepfm.cin
    x = torch.randn(1024, xdeepfm.fields.n_fields, xdeepfm.fields.dim, requires_grad=True)
    g = torch.randn(1024, cin.out_dim)
    results["cin"] = run({"before": lambda: cin_before(cin, x).backward(g), "after": lambda: cin(x).backward(g)}, args.repeats)

    # xDeepFM training step
    dense = torch.from_numpy(train.dense[:1024].copy())
    sparse = torch.from_numpy(train.sparse[:1024].astype("int64"))
    label = torch.from_numpy(train.label[:1024].copy()).float()
    opt = torch.optim.Adam(xdeepfm.parameters(), lr=1e-3)

    def step():
        loss = F.binary_cross_entropy_with_logits(xdeepfm(dense, sparse), label)
        opt.zero_grad()
        loss.backward()
        opt.step()

    new_forward = CIN.forward

    def step_before():
        CIN.forward = cin_before
        try:
            step()
        finally:
            CIN.forward = new_forward

    results["xdeepfm step"] = run({"before": step_before, "after": step}, args.repeats)

    # AutoInt evaluation batches
    autoint = build_baseline("autoint", meta, **hp.get("autoint", {}))
    rows = min(20_000, len(train))
    results["autoint eval"] = run(
        {f"batch {b}": (lambda b=b: predict(autoint, train, batch_size=b, max_rows=rows)) for b in (4096, 1024)}, max(2, args.repeats // 2)
    )

    # AutoInt attention layers
    layers = list(autoint.attention)
    xa = torch.randn(1024, autoint.fields.n_fields, layers[0].qkv.in_features, requires_grad=True)
    ga = torch.randn(1024, autoint.fields.n_fields, layers[-1].heads * layers[-1].head_dim)

    def stack(fn):
        def go():
            h = xa
            for layer in layers:
                h = fn(layer, h)
            h.backward(ga)

        return go

    results["autoint attention"] = run(
        {"as written": stack(lambda layer, h: layer(h)), "sdpa": stack(attention_sdpa), "fused proj, per-head bmm": stack(attention_per_head)}, args.repeats
    )

    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "clock": args.clock,
        "torch": torch.__version__,
        "repeats": args.repeats,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(info, indent=2))
    print(f"torch {torch.__version__}, {args.threads} thread(s), ms per call ({'process CPU time' if args.clock == 'cpu' else 'wall time'})\n")
    print("| component | variant | min ms | median ms | calls |\n|---|---|---|---|---|")
    for comp, variants in results.items():
        for name, r in variants.items():
            print(f"| {comp} | {name} | {r['min_ms']:.1f} | {r['median_ms']:.1f} | {r['repeats']} |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
