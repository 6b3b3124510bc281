"""How low can a model trained on N rows of the synthetic benchmark go? A structure-aware bound.

The Bayes-optimal log loss assumes the true click model is *known*; a model *learns* it from
N rows. This trains the "oracle": the planted click model's exact functional form
(`recnas.data.planted`: first-order terms, pairwise and 3-way latent products, dense x
categorical crosses and gates, the small MLP term) with every table and weight learnt from the
training split. No architecture can be expected to beat it at the same N, so its test log loss
says how much of the gap to the Bayes loss is learnable at all from N rows, and dropping a
kind of term (`--drop triple`) measures what a model that cannot represent that kind loses.
`--triples all` keeps everything else but hides *which* fields the 3-way terms read: they are
replaced by a learnt weight on every field triple, `sum_{i<j<k} w_ijk <u_i, u_j, u_k>` (with
an L1 penalty `--triple-l1` on w to select a few), the best a generic 3-way operator could do.

The tables are wider than the planted rank (`--latent-dim 32`, init std 0.02, against the
true rank 4): with 4-wide tables at std 0.1 the form converges slower and to a worse loss
(1M rows, seed 0: 0.4535 after 34 epochs, against 0.4499 after 5 with 32-wide tables), so a
rank-4 "bound" is one that generic models could beat (docs/benchmarks.md).

    python benchmarks/oracle_bound.py --rows 1000000          # early-stopped: converged
    python benchmarks/oracle_bound.py --rows 1000000 --drop triple --drop cross,gate
    python benchmarks/oracle_bound.py --rows 1000000 --triples all --triple-l1 1e-4

It trains on the GPU when there is one (`--device`); per-epoch progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recnas.configs import write_text_atomic
from recnas.data.store import CTRStore
from recnas.data.synthetic import generate, model_from_source
from recnas.scripts import output_file, positive_float, positive_int, provenance, run_script, torch_device
from recnas.train.trainer import embedding_param_ids

KINDS = ("pair", "triple", "cross", "gate", "mlp")
TRIPLES = ("planted", "all")


class Oracle(nn.Module):
    """The planted model's form with learnt tables; terms of a kind in `drop` are left out.

    `triples="all"`: the planted 3-way terms are replaced by a weighted sum over every field triple.
    """

    def __init__(self, planted, vocab_sizes: list[int], dense_mean: torch.Tensor, dense_std: torch.Tensor, drop: set[str], latent_dim: int = 32, init_std: float = 0.02, triples: str = "planted"):
        super().__init__()
        if triples not in TRIPLES:
            raise ValueError(f"triples must be one of {TRIPLES}, got {triples!r}")
        hidden = {"triple"} if triples == "all" else set()
        self.terms = [(i, t) for i, t in enumerate(planted.terms) if t.kind != "first" and t.kind not in drop | hidden]
        self.register_buffer("mean", dense_mean)
        self.register_buffer("std", dense_std)
        self.first = nn.ModuleList(nn.Embedding(v, 1) for v in vocab_sizes)
        self.latent = nn.ModuleList(nn.Embedding(v, latent_dim) for v in vocab_sizes)
        self.effect = nn.ModuleDict({str(i): nn.Embedding(vocab_sizes[t.fields[0]], 1) for i, t in self.terms if t.kind in ("cross", "gate")})
        for table in [*self.first, *self.latent, *self.effect.values()]:
            nn.init.normal_(table.weight, 0.0, init_std)
        self.dense = nn.Linear(len(dense_mean), 1)
        self.gate = nn.Parameter(torch.tensor([[2.0, 0.0]] * len(planted.terms)))  # slope, offset per gate term
        self.scale = nn.Parameter(torch.full((len(planted.terms),), 0.5))
        mlp = [t for _, t in self.terms if t.kind == "mlp"]
        n_in = latent_dim * len(mlp[0].fields) + len(mlp[0].dense) if mlp else 1
        self.mlp = nn.Sequential(nn.Linear(n_in, 64), nn.Tanh(), nn.Linear(64, 1))
        self.generic_triples = triples == "all" and "triple" not in drop
        if self.generic_triples:  # created last, so the planted form's initialisation is the same either way
            n = len(vocab_sizes)
            first, second = torch.triu_indices(n, n, 1)
            self.register_buffer("pair_i", first)
            self.register_buffer("pair_j", second)
            self.register_buffer("triple_mask", (torch.arange(n)[None, :] > second[:, None]).float())  # i < j < k: each triple once
            self.triple_weight = nn.Parameter(torch.randn(len(first), n) * init_std)

    def triple_penalty(self) -> torch.Tensor:
        """L1 norm of the generic triples' weights (0 without them)."""
        if not self.generic_triples:
            return torch.zeros((), device=self.scale.device)
        return (self.triple_weight * self.triple_mask).abs().sum()

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        z = (dense - self.mean) / self.std
        lat = lambda f: self.latent[f](sparse[:, f])  # noqa: E731
        out = self.dense(z).squeeze(-1) + sum(e(sparse[:, f]).squeeze(-1) for f, e in enumerate(self.first))
        if self.generic_triples:
            x = torch.stack([lat(f) for f in range(len(self.latent))], 1)  # [B, F, d]
            g3 = torch.bmm(x[:, self.pair_i] * x[:, self.pair_j], x.transpose(1, 2))  # [B, pairs, F]: <u_i, u_j, u_k>
            out = out + (g3 * (self.triple_weight * self.triple_mask)).sum((1, 2))
        for i, t in self.terms:
            if t.kind == "pair":
                v = (lat(t.fields[0]) * lat(t.fields[1])).sum(-1)
            elif t.kind == "triple":
                v = (lat(t.fields[0]) * lat(t.fields[1]) * lat(t.fields[2])).sum(-1)
            elif t.kind in ("cross", "gate"):
                x = z[:, t.dense[0]]
                v = (x if t.kind == "cross" else torch.sigmoid(self.gate[i, 0] * x + self.gate[i, 1])) * self.effect[str(i)](sparse[:, t.fields[0]]).squeeze(-1)
            else:  # mlp: its own output scale
                out = out + self.mlp(torch.cat([lat(f) for f in t.fields] + [z[:, list(t.dense)]], 1)).squeeze(-1)
                continue
            out = out + self.scale[i] * v
        return out


