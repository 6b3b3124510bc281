"""Training throughput (samples/s) of the supernet, a fixed subnet and DLRM.

Runs the real training engine (recnas.train.Trainer) for a fixed number of steps after a
warm-up run, on the synthetic benchmark, with the data resident on the device when it is a
GPU. Prints a table and writes JSON.

    python benchmarks/train_throughput.py --rows 200000 --batch-sizes 1024,4096 --steps 30
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from recnas.baselines import build_baseline
from recnas.data.store import CTRStore
from recnas.data.synthetic import generate
from recnas.space import get_space
from recnas.space.samplers import ArchSampler
from recnas.supernet import Subnet, Supernet
from recnas.train import Trainer, TrainConfig


def measure(make_model, store, batch, steps, device, sampler_factory=None, resident=True, amp="auto") -> dict:
    cfg = TrainConfig(batch_size=batch, max_steps=steps, eval_every=0, device=device, resident_data=resident and device == "cuda", amp=amp, log_every=10**9, checkpoint_every=10**9)
    warm = Trainer(make_model(), cfg.model_copy(update={"max_steps": max(3, steps // 5)}), store, sampler=sampler_factory() if sampler_factory else None, progress=False)
    warm.fit()
    trainer = Trainer(make_model(), cfg, store, sampler=sampler_factory() if sampler_factory else None, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    result = trainer.fit()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    # samples_per_s: the whole fit() call (setup included); step_samples_per_s: the engine's own step clock
    return {"samples_per_s": steps * batch / wall, "step_samples_per_s": result.samples_per_s, "steps": steps, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch-sizes", default="1024,4096")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--space", default="full")
    ap.add_argument("--models", default="supernet,subnet,dlrm")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--out", default="benchmarks/out/train_throughput.json")
    ap.add_argument("--data", default=None, help="existing store (default: generate synthetic rows)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    if args.data is None:
        generate(Path(tmp) / "data", rows=args.rows, seed=0)
        store = CTRStore(Path(tmp) / "data")
    else:
        store = CTRStore(args.data)
    space = get_space(args.space)
    meta = store.meta
    fixed = ArchSampler(space, seed=123).sample()
    makers = {
        "supernet": (lambda: Supernet(space, meta), lambda: ArchSampler(space, seed=0)),
        "subnet": (lambda: Subnet(fixed, space, meta), None),
        "dlrm": (lambda: build_baseline("dlrm", meta), None),
    }
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for name in args.models.split(","):
            make, samp = makers[name]
            r = measure(make, store, batch, args.steps, args.device, samp, amp=args.amp)
            r.update(model=name, batch=batch)
            results.append(r)
            print(f"{name:>9} batch {batch:>6}: {r['samples_per_s']:>12,.0f} samples/s (fit), {r['step_samples_per_s']:>12,.0f} (steps)  ({r['wall_s']:.2f}s for {r['steps']} steps)", flush=True)
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "space": args.space,
        "rows": len(store.split("train")),
        "fixed_subnet": fixed.to_json(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2))
    print("\n| model | batch | samples/s (whole fit) | samples/s (training steps) |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['batch']} | {r['samples_per_s']:,.0f} | {r['step_samples_per_s']:,.0f} |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
