"""Run-folder report: results table (markdown + JSON) and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from recnas.configs import write_text_atomic
from recnas.search.objective import Objective, diverged_keys, format_targets
from recnas.search.plots import pyplot, save_figure
from recnas.search.results import ResultsStore
from recnas.train.metrics import counted, format_metric, json_safe

COLUMNS = [
    ("model", "model", "{}"),
    ("test_logloss", "test log loss", "{:.4f}"),
    ("test_logloss_pim", "test log loss on its PIM config", "{:.4f}"),
    ("test_auc", "test AUC", "{:.4f}"),
    ("gap_to_bayes", "gap to Bayes", "{:+.4f}"),
    ("params", "dense params", "{:,.0f}"),
    ("embedding_params", "emb. params", "{:,.0f}"),
    ("flops", "FLOPs/sample", "{:,.0f}"),
    ("energy", "PIM energy (pJ)", "{:,.0f}"),
    ("latency", "PIM latency (ns)", "{:,.0f}"),
    ("latency_seq", "PIM latency (ns, sequential)", "{:,.0f}"),
    ("crossbars", "PIM crossbars", "{:,.0f}"),
    ("fits", "fits the chip (crossbar_budget)", "{}"),  # the search does not enforce it: a design that does not fit is shown, not dropped
    ("train_seconds", "train s", "{:.1f}"),
    ("final_choice", "kept at (final_grid)", "{}"),
    ("tables_alone", "tables alone (val log loss)", "{}"),
]


# what a candidate's search score is, by `scoring`: labels of the report's plots and tables
SCORED_WITH = {"supernet": "supernet weights", "scratch": "trained briefly from scratch"}


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append(format_metric(v, fmt, missing="-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _diverged(diverged: int, candidates: int) -> str:
    """The results.md words for a search's diverged candidates (none: nothing)."""
    if not diverged:
        return ""
    if diverged == candidates:
        return ", **every one of them diverged** (scored inf): the search ranked none, so the searched model is an arbitrary one of them"
    return f", {diverged} of them diverged (scored inf)"


def _ranked_by(objective: Objective) -> str:
    """The results.md words for a `penalized` search's ranking (nothing otherwise): results.md
    said the candidates were scored by validation log loss, with no word of the cost targets
    that chose the finalists (only results.json's `objective` had them)."""
    if objective.kind != "penalized":
        return ""
    return f", ranked by log loss + {objective.beta:g} * max(0, cost / target - 1) summed over the targets ({format_targets(objective.targets)})"


def write_report(out: Path, report: dict, results: ResultsStore, run: str, objective: Objective, keys=None) -> None:
    """`keys`: the candidates of this search (None: every one in `results`). The store also holds
    those of an earlier search of the run folder (more generations, another evolution seed),
    which the count, the score-vs-cost plot and the Pareto front used to include: a run continued
    with fewer generations reported other candidates than the same search run afresh."""
    out = Path(out)
    candidates = results.all()
    if keys is not None:
        keys = set(keys)
        candidates = [c for c in candidates if c["key"] in keys]
    # the count results.md gives: results.json had only the store's (`candidates_in_store`), which
    # holds an earlier search's candidates too in a continued run
    # a candidate whose scoring diverged scores inf (NaN logits: NaN): a search of only such ones ranked
    # nothing, and its finalists are arbitrary, which results.md used to leave unsaid
    diverged = len(diverged_keys(candidates))
    report["search"] = {**report["search"], "candidates_this_search": len(candidates), "diverged_this_search": diverged}
    write_text_atomic(out / "results.json", json.dumps(json_safe(report), indent=2, default=float))
    md = ["# recnas search results", "", f"dataset: `{report['dataset']}`"]
    # a split of one class (the job's warnings): its AUC is a bare "-" in the table below
    md += [f"warning: {note}" for note in report.get("data_notes") or []]
    if report.get("bayes"):
        b = report["bayes"]
        md.append(f"Bayes-optimal test log loss: {format_metric(b.get('test_logloss'), '{:.4f}')}, AUC {format_metric(b.get('test_auc'), '{:.4f}')} (the floor any model can reach)")
    scored = SCORED_WITH[report["search"].get("scoring", "supernet")]
    md += ["", markdown_table(report["models"]), "", f"Search: {counted(len(candidates), 'candidate')} evaluated (validation log loss, {scored}){_diverged(diverged, len(candidates))}{_ranked_by(objective)}; best architecture in `best_arch.json`.", ""]
    if env := report.get("environment"):
        cpu = f", {env['cpu']}, {env['cpu_capability']} kernels" if env.get("cpu") and env.get("cpu_capability") else ""  # recorded since 2026-12-07
        md += [f"Computed with recnas {env['recnas']}, torch {env['torch']}, on {env['device']} ({env['device_name']}{cpu}) with {env['cpu_threads']} CPU threads: "
               "another thread count, or a CPU with other kernels, rounds CPU training differently and can give another result (`threads` pins the count).", ""]
    md += ["![search progress](search_progress.png)", "", "![score vs cost](score_vs_cost.png)", ""]
    if objective.kind == "pareto" or any("energy" in c for c in candidates):
        md += write_pareto(out, candidates, report["models"], objective, scored)
    else:  # a run continued under an objective without a front (it may change): its earlier front was left beside the new report
        for name in PARETO_FILES:
            (out / name).unlink(missing_ok=True)
    write_text_atomic(out / "results.md", "\n".join(md))
    plot_progress(out / "search_progress.png", results.generations(run), scored, objective)
    chosen = next((f["key"] for f in report.get("finalists", []) if f.get("chosen")), None)
    bayes = (report.get("bayes") or {}).get("test_logloss")
    plot_score_vs_cost(out / "score_vs_cost.png", candidates, report["models"], objective, chosen=chosen, bayes=bayes, scored=scored)


