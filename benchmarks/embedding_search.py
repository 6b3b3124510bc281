"""Benchmark: searched embedding widths vs a uniform width-16 model under <= 80% of its parameters.

For each seed: train the embedding supernet + RL search with a budget of `fraction` x the
uniform-16 table parameters, retrain the searched widths from scratch, and retrain the
uniform-16 model from scratch with the same backbone, config and seed. Prints a table and
writes JSON to --out (default benchmarks/out/embedding_search.json); the synthetic data is
cached beside it.

    python benchmarks/embedding_search.py --rows 60000 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from recnas.configs import write_text_atomic
from recnas.data.store import CTRStore
from recnas.data.synthetic import generate
from recnas.embedding.budget import table_params
from recnas.embedding.config import EmbedSearchConfig
from recnas.embedding.pipeline import retrain, run_search, stability
from recnas.scripts import non_negative_int, output_file, positive_float, positive_int, run_script

OUT = Path(__file__).resolve().parent / "out"


def synthetic_store(rows: int, n_sparse: int, max_vocab: int, out: Path = OUT) -> Path:
    """The synthetic benchmark with these settings (seed 0), generated once under `out`. Every
    setting is in the folder's name: a store cached under another --max-vocab was reused as if
    it were this one."""
    path = out / f"synthetic_{rows}_{n_sparse}_vocab{max_vocab}"
    if not (path / "meta.json").is_file():
        generate(path, rows=rows, seed=0, n_sparse=n_sparse, max_vocab=max_vocab, overwrite=True)
    return path


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="existing store (default: generate the synthetic benchmark, cached in the folder of --out)")
    p.add_argument("--rows", type=positive_int, default=60_000, help="synthetic rows (8:1:1 split)")
    p.add_argument("--n-sparse", type=positive_int, default=26, help="synthetic categorical fields")
    p.add_argument("--max-vocab", type=positive_int, default=2000, help="largest synthetic field vocabulary")
    p.add_argument("--seeds", type=positive_int, default=3, help="how many seeds (0 .. N-1): one search and two retrainings each")
    p.add_argument("--fraction", type=positive_float, default=0.8, help="budget as a fraction of the uniform-16 tables")
    p.add_argument("--sampler", choices=["adaptive", "uniform"], default="adaptive", help="how the supernet samples widths while it trains")
    p.add_argument("--supernet-epochs", type=positive_float, default=2.0, help="epochs of embedding-supernet training")
    p.add_argument("--iterations", type=positive_int, default=100, help="RL search iterations")
    p.add_argument("--val-rows", type=positive_int, default=4096, help="validation rows scoring each sampled candidate")
    p.add_argument("--epochs", type=positive_int, default=4, help="most epochs of each from-scratch retraining (early-stopped)")
    p.add_argument("--batch-size", type=positive_int, default=512, help="batch size of the supernet and the retrainings")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when there is one")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--out", type=output_file, default=OUT / "embedding_search.json", help="the result JSON (default: benchmarks/out/embedding_search.json)")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data is None:
        args.data = synthetic_store(args.rows, args.n_sparse, args.max_vocab, out=args.out.parent)  # beside the result, not in the checkout
    store = CTRStore(args.data)
    vocab = store.meta.vocab_sizes
    uniform = [16] * len(vocab)
    budget = int(args.fraction * table_params(vocab, uniform))
    rows_meta = store.meta.rows
    base = {
        "device": args.device,
        "supernet": {"epochs": args.supernet_epochs, "batch_size": args.batch_size, "sampler": args.sampler},
        "search": {"iterations": args.iterations, "val_rows": args.val_rows},
        "retrain": {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device, "early_stopping_patience": 1},
    }
    rows, t0 = [], time.perf_counter()
    for seed in range(args.seeds):
        cfg = EmbedSearchConfig.from_dict({**base, "seed": seed, "retrain": {**base["retrain"], "seed": seed}})
        report = run_search(store, cfg, budget, seeds=1, progress=True)
        _, ref = retrain(store, uniform, cfg)
        rows.append({
            "seed": seed, "widths": report["emb_dims"], "params": report["params"], "uniform16_params": table_params(vocab, uniform),
            "searched": report["retrain"], "uniform16": ref, "search_seconds": report["runs"][0]["seconds"],
            "search_run": {k: report["runs"][0][k] for k in ("supernet_steps", "supernet_val_logloss", "supernet_last_loss", "sampler_final_probs", "probs")},
        })
        r = rows[-1]
        print(f"seed {seed}: params {r['params']:,} ({r['params'] / r['uniform16_params']:.1%} of uniform-16)  test logloss searched "
              f"{r['searched']['test']['logloss']:.5f} vs uniform-16 {r['uniform16']['test']['logloss']:.5f}", flush=True)

    def stat(key, model):
        v = np.array([r[model]["test"][key] for r in rows])
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    diff = np.array([r["searched"]["test"]["logloss"] - r["uniform16"]["test"]["logloss"] for r in rows])
    summary = {
        "searched_test_logloss": stat("logloss", "searched"), "uniform16_test_logloss": stat("logloss", "uniform16"),
        "searched_test_auc": stat("auc", "searched"), "uniform16_test_auc": stat("auc", "uniform16"),
        "logloss_diff_mean": float(diff.mean()), "logloss_diff_std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
        "seeds_searched_not_worse": int((diff <= 0).sum()),
        "param_ratio_mean": float(np.mean([r["params"] / r["uniform16_params"] for r in rows])),
        "stability": stability([r["widths"] for r in rows], store.meta.cat_names),
    }
    print()
    print(f"{'model':<12}{'table params':>14}{'test logloss (mean ± sd)':>28}{'test AUC (mean ± sd)':>26}")
    for name, params in (("uniform-16", rows[0]["uniform16_params"]), ("searched", float(np.mean([r["params"] for r in rows])))):
        key = "uniform16" if name == "uniform-16" else "searched"
        ll, auc = summary[f"{key}_test_logloss"], summary[f"{key}_test_auc"]
        print(f"{name:<12}{params:>14,.0f}{ll[0]:>18.5f} ± {ll[1]:.5f}{auc[0]:>16.5f} ± {auc[1]:.5f}")
    print(f"searched - uniform16 test logloss: {summary['logloss_diff_mean']:+.5f} ± {summary['logloss_diff_std']:.5f} "
          f"(not worse on {summary['seeds_searched_not_worse']}/{len(rows)} seeds); params {summary['param_ratio_mean']:.1%} of uniform-16; "
          f"width agreement across seeds {summary['stability']['overall_agreement']:.1%}")
    bayes = (store.meta.bayes or {}).get("test_logloss") if isinstance(store.meta.bayes, dict) else None
    result = {
        "benchmark": "embedding_search", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "data": {"dir": str(args.data), "rows": rows_meta, "fields": len(vocab), "vocab_sizes": vocab, "bayes": store.meta.bayes},
        "budget_params": budget, "fraction": args.fraction, "args": {k: str(v) for k, v in vars(args).items()},
        "runs": rows, "summary": summary, "bayes_test_logloss": bayes, "seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
