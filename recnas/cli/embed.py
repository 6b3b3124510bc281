"""`recnas embed search`: one-shot embedding size search under a memory budget."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from recnas.cli.options import PROGRESS, THREADS, device_option
from recnas.cli.paths import path_option
from recnas.errors import ConfigError
from recnas.limits import SEED_MAX, Device
from recnas.staging import check_parent

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _group() -> None:
    """One-shot embedding size search (AdaS&S style)."""


@app.command()
def search(
    data: Path = path_option(..., "--data", help="prepared dataset directory"),
    out: Path = path_option(..., "--out", help="output directory (result.json, emb_dims.json, model.pt)"),
    budget_params: Optional[int] = typer.Option(None, "--budget-params", help="budget: total embedding-table parameters (give this or --budget-mb)"),
    budget_mb: Optional[float] = typer.Option(None, "--budget-mb", help="budget: embedding-table MiB at float32 (give this or --budget-params)"),
    widths: Optional[str] = typer.Option(None, "--widths", help="candidate widths, comma-separated (default: the config's, 2,4,8,16,32,64)"),
    config: Optional[Path] = path_option(None, "--config", help="YAML with model/supernet/search/retrain sections"),
    seeds: int = typer.Option(1, "--seeds", min=1, help="repeat supernet training + search with K seeds (stability report)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, max=SEED_MAX, help="first seed; --seeds K runs this one to this + K-1 (default: the config's, 0)"),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="supernet width sampling: adaptive or uniform (default: the config's, adaptive)"),
    retrain: bool = typer.Option(True, "--retrain/--no-retrain", help="retrain the searched widths from scratch"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the results of an earlier search in --out (never a folder of anything else)"),
    threads: Optional[int] = THREADS,
    device: Optional[Device] = device_option(None, "override the config's device and retrain.device"),
    progress: bool = PROGRESS,
) -> None:
    """Train an embedding supernet, search per-field widths by RL, retrain and report."""
    from recnas.data.store import CTRStore
    from recnas.embedding.budget import parse_widths, resolve_budget
    from recnas.embedding.config import EmbedSearchConfig
    from recnas.embedding.pipeline import run_search
    from recnas.embedding.report import print_report
    from recnas.environment import cpu_threads

    cfg = EmbedSearchConfig.from_yaml(config)
    updates: dict = {}
    if widths is not None:
        updates["widths"] = list(parse_widths(widths))
    if seed is not None:
        updates["seed"] = seed
    if sampler is not None:
        updates["supernet"] = {**cfg.supernet.model_dump(), "sampler": sampler}
    if device is not None:  # the search's and the retraining's: every training of the command
        updates.update(device=device, retrain={**cfg.retrain.model_dump(), "device": device})
    if updates:  # a refusal names the options given ("command line: key 'supernet.sampler'" named none)
        given = ", ".join(flag for flag, value in (("--widths", widths), ("--seed", seed), ("--sampler", sampler), ("--device", device)) if value is not None)
        cfg = EmbedSearchConfig.from_dict({**cfg.model_dump(), **updates}, f"{config or 'the defaults'} with {given}")
    store = CTRStore(data)
    budget = resolve_budget(store.meta.vocab_sizes, cfg.widths, budget_params, budget_mb)
    with cpu_threads(threads):
        report = run_search(store, cfg, budget, seeds=seeds, out=out, progress=progress and sys.stderr.isatty(), do_retrain=retrain, overwrite=overwrite)
    print_report(report)
    names = ["result.json", "emb_dims.json"] + (["model.pt"] if (out / "model.pt").is_file() else [])
    typer.echo("wrote " + ", ".join(str(out / name) for name in names))


def _holds_an_architecture(path: Path) -> bool:
    """Whether the file at `path` is an architecture JSON, the only file `--overwrite` replaces."""
    from recnas.space import Architecture

    try:
        if path.stat().st_size > 1 << 20:  # an architecture is a few kB
            return False
        Architecture.load(path)
        return True
    except (OSError, ConfigError):
        return False


@app.command()
def apply(
    arch: Path = path_option(..., "--arch", help="architecture JSON (e.g. from `recnas search`)"),
    emb_dims: Path = path_option(..., "--emb-dims", help="emb_dims.json written by `recnas embed search`"),
    out: Path = path_option(..., "--out", help="architecture JSON to write, with emb_dims set"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out architecture file (never a file of anything else)"),
    space: Optional[str] = typer.Option(None, "--space", help="the architecture's space (a preset or a space file) to check the widths against; default: the space.yaml beside --arch (a search run's), if there is one"),
) -> None:
    """Put searched per-field widths into an architecture (for `recnas subnet train --arch`)."""
    from recnas.data.store import check_outside_results
    from recnas.space import Architecture, resolve_space
    from recnas.space.arch import load_emb_dims

    if out.resolve() in (arch.resolve(), emb_dims.resolve()):
        raise ConfigError(f"--out {out} is one of the inputs; write the new architecture to another file")
    if out.is_dir():  # "exists; pass --overwrite" sent the user to a flag that fails here too
        raise ConfigError(f"--out {out} is a directory; give the path of the architecture file to write")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and not _holds_an_architecture(out):  # --overwrite replaced any file there, exit 0 (a checkpoint, a config)
        raise ConfigError(f"--out {out} exists and holds no architecture JSON; --overwrite replaces only an architecture file: choose another file (or remove that one first)")
    check_parent(out, "--out")
    # a store, or an embedding search result (`--out` beside its emb_dims.json is the natural
    # choice): a file there blocked the result's --overwrite ("x.json is not part of one")
    check_outside_results(out, "--out")

    dims = load_emb_dims(emb_dims)
    new = Architecture.load(arch).model_copy(update={"emb_dims": tuple(dims)})
    # a width past the space's emb_dim was written, and refused only by `subnet train` later
    beside = arch.parent / "space.yaml"
    space = space if space is not None else (str(beside) if beside.is_file() else None)
    if space is not None:
        sp = resolve_space(space)
        try:
            new.validate_for(sp)
        except ConfigError as exc:
            raise ConfigError(f"{emb_dims} in {arch}: the architecture does not fit the space {space}: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)  # as every output: missing folders are created
    new.save(out)
    checked = f"within the emb_dim of {space}" if space is not None else "they must not exceed the space's emb_dim: --space checks them"
    typer.echo(f"wrote {out} (emb_dims: {len(dims)} fields, widths {min(dims)}..{max(dims)}; {checked})")
