"""Terminal report of an embedding size search (rich tables)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recnas.train.metrics import format_metric


def _agreement(field: dict, width: int) -> float:
    """The share of seeds that chose `width`, the width the table shows. A modal width over the
    budget is repaired to a smaller one, and the column gave the modal width's agreement: 100%
    beside a width no seed chose."""
    widths = field.get("widths")
    return field["agreement"] if widths is None else sum(w == width for w in widths) / len(widths)


def print_report(report: dict, console: Console | None = None) -> None:
    # soft wrap: piped into a log (80 columns) rich broke the budget and retrain lines in two;
    # table cells fold rather than being cut to "1,…" on a narrow terminal
    console = console or Console(soft_wrap=True)
    stab = report["stability"]
    table = Table(title="embedding widths")
    for col in ("field", "vocab", "width", "params", "seed agreement"):
        table.add_column(col, justify="left" if col == "field" else "right", overflow="fold")
    for name, vocab, width, agree in zip(report["fields"], report["vocab_sizes"], report["emb_dims"], stab["per_field"]):
        table.add_row(escape(name), f"{vocab:,}", str(width), f"{vocab * width:,}", f"{_agreement(agree, width):.0%}")
    console.print(table)
    console.print(
        f"embedding tables: {report['params']:,} params ({report['mib']:.3f} MiB) vs budget {report['budget_params']:,} "
        f"({report['budget_mib']:.3f} MiB): {math.floor(report['budget_used'] * 1000) / 10:.1f}% used"  # down: 99.95% read "100.0%", as if full
    )
    if stab["seeds"] > 1:
        console.print(f"stability over {stab['seeds']} seeds: overall modal-width agreement {stab['overall_agreement']:.1%}")
    if "retrain" in report:
        r = report["retrain"]
        console.print(
            f"retrained from scratch ({r['steps']} steps): val logloss {format_metric(r['val']['logloss'])} auc {format_metric(r['val']['auc'])} | "
            f"test logloss {format_metric(r['test']['logloss'])} auc {format_metric(r['test']['auc'])}"
        )