def _tensors(store: CTRStore, split: str, device: torch.device):
    a = store.split(split)
    return tuple(torch.from_numpy(np.array(x)).to(device) for x in (a.dense, a.sparse.astype(np.int64), a.label))


def _logloss(model: nn.Module, data, batch: int = 65_536) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(data[0][i : i + batch], data[1][i : i + batch]) for i in range(0, len(data[2]), batch)])
    model.train()
    return float(F.binary_cross_entropy_with_logits(logits, data[2]))


def run(store: CTRStore, drop: set[str], epochs: int, batch: int, lr: float, seed: int, device: str = "cpu", patience: int | None = None, triple_l1: float = 0.0, table_decay: float = 0.0, **form) -> dict:
    """Train the oracle for up to `epochs`, stopping after `patience` epochs without a better
    validation log loss; the test value is read at the best epoch. `form`: `Oracle`'s
    latent_dim, init_std and triples. `table_decay`: Adam's weight decay on the embedding tables
    alone, as the trainer's `embedding_weight_decay` gives the searched models and baselines (without
    it the form overfits 160k rows in 3-4 epochs and the bound is looser than those models)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    train, val, test = (_tensors(store, s, device) for s in ("train", "val", "test"))
    model = Oracle(model_from_source(store.meta), store.meta.vocab_sizes, train[0].mean(0), train[0].std(0) + 1e-6, drop, **form).to(device)
    tables = embedding_param_ids(model)
    groups = [{"params": [p for p in model.parameters() if id(p) not in tables]}, {"params": [p for p in model.parameters() if id(p) in tables], "weight_decay": table_decay}]
    opt = torch.optim.Adam(groups, lr=lr)
    best = {"val_logloss": float("inf")}
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for idx in torch.randperm(len(train[2]), device=device).split(batch):
            loss = F.binary_cross_entropy_with_logits(model(train[0][idx], train[1][idx]), train[2][idx])
            if triple_l1:
                loss = loss + triple_l1 * model.triple_penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss = _logloss(model, val)
        if val_loss < best["val_logloss"]:  # early stopping on validation: the test value is read at the best epoch
            best = {"val_logloss": val_loss, "test_logloss": _logloss(model, test), "epoch": epoch + 1}
        print(f"  epoch {epoch + 1}: val {val_loss:.4f} (best {best['val_logloss']:.4f}, test {best['test_logloss']:.4f} at epoch {best['epoch']})", file=sys.stderr, flush=True)
        if patience is not None and epoch + 1 - best["epoch"] >= patience:
            break
    return {"drop": sorted(drop), **form, "triple_l1": triple_l1, "table_decay": table_decay, **best, "epochs_run": epoch + 1, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a synthetic store (default: generate --rows rows with --seed)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows to generate without --data (cached in data/ beside --json-out)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated data and of the training")
    ap.add_argument("--epochs", type=positive_int, default=40, help="most epochs (early-stopped by --patience)")
    ap.add_argument("--batch", type=positive_int, default=2048, help="training batch size")
    ap.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better validation log loss")
    ap.add_argument("--latent-dim", type=int, default=32, help="width of the learnt latent tables (the planted rank is 4)")
    ap.add_argument("--init-std", type=float, default=0.02, help="std of the normal init of every table")
    ap.add_argument("--triples", choices=TRIPLES, default="planted", help="all: a learnt weight on every field triple instead of the planted ones")
    ap.add_argument("--triple-l1", type=float, default=0.0, help="L1 penalty on those weights (with --triples all)")
    ap.add_argument("--table-decay", type=float, default=0.0, help="weight decay on the embedding tables (the trainer's embedding_weight_decay)")
    ap.add_argument("--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda when there is one)")
    ap.add_argument("--drop", action="append", default=[], help=f"comma-separated term kinds to leave out ({', '.join(KINDS)}); repeat for more runs")
    ap.add_argument("--skip-full", action="store_true", help="run only the --drop variants, not the full form first")
    ap.add_argument("--json-out", type=output_file, default=Path("benchmarks/out/oracle_bound.json"), help="the result JSON")
    args = ap.parse_args()
    if args.latent_dim < 1 or not args.init_std > 0:
        ap.error(f"--latent-dim must be >= 1 and --init-std > 0 (got {args.latent_dim}, {args.init_std})")
    if args.table_decay < 0:
        ap.error(f"--table-decay must be >= 0 (got {args.table_decay})")
    if args.patience < 1:
        ap.error(f"--patience must be >= 1 (got {args.patience})")
    if args.triple_l1 < 0 or (args.triple_l1 and args.triples != "all"):
        ap.error(f"--triple-l1 must be >= 0 and needs --triples all (got {args.triple_l1}, --triples {args.triples})")
    variants = ([] if args.skip_full else [set()]) + [set(d.split(",")) for d in args.drop]
    if not variants:
        ap.error("--skip-full needs at least one --drop (there would be nothing to run)")
    for v in variants:
        if v - set(KINDS):
            ap.error(f"--drop: unknown term kinds {sorted(v - set(KINDS))}; choose from {', '.join(KINDS)}")
    path = args.data or args.json_out.parent / "data" / f"synthetic-{args.rows}-seed{args.seed}"  # beside the result (benchmarks/out by default)
    if not (path / "meta.json").exists():  # after the checks: generating 1M+ rows takes a while
        generate(path, rows=args.rows, seed=args.seed)
    store = CTRStore(path)
    model_from_source(store.meta)  # a store the synthetic generator did not make: a DataError, before its missing Bayes loss
    bayes = store.meta.bayes["test_logloss"]
    rows = []
    print(f"{'left out':<14} {'val log loss':>12} {'test log loss':>13} {'test gap to Bayes':>17} {'epoch':>5}")
    for v in variants:
        r = run(store, v, args.epochs, args.batch, args.lr, args.seed, args.device, args.patience, args.triple_l1, args.table_decay, latent_dim=args.latent_dim, init_std=args.init_std, triples=args.triples)
        rows.append(r)
        print(f"{','.join(r['drop']) or '-':<14} {r['val_logloss']:>12.4f} {r['test_logloss']:>13.4f} {r['test_logloss'] - bayes:>+17.4f} {r['epoch']:>5}", flush=True)
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": str(path), "rows": store.meta.rows, "bayes": store.meta.bayes, "args": {k: str(v) for k, v in vars(args).items()}, "results": rows}
    provenance(out, args, args.device)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.json_out, json.dumps(out, indent=2))
    print(f"-> {args.json_out}")


if __name__ == "__main__":
    run_script(main)
