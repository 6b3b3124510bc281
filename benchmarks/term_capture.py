"""Which kinds of planted interaction does a trained model capture? A per-term regression.

On the synthetic benchmark the true logit is `bias + sum_t c_t` with `c_t = scale_t * term_t`
(`recnas.data.planted`: first-order, pairwise and 3-way latent products, dense x categorical
crosses and gates, a small MLP). A model's test log loss says *how far* it is from the Bayes
loss, not *what* it misses. Regressing the model's logit f on the true contributions,
f ~ b0 + sum_t b_t c_t (least squares on the test rows), says it per term: b_t = 1 means the
model reproduces that interaction at full strength, 0 that it does not see it at all. The
residual std is the part of f that no planted term explains (noise the model fitted).

    python benchmarks/term_capture.py --data STORE MODEL.pt [MODEL.pt ...] [--names a,b] [--rows N] [--out F]
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from recnas.configs import write_text_atomic
from recnas.data.store import CTRStore
from recnas.data.synthetic import model_from_source
from recnas.scripts import output_file, provenance, run_script
from recnas.train.metrics import ctr_metrics, json_safe, predict
from recnas.train.model_factory import check_data, load_trained


def capture(f: np.ndarray, contrib: np.ndarray, labels: np.ndarray, kinds: list[str], bias: float) -> dict:
    """Log losses, R^2 of f against the true logit and the per-term OLS coefficients.

    f [n]: model logits; contrib [n, T]: scaled true term values c_t; kinds [T]: each term's kind.
    """
    f, c = np.asarray(f, np.float64).reshape(-1), np.asarray(contrib, np.float64)
    true = bias + c.sum(1)
    x = np.column_stack([np.ones(len(f)), c])
    beta = np.linalg.lstsq(x, f, rcond=None)[0]
    resid = f - x @ beta
    model, bayes = ctr_metrics(labels, f), ctr_metrics(labels, true)
    by_kind = {}
    for k in dict.fromkeys(kinds):  # kinds in order of first appearance
        coef = [float(b) for b, kind in zip(beta[1:], kinds) if kind == k]
        by_kind[k] = {"coef": coef, "mean": float(np.mean(coef))}
    return {
        "rows": int(len(f)), "logloss": model["logloss"], "auc": model["auc"],
        "bayes_logloss": bayes["logloss"], "bayes_auc": bayes["auc"],
        "r2": float(1.0 - np.mean((f - true) ** 2) / np.var(true)),
        "intercept": float(beta[0]), "coef": [float(b) for b in beta[1:]], "by_kind": by_kind,
        "residual_std": float(resid.std()), "logit_std": float(f.std()), "true_logit_std": float(true.std()),
    }


def _default_name(path: Path) -> str:
    return path.parent.name if path.name in ("model.pt", "checkpoint.pt") else path.stem


def _cell(r: dict, kind: str) -> str:
    k = r["by_kind"][kind]
    return f"[bold]{k['mean']:.2f}[/]" + (f"\n[dim]{' '.join(f'{b:.2f}' for b in k['coef'])}[/]" if len(k["coef"]) > 1 else "")


def report(results: list[dict], terms: list[dict], console: Console) -> None:
    bayes = results[0]["bayes_logloss"]
    t = Table(title=f"test rows {results[0]['rows']:,}, Bayes log loss {bayes:.5f}")
    for col in ("model", "log loss", "vs Bayes", "R^2 (true logit)", "resid. std", "logit std"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        t.add_row(r["name"], f"{r['logloss']:.5f}", f"{r['logloss'] - bayes:+.5f}", f"{r['r2']:.3f}", f"{r['residual_std']:.3f}", f"{r['logit_std']:.3f}")
    console.print(t)
    t = Table(title="OLS coefficient of each planted term in the logit (1 = captured, 0 = missed):\nper-kind mean, then each term")
    t.add_column("kind")
    t.add_column("terms", justify="right")
    t.add_column("true std", justify="right")
    for r in results:
        t.add_column(r["name"], justify="right")
    for kind in results[0]["by_kind"]:
        std = np.sqrt(sum(x["std"] ** 2 for x in terms if x["kind"] == kind))  # of the kind's sum, terms taken as independent
        t.add_row(kind, str(sum(x["kind"] == kind for x in terms)), f"{std:.2f}", *(_cell(r, kind) for r in results))
    console.print(t)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the synthetic store the models were trained on")
    ap.add_argument("models", type=Path, nargs="+", help="model.pt / checkpoint.pt files (subnets or baselines)")
    ap.add_argument("--names", help="comma-separated display names, one per model (default: each file's folder name)")
    ap.add_argument("--rows", type=int, default=200_000, help="use the first N rows of the test split (default 200000)")
    ap.add_argument("--out", type=output_file, default=Path("benchmarks/out/term_capture.json"), help="the result JSON")
    args = ap.parse_args(argv)
    names = args.names.split(",") if args.names else [_default_name(p) for p in args.models]
    if args.rows < 1:
        ap.error("--rows must be positive")
    if len(names) != len(args.models):
        ap.error(f"--names gives {len(names)} names for {len(args.models)} models")
    store = CTRStore(args.data)
    planted = model_from_source(store.meta)
    test = store.split("test").take(slice(0, args.rows))
    contrib = planted.term_contributions(test.dense, test.sparse)
    kinds = [t.kind for t in planted.terms]
    terms = [{"kind": t.kind, "fields": list(t.fields), "dense": list(t.dense), "scale": float(s), "std": float(c.std())} for t, s, c in zip(planted.terms, planted.scales, contrib.T)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for name, path in zip(names, args.models):
        model, spec, _ = load_trained(path)
        if spec["kind"] == "supernet":
            ap.error(f"{path}: a supernet has no single logit; pass a subnet or baseline model")
        check_data(spec, store.meta, where=str(args.data))
        labels, f = predict(model.to(device), test, device=device, batch_size=65_536)
        results.append({"name": name, "path": str(path), "kind": spec["kind"], **capture(f, contrib, labels, kinds, planted.bias)})
    report(results, terms, Console())
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": str(args.data), "rows": len(test), "bias": float(planted.bias), "terms": terms, "models": results}
    provenance(out, args, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(json_safe(out), indent=2))
    Console().print(f"-> {args.out}")
    return out


if __name__ == "__main__":
    run_script(main)
