"""Memory bandwidth achieved by the fused embedding lookup (`recnas.ops.embedding.FieldEmbedding`).

Criteo-sized tables (26 fields, Kaggle-like cardinalities, width 16), power-law ids, on the
current device. Reports GB/s of the lookup's own traffic (rows read + output written in the
forward; output gradient read + rows accumulated in the backward) and its fraction of the
device-to-device copy bandwidth measured on the same device (the practical ceiling).

    python benchmarks/embedding_bandwidth.py --batch 65536
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from recnas.configs import write_text_atomic
from recnas.ops.embedding import FieldEmbedding
from recnas.scripts import CRITEO_CARDINALITY, mean_seconds, output_file, positive_float, positive_int, provenance, torch_device



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=positive_int, default=65536, help="rows per lookup")
    ap.add_argument("--dim", type=positive_int, default=16, help="embedding width")
    ap.add_argument("--scale", type=positive_float, default=1.0, help="multiply every cardinality (e.g. 0.01 on a small machine)")
    ap.add_argument("--repeats", type=positive_int, default=20, help="timed calls, after 3 warm-up calls")
    ap.add_argument("--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda when there is one)")
    ap.add_argument("--out", type=output_file, default="benchmarks/out/embedding_bandwidth.json", help="the result JSON")
    args = ap.parse_args()
    device = torch.device(args.device)
    vocab = [max(2, int(v * args.scale)) for v in CRITEO_CARDINALITY]  # Criteo-sized, as prepare_throughput.py generates
    emb = FieldEmbedding(vocab, args.dim).to(device)
    rng = np.random.default_rng(0)
    ids = np.stack([np.minimum(rng.zipf(1.2, args.batch) - 1, v - 1) for v in vocab], 1)
    sparse = torch.from_numpy(ids).to(device)
    n_fields, elem = len(vocab), emb.weight.element_size()
    lookup_bytes = args.batch * n_fields * args.dim * elem  # one [B, F, D] tensor

    fwd = mean_seconds(lambda: emb(sparse), args.repeats, device)
    out = emb(sparse)
    grad = torch.ones_like(out)

    def backward():
        emb.weight.grad = None
        out.backward(grad, retain_graph=True)

    fwd_bwd = mean_seconds(backward, args.repeats, device) + fwd
    big = torch.empty(256 * 2**20, dtype=torch.float32, device=device)  # 1 GiB
    copy_bw = 2 * big.numel() * 4 / mean_seconds(lambda: big.clone(), 5, device)
    table_bytes = emb.weight.numel() * elem
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": args.batch, "fields": n_fields, "dim": args.dim, "table_rows": int(sum(vocab)), "table_GB": table_bytes / 1e9,
        "forward_ms": fwd * 1e3, "forward_GBps": 2 * lookup_bytes / fwd / 1e9,
        # the dense-gradient backward also zero-fills and writes the whole table's gradient
        "forward_backward_ms": fwd_bwd * 1e3, "forward_backward_GBps": (4 * lookup_bytes + table_bytes) / fwd_bwd / 1e9,
        "copy_GBps": copy_bw / 1e9,
    }
    result["forward_fraction_of_copy"] = result["forward_GBps"] / result["copy_GBps"]
    result["forward_backward_fraction_of_copy"] = result["forward_backward_GBps"] / result["copy_GBps"]
    print("| batch | table | forward | GB/s | fwd+bwd | GB/s | copy GB/s | fwd / copy | fwd+bwd / copy |\n|---|---|---|---|---|---|---|---|---|")
    r = result
    print(f"| {r['batch']:,} | {r['table_rows']:,} x {r['dim']} ({r['table_GB']:.2f} GB) | {r['forward_ms']:.3f} ms | {r['forward_GBps']:.0f} | {r['forward_backward_ms']:.3f} ms | {r['forward_backward_GBps']:.0f} | {r['copy_GBps']:.0f} | {r['forward_fraction_of_copy']:.0%} | {r['forward_backward_fraction_of_copy']:.0%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(provenance(result, args, args.device), indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
