"""Training throughput (samples/s) of the supernet, a fixed subnet and the baselines.

Runs the real training engine (recnas.train.Trainer) for a fixed number of steps after a
warm-up run, on the synthetic benchmark, with the data resident on the device when it is a
GPU. Prints a table and writes JSON.

    python benchmarks/train_throughput.py --rows 200000 --batch-sizes 1024,4096 --steps 30
    python benchmarks/train_throughput.py --models xdeepfm,autoint --baseline-hparams cpu --batch-sizes 1024 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args

import torch

from recnas.baselines import build_baseline
from recnas.configs import write_text_atomic
from recnas.data.store import CTRStore
from recnas.scripts import output_file, positive_int, positive_ints, provenance, run_script, temporary_synthetic_store
from recnas.search.job import BASELINE_NAMES, PRESETS
from recnas.space import get_space
from recnas.space.samplers import ArchSampler
from recnas.supernet import Subnet, Supernet
from recnas.train import Trainer, TrainConfig


def measure(make_model, store, batch, steps, device, sampler_factory=None, resident=True, amp="auto", compile_=False, warmup=None) -> dict:
    """samples/s over `steps` training steps of one Trainer, after `warmup` steps of the same
    Trainer (so lazy initialisation, autotuning and compilation are not timed)."""
    warmup = warmup if warmup is not None else (30 if compile_ else max(3, steps // 5))
    cfg = TrainConfig(batch_size=batch, max_steps=warmup + steps, eval_every=0, device=device, resident_data=resident and device == "cuda", amp=amp, log_every=10**9, checkpoint_every=10**9, compile=compile_)
    trainer = Trainer(make_model(), cfg, store, sampler=sampler_factory() if sampler_factory else None, progress=False)
    t = time.perf_counter()
    trainer.fit(stop_after=warmup)
    warm_s = time.perf_counter() - t
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    trainer.fit()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    return {"samples_per_s": steps * batch / wall, "steps": steps, "wall_s": wall, "warmup_steps": warmup, "warmup_s": warm_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="synthetic rows, generated into a temporary folder (without --data)")
    ap.add_argument("--batch-sizes", type=positive_ints, default="1024,4096", help="comma-separated, each model timed at each")
    ap.add_argument("--steps", type=positive_int, default=30, help="steps timed, after a warm-up of a fifth as many (at least 3; 30 with --compile)")
    ap.add_argument("--space", default="full", help="search space preset of the supernet and subnet")
    ap.add_argument("--models", default="supernet,subnet,dlrm", help=f"supernet, subnet and any baseline ({', '.join(BASELINE_NAMES)})")
    ap.add_argument("--baseline-hparams", default=None, help="a job budget (e.g. cpu) whose baseline hyper-parameters to use; default: each baseline's own")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when there is one")
    ap.add_argument("--amp", choices=get_args(TrainConfig.model_fields["amp"].annotation), default="auto", help="mixed precision")
    ap.add_argument("--compile", action="store_true", help="torch.compile (CUDA graphs on GPU); the supernet trains on masked paths")
    ap.add_argument("--out", type=output_file, default="benchmarks/out/train_throughput.json", help="the result JSON")
    ap.add_argument("--data", default=None, help="existing store (default: generate synthetic rows)")
    args = ap.parse_args()
    unknown = set(args.models.split(",")) - {"supernet", "subnet", *BASELINE_NAMES}
    if unknown:
        ap.error(f"unknown --models {sorted(unknown)}; choose from supernet, subnet, {', '.join(BASELINE_NAMES)}")
    if args.baseline_hparams is not None and args.baseline_hparams not in PRESETS:
        ap.error(f"--baseline-hparams: unknown budget {args.baseline_hparams!r}; choose from {', '.join(PRESETS)}")

    store = temporary_synthetic_store(args.rows) if args.data is None else CTRStore(args.data)
    space = get_space(args.space)
    meta = store.meta
    fixed = ArchSampler(space, seed=123).sample()
    makers = {
        "supernet": (lambda: Supernet(space, meta), lambda: ArchSampler(space, seed=0)),
        "subnet": (lambda: Subnet(fixed, space, meta), None),
    }
    hparams = PRESETS[args.baseline_hparams]["baseline_hparams"] if args.baseline_hparams else {}
    for name in BASELINE_NAMES:  # each baseline with the hyper-parameters of --baseline-hparams' preset
        makers[name] = (lambda name=name: build_baseline(name, meta, **hparams.get(name, {})), None)

    results = []
    for batch in args.batch_sizes:
        for name in args.models.split(","):
            make, samp = makers[name]
            r = measure(make, store, batch, args.steps, args.device, samp, amp=args.amp, compile_=args.compile)
            r.update(model=name, batch=batch)
            results.append(r)
            print(f"{name:>9} batch {batch:>6}: {r['samples_per_s']:>12,.0f} samples/s  ({r['wall_s']:.2f}s for {r['steps']} steps; warm-up {r['warmup_s']:.1f}s)", flush=True)
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "amp": args.amp,
        "compile": args.compile,
        "space": args.space,
        "baseline_hparams": args.baseline_hparams,
        "rows": len(store.split("train")),
        "fixed_subnet": fixed.to_json(),
        "results": results,
    }
    provenance(info, args, args.device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(info, indent=2))
    print(f"\n| model | batch | samples/s (amp {args.amp}, compile {args.compile}) |\n|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['batch']} | {r['samples_per_s']:,.0f} |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    run_script(main)