def cost_axis(cost: str) -> str:
    """A cost's axis label, named as the tables name it (the plots read "flops per sample")."""
    return {"flops": "FLOPs per sample", "params": "dense params"}.get(cost, f"{cost} per sample")


PARETO_FILES = ("pareto.json", "pareto.md", "pareto.png")  # write_pareto's
# the front's cost columns in pareto.md: (label, format)
FRONT_COSTS = {"energy": ("energy (pJ)", "{:,.0f}"), "latency": ("latency (ns)", "{:,.0f}"), "flops": ("FLOPs", "{:,.0f}"), "params": ("dense params", "{:,.0f}")}


def write_pareto(out: Path, candidates: list[dict], models: list[dict], objective: Objective, scored: str = SCORED_WITH["supernet"]) -> list[str]:
    """The Pareto front of (log loss, *objective.pareto_costs) as pareto.md/.json and a plot of
    log loss against one cost with the baselines marked: in co-design against PIM energy
    (baselines on the default PIM config), else against the first of `pareto_costs`. A
    `kind: pareto` search without PIM (`pareto_costs: [flops, params]`) wrote none of it, while
    docs/search.md and `search show` pointed at pareto.md."""
    from recnas.search.pareto import pareto_front, plot_front

    codesign = any("energy" in c for c in candidates)
    x = "energy" if codesign else objective.pareto_costs[0]
    shown = list(dict.fromkeys([*(("energy", "latency", "flops") if codesign else ()), *objective.pareto_costs]))
    cand = [c for c in candidates if all(k in c for k in shown) and math.isfinite(c["logloss"])]  # a diverged candidate scores inf
    # shaped even when every candidate diverged (no front): the report used to fail there
    vectors = np.array([objective.vector(c) for c in cand]).reshape(len(cand), 1 + len(objective.pareto_costs))
    front = sorted(pareto_front(vectors), key=lambda i: cand[i][x])
    rows = [{k: cand[i].get(k) for k in ("key", "logloss", "auc", "energy", "latency", "flops", "params", "hardware")} for i in front]
    for r in rows:  # the store keeps each design as JSON text: pareto.json held it as a string in the JSON
        if isinstance(r["hardware"], str):
            r["hardware"] = json.loads(r["hardware"])
    write_text_atomic(out / "pareto.json", json.dumps(rows, indent=2))
    table = ["| candidate | val log loss | " + " | ".join(FRONT_COSTS[k][0] for k in shown) + " |", "|---|---|" + "---|" * len(shown)]
    table += [f"| {r['key']} | {r['logloss']:.4f} | " + " | ".join(FRONT_COSTS[k][1].format(r[k]) for k in shown) + " |" for r in rows]
    write_text_atomic(out / "pareto.md", f"# Pareto front (search scores on validation, {scored})\n\n" + "\n".join(table) + "\n")
    # in co-design each baseline's quality on the PIM config its energy is of ("test log loss on
    # its PIM config"), as the candidates are scored quantised: it was drawn at full precision
    quality = "test_logloss_pim" if codesign else "test_logloss"
    baselines = {m["model"]: (m[x], m.get(quality, m["test_logloss"])) for m in models if x in m and m["model"] != models[0]["model"]}
    over = ", ".join(["log loss", *objective.pareto_costs])  # the objectives ranked, as `objective.vector` gives them
    # the front marked is the one of pareto.md (and of the line under the plot): the plot used to
    # mark the front of (energy, log loss) alone, fewer candidates than the report said; over
    # those two objectives it is that front, drawn with its step line
    two = tuple(objective.pareto_costs) == (x,)
    axis = "PIM energy per sample (pJ)" if codesign else cost_axis(x)
    plot_front(
        np.array([(c[x], c["logloss"]) for c in cand]).reshape(-1, 2), (axis, f"log loss (candidates: val, {scored}; baselines: test{', on the default PIM config' if codesign else ''})"),
        out / "pareto.png", baselines=baselines, title="co-design: quality vs PIM energy" if codesign else f"Pareto search: quality vs {axis}",
        front=None if two else front, front_label=f"Pareto front over ({over})",
    )
    return ["## Pareto front", "", f"{len(rows)} non-dominated candidates of {len(cand)} over ({over}): `pareto.md`, `pareto.json`.", "", "![pareto](pareto.png)", ""]


