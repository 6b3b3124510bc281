"""Throughput and peak memory of `recnas data prepare` on a generated Criteo-format file.

    python benchmarks/prepare_throughput.py [--rows 2000000] [--json benchmarks/out/prepare_throughput.json]

The raw file is generated vectorised (power-law categoricals with Criteo-like per-field
cardinalities, about 20% empty integers and 5% empty categoricals, a few negative integers)
and cached under benchmarks/out/. `prepare` then runs in a child process so its peak RSS
(ru_maxrss) and CPU time are its own, not the generator's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from recnas.configs import write_text_atomic
from recnas.scripts import CRITEO_CARDINALITY, output_dir, output_file, positive_int, provenance

HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _hex8(x: np.ndarray):
    import polars as pl

    nibbles = (x[:, None] >> np.arange(28, -4, -4, dtype=np.uint32)) & 0xF
    chars = np.ascontiguousarray(HEX[nibbles])
    return pl.Series(chars.view("S8").ravel()).cast(pl.String)


def generate(path: Path, rows: int, seed: int = 0, batch: int = 250_000) -> None:
    """Write `rows` Criteo-format lines (label, I1..I13, C1..C26; tab-separated, no header)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as fh:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            cols = {"label": pl.Series((rng.random(n) < 0.256).astype(np.int8))}
            for i in range(13):
                v = np.minimum(rng.zipf(1.4, n) - 1, 1_000_000) - (rng.random(n) < 0.02) * 3
                cols[f"I{i + 1}"] = pl.Series(v).set(pl.Series(rng.random(n) < 0.2), None)
            for j, card in enumerate(CRITEO_CARDINALITY):
                rank = (rng.zipf(1.15, n) - 1) % card  # power law over the field's values
                key = ((rank.astype(np.uint64) * np.uint64(2654435761) + np.uint64(j * 97)) % np.uint64(1 << 32)).astype(np.uint32)
                cols[f"C{j + 1}"] = _hex8(key).set(pl.Series(rng.random(n) < 0.05), None)
            pl.DataFrame(cols).write_csv(fh, separator="\t", include_header=False, null_value="", quote_style="never")
    os.replace(tmp, path)


CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from recnas.data.prepare import prepare
import_s = time.perf_counter() - t0
rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); r0 = resource.getrusage(resource.RUSAGE_SELF)
meta = prepare("criteo", sys.argv[1], sys.argv[2], overwrite=True, min_count=int(sys.argv[3]))
wall = time.perf_counter() - t0; r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                  "peak_rss_mib": r1.ru_maxrss / 1024, "rss_after_import_mib": rss_after_import / 1024, "import_s": import_s,
                  "rows": sum(meta.rows.values()), "vocab_sizes": meta.vocab_sizes}))
"""


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "loadavg_1m_before": round(load[0], 2), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=positive_int, default=2_000_000, help="rows of the generated Criteo-format file")
    parser.add_argument("--min-count", type=positive_int, default=1, help="prepare's min_count: rarer categorical values share one id")
    parser.add_argument("--workdir", type=output_dir, default=Path(__file__).parent / "out", help="where the raw file is cached and the store is prepared (default: benchmarks/out)")
    parser.add_argument("--json", type=output_file, default=Path(__file__).parent / "out" / "prepare_throughput.json", help="the result JSON")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = args.workdir / f"criteo_synth_{args.rows}.txt"
    if not raw.exists():
        t0 = time.perf_counter()
        generate(raw, args.rows)
        print(f"generated {raw} ({raw.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s")
    info = machine()
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(args.workdir / "criteo_store"), str(args.min_count)], capture_output=True, text=True, env=env)
    if child.returncode != 0:
        sys.exit(f"prepare failed:\n{child.stderr}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    info["loadavg_1m_after"] = round(os.getloadavg()[0], 2)  # other jobs on a shared machine skew wall time
    result.update(raw_mib=raw.stat().st_size / 2**20, rows_per_s=result["rows"] / result["wall_s"], rows_per_cpu_s=result["rows"] / result["cpu_s"], min_count=args.min_count, machine=info)
    print(f"{'rows':>10} {'raw MiB':>8} {'wall s':>7} {'rows/s':>9} {'CPU s':>7} {'rows/CPU-s':>10} {'peak RSS MiB':>12}")
    print(f"{result['rows']:>10,} {result['raw_mib']:>8.0f} {result['wall_s']:>7.2f} {result['rows_per_s']:>9,.0f} {result['cpu_s']:>7.2f} {result['rows_per_cpu_s']:>10,.0f} {result['peak_rss_mib']:>12.0f}")
    print(f"machine: {info['nproc']} x {info['cpu']}, load {info['loadavg_1m_before']} before / {info['loadavg_1m_after']} after the run; RSS after imports {result['rss_after_import_mib']:.0f} MiB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.json, json.dumps(provenance(result, args), indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
