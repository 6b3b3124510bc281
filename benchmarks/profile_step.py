"""Where one training step's time goes: host (Python + dispatch) vs device kernels.

Runs the real training engine's step (`Trainer._train_step`) on the synthetic benchmark with
the data resident on the device, then profiles `--steps` steps with torch.profiler and
prints: wall ms per step, device-kernel ms per step, kernels per step, and the top
operators by device and by host time. Writes JSON.

    python benchmarks/profile_step.py --model supernet --batch 4096 --steps 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import get_args

import torch
from rich.console import Console
from rich.table import Table
from torch.profiler import ProfilerActivity, profile

from recnas.baselines import BASELINES, build_baseline
from recnas.configs import write_text_atomic
from recnas.scripts import output_file, positive_int, provenance, run_script, temporary_synthetic_store
from recnas.space import get_space
from recnas.space.samplers import ArchSampler
from recnas.supernet import Subnet, Supernet
from recnas.train import Trainer, TrainConfig


def build(name: str, space, meta):
    if name == "supernet":
        return Supernet(space, meta), ArchSampler(space, seed=0)
    if name == "subnet":
        return Subnet(ArchSampler(space, seed=123).sample(), space, meta), None
    return build_baseline(name, meta), None


def summary_table(summary: dict) -> Table:
    """The step's numbers as a table, as every benchmark prints them (null: not measured)."""
    t = Table(title=f"{summary['model']} step, batch {summary['batch']:,} on {summary['device']} (torch {summary['torch']})")
    for col in ("amp", "compile", "wall ms/step", "samples/s", "device ms/step", "kernels/step"):
        t.add_column(col, justify="left" if col in ("amp", "compile") else "right")
    dev, ker = summary["device_ms_per_step"], summary["kernels_per_step"]
    t.add_row(summary["amp"], "yes" if summary["compile"] else "no", f"{summary['wall_ms_per_step']:.2f}", f"{summary['samples_per_s']:,.0f}",
              "-" if dev is None else f"{dev:.2f}", "-" if ker is None else f"{ker:.0f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="synthetic rows, generated into a temporary folder")
    ap.add_argument("--batch", type=positive_int, default=4096, help="training batch size")
    ap.add_argument("--steps", type=positive_int, default=20, help="steps timed, then as many profiled (after 10 warm-up steps, 30 with --compile)")
    ap.add_argument("--model", choices=("supernet", "subnet", *BASELINES), default="supernet", help="the supernet, a fixed random subnet or a baseline")
    ap.add_argument("--space", default="full", help="search space preset of the supernet and subnet")
    ap.add_argument("--amp", choices=get_args(TrainConfig.model_fields["amp"].annotation), default="off", help="mixed precision")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when there is one")
    ap.add_argument("--top", type=positive_int, default=15, help="operators listed in each profiler table")
    ap.add_argument("--out", type=output_file, default="benchmarks/out/profile_step.json", help="the summary JSON")
    ap.add_argument("--kernels", type=output_file, default=None, help="also write every device kernel (name, calls, us per step) to this JSON file")
    args = ap.parse_args()

    store = temporary_synthetic_store(args.rows)
    model, sampler = build(args.model, get_space(args.space), store.meta)
    cfg = TrainConfig(batch_size=args.batch, max_steps=10**9, eval_every=0, device=args.device, resident_data=args.device == "cuda", amp=args.amp, log_every=10**9, checkpoint_every=10**9, compile=args.compile)
    trainer = Trainer(model, cfg, store, sampler=sampler, progress=False)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def batches():
        while True:
            yield from trainer.train_loader

    it = batches()
    for _ in range(30 if args.compile else 10):  # warm-up: allocator, cuBLAS handles, lazy init
        trainer._train_step(next(it))
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        trainer._train_step(next(it))
    sync()
    wall_ms = (time.perf_counter() - t) / args.steps * 1e3

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            trainer._train_step(next(it))
        sync()
    events = prof.key_averages()
    dev_attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    on_device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]  # kernels, not the ops that launched them
    device_us = sum(getattr(e, dev_attr) for e in on_device)
    kernels = sum(e.count for e in on_device)
    summary = {
        "model": args.model, "batch": args.batch, "amp": args.amp, "compile": args.compile, "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__, "wall_ms_per_step": wall_ms, "samples_per_s": args.batch / wall_ms * 1e3,
        # on the CPU there is no device kernel to count: null, not a measured 0
        "device_ms_per_step": device_us / args.steps / 1e3 if cuda else None, "kernels_per_step": kernels / args.steps if cuda else None,
    }
    Console().print(summary_table(summary))
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.top))
    if cuda:
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    if args.kernels:
        rows = sorted(({"name": e.key, "calls_per_step": e.count / args.steps, "us_per_step": getattr(e, dev_attr) / args.steps} for e in on_device), key=lambda r: -r["us_per_step"])
        write_text_atomic(args.kernels, json.dumps(rows, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(provenance(summary, args, args.device), indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    run_script(main)