def plot_progress(path: Path, gens: list[dict], scored: str = SCORED_WITH["supernet"], objective: Objective | None = None) -> None:
    """Best and mean search score of the population per generation. Under a `penalized`
    objective the score is the log loss plus the cost penalty, which the axis says: it was
    labelled a validation log loss there too, with values far above any log loss."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if gens:
        g = [r["generation"] for r in gens]
        ax.plot(g, [r["best_score"] for r in gens], marker="o", label="best in population")
        ax.plot(g, [r["mean_score"] for r in gens], linestyle="--", label="population mean")
        ax.legend()
        if note := _not_drawn(gens):
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # generations are whole numbers
    ax.set_xlabel("generation")
    penalty = " + beta * cost penalty" if objective is not None and objective.kind == "penalized" else ""
    ax.set_ylabel(f"score (validation log loss{penalty}, {scored})")
    ax.set_title("regularized evolution")
    save_figure(fig, path)


def _not_drawn(gens: list[dict]) -> str:
    """The progress plot's note on generations whose score is inf: a diverged candidate scores
    inf, so the population mean is inf while one is in the population (the best too when every
    one is), and matplotlib left those points out without a word: a legend's line missing for
    most of a search."""
    parts = []
    for key, what in (("mean_score", "population mean"), ("best_score", "best")):
        off = sum(not math.isfinite(r[key]) for r in gens)
        if off:
            parts.append(f"{what} inf in {off} of {counted(len(gens), 'generation')}")
    return f"not drawn: {', '.join(parts)} (a diverged candidate scores inf)" if parts else ""


def plot_score_vs_cost(path: Path, candidates: list[dict], models: list[dict], objective: Objective, cost: str = "flops", chosen: str | None = None, bayes: float | None = None, scored: str = SCORED_WITH["supernet"]) -> None:
    """Two panels over one cost axis: the searched candidates' search scores (validation),
    and the trained models' test log loss. They are different quantities on different scales,
    so they get separate y axes side by side rather than two overlaid ones."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    cand = [c for c in candidates if cost in c and math.isfinite(c["logloss"])]
    # a diverged candidate scores inf (no place on the axis); the x axis is logarithmic: a cost of
    # 0 has no place on it either. matplotlib dropped such a candidate (or the chosen one's star)
    # without a word; they are counted under the panel instead
    diverged = len(diverged_keys([c for c in candidates if cost in c]))
    free = [c for c in cand if not c[cost] > 0]
    cand = [c for c in cand if c[cost] > 0]
    notes = ([f"{counted(len(free), 'candidate')} with 0 {cost}: not on the log axis"] if free else []) + ([f"{diverged} diverged (scored inf): not drawn"] if diverged else [])
    if notes:
        ax.text(0.02, 0.02, "; ".join(notes), transform=ax.transAxes, fontsize=7)
    if cand:
        x = np.array([c[cost] for c in cand])
        y = np.array([c["logloss"] for c in cand])
        ax.scatter(x, y, s=14, alpha=0.5, label="candidates")
        if objective.kind == "pareto" or len(cand) > 2:
            from recnas.search.pareto import pareto_front

            front = pareto_front(np.stack([y, x], 1))
            order = sorted(front, key=lambda i: x[i])
            ax.plot(x[order], y[order], color="C3", marker=".", label=f"Pareto front of (log loss, {cost})")  # of these axes, not the search's pareto_costs (pareto.md)
        hit = [i for i, c in enumerate(cand) if c.get("key") == chosen]
        if hit:
            ax.scatter(x[hit], y[hit], marker="*", s=160, color="k", zorder=3, label="chosen (retrained)")
        ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(cost_axis(cost))
    ax.set_ylabel(f"validation log loss ({scored})")
    ax.set_title("search: candidates")
    # models[0] is the searched model (the star): it was the first model drawn, a baseline when the
    # searched one had no place on the log axis; a model of 0 cost (lr without numeric features
    # has no FLOPs) is named under the panel, it used to vanish without a word
    trained = [(j, m) for j, m in enumerate(models) if cost in m and m[cost] > 0]
    for i, (j, m) in enumerate(trained):
        ax2.scatter([m[cost]], [m["test_logloss"]], marker="*" if j == 0 else "o", s=120 if j == 0 else 40, color="C3" if j == 0 else "k", zorder=3)
        ax2.annotate(m["model"], (m[cost], m["test_logloss"]), fontsize=8, xytext=(4, 4 if i % 2 == 0 else -11), textcoords="offset points")  # alternate, so neighbours' labels do not overprint
    if free := [m["model"] for m in models if cost in m and not m[cost] > 0]:
        ax2.text(0.02, 0.02, f"0 {cost}, not on the log axis: {', '.join(free)}", transform=ax2.transAxes, fontsize=7)
    if bayes is not None:
        ax2.axhline(bayes, color="C2", linestyle=":", label="Bayes-optimal")
        ax2.legend(loc="best", fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel(cost_axis(cost))
    ax2.set_ylabel("test log loss (trained from scratch)")
    ax2.set_title("trained models")
    ax2.margins(x=0.15, y=0.1)
    save_figure(fig, path)
