"""The main job: data -> supernet -> evolution -> retrain the winner -> compare with baselines.

Every stage writes its artifacts under the run folder and is skipped when they already
exist, so re-running the same command after an interruption continues where it stopped
(the supernet checkpoint resumes, the evolution replays from its SQLite cache).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recnas import configs
from recnas.baselines import BASELINES, baseline_class
from recnas.errors import ConfigError
from recnas.search.evolution import EvolutionConfig
from recnas.search.objective import Objective
from recnas.train.config import TrainConfig
from recnas.train.tables import TableFinetune

BASELINE_NAMES = tuple(BASELINES)


def _as_value_error(check, *args, **kwargs):
    """`check(*args, **kwargs)`, its ConfigError re-raised as the ValueError pydantic reports
    under the offending key, so the library's own checks (and messages) validate the config."""
    try:
        return check(*args, **kwargs)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


SEEDED_SECTIONS = ("supernet", "finetune", "evolution", "final")  # seeded by the job's seed unless they set their own


class JobConfig(BaseModel):
    """Everything `recnas search` does; `budget` presets fill it, YAML overrides it."""

    model_config = ConfigDict(extra="forbid")

    data: str | None = Field(None, description="prepared store; None = the built-in synthetic benchmark")
    synthetic_rows: int = Field(200_000, ge=1000)
    seed: configs.Seed = Field(0, description="seed of the data, the path sampler and (unless a section sets its own) every stage")
    threads: int | None = Field(
        None, ge=1, le=1024,
        description="PyTorch's CPU threads for the whole job (None = its default, one per core); the thread count changes the rounding of CPU training and with it the result: results.json records it",
    )
    space: str = "full"
    space_overrides: dict[str, Any] = Field(default_factory=dict)
    sampler: str = "single-op-any-conn"
    emb_dims: list[int] | None = Field(None, description="per-field embedding widths from `recnas embed search` (emb_dims.json)")
    supernet: TrainConfig = Field(default_factory=TrainConfig)
    finetune: TrainConfig | None = None
    scoring: Literal["supernet", "scratch"] = Field(
        "supernet", description="how the search scores a candidate: supernet (inherited weights, then `finetune`) or scratch (no supernet: each candidate trains from scratch with `final` changed by `proxy`)",
    )
    proxy: dict[str, Any] = Field(default_factory=lambda: {"epochs": 1}, description="scoring: scratch: the settings of `final` changed for the short training that scores each candidate")
    eval_rows: int | None = Field(20_000, ge=1)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    objective: Objective = Field(default_factory=Objective)
    hardware: Literal["none", "pim"] = "none"
    pim_choices: dict[str, list[int]] = Field(default_factory=dict, description="co-design: restrict searched PIM fields, e.g. {weight_bits: [8], act_bits: [8]}")
    executor: Literal["serial", "ray"] = Field("serial", description="where candidates are scored; ray when unset and ray_address or ray_workers is set")
    ray_address: str | None = Field(None, description="join this Ray cluster (None = start a local one); needs executor ray")
    ray_workers: int | None = Field(None, ge=1, description="Ray actors (None = one per available CPU); needs executor ray")
    finalists: int = Field(1, ge=1, description="best candidates (by search score) trained from scratch; the one with the lowest validation log loss is the result")
    finalist_selection: Literal["full", "halving"] = Field(
        "full", description="full: every finalist trains to the end; halving: successive halving, each rung trains the better half one more evaluation interval of `final` until one is left, which trains to the end",
    )
    final: TrainConfig = Field(default_factory=TrainConfig)
    final_grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="`final` settings to try, e.g. {lr: [1.0e-3, 3.0e-3]}: every model trained from scratch (finalists and baselines alike) is trained at each combination and kept at the lowest validation log loss",
    )
    table_finetune: TableFinetune | None = Field(
        None, description="after each model's final training (finalists and baselines alike, at every final_grid point), train its embedding tables alone a few more epochs; kept where it lowers the validation log loss",
    )
    baselines: list[str] = Field(default_factory=lambda: list(BASELINE_NAMES))
    baseline_hparams: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _job_seed_seeds_every_stage(cls, data):
        """`seed` (`--seed`) is the default seed of every stage: supernet, fine-tunes, evolution
        and the retrains and baselines (`final`). It used to reach only the data and the path
        sampler, so on a prepared store every "seed" trained and evolved exactly the same. A
        section's own `seed:` still wins.

        Only a section left out is made from the seed alone: one given as null (`evolution:`
        with every line under it commented out) used to become the library's defaults, dropping
        the preset's section without a word (`--budget smoke` then evolved a population of 128
        for 240 generations). It is left to be refused, as `objective: null` is; `finetune:
        null` is no fine-tune."""
        seed = data.get("seed", 0) if isinstance(data, dict) else None
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= configs.SEED_MAX:  # reported once, as `seed`
            return data
        out = dict(data)
        for section in SEEDED_SECTIONS:
            if section not in out:
                if section != "finetune":  # no fine-tune: nothing to seed
                    out[section] = {"seed": seed}
            elif isinstance(out[section], dict):
                out[section] = {"seed": seed, **out[section]}
        return out

    @model_validator(mode="before")
    @classmethod
    def _ray_settings_need_ray(cls, data):
        """Ray settings under the serial executor used to be silently ignored: they now imply
        executor ray, and contradict an explicit `executor: serial`."""
        if not isinstance(data, dict):
            return data
        given = [k for k in ("ray_address", "ray_workers") if data.get(k) is not None]
        if not given:
            return data
        if "executor" not in data:
            return {**data, "executor": "ray"}
        if data["executor"] == "serial":
            raise ValueError(f"{' and '.join(given)} set with executor: serial; Ray settings need executor: ray (or leave executor out)")
        return data

    @field_validator("data")
    @classmethod
    def _absolute_data(cls, v):
        """Recorded absolute in the run folder's config.yaml: a relative path re-run from another
        directory could otherwise continue the run on another store of the same shape."""
        if v is None:
            return None
        path = str(Path(v).expanduser().resolve())
        try:  # a name of bytes that are not UTF-8 (kept by Python as surrogates): the run's config.yaml cannot record it
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{path.encode('utf-8', 'surrogateescape')!r} is not a UTF-8 path, which the run's config.yaml records; rename the store's folder") from None
        return path

    @field_validator("pim_choices")
    @classmethod
    def _pim_choices(cls, v):
        """Kept as the search reads them (sorted, each value once): `[8, 4]` and `[4, 8]` search the
        same values, and a run folder continued with the one used to be refused as other settings."""
        from recnas.hardware.pim import pim_choices

        try:
            read = pim_choices(v)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("pim_choices: ").removeprefix("pim_choices.")) from None  # the key is named once, by the caller
        return {name: list(read[name]) for name in v}

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v):
        from recnas.space.samplers import check_strategy

        return _as_value_error(check_strategy, v)

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v):
        """Each named once: a repeated name trained in the same folder and was listed twice in
        the results table, as two models."""
        for name in v:
            _as_value_error(baseline_class, name)
        repeated = sorted({name for name in v if v.count(name) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given more than once")
        return v

    @field_validator("baseline_hparams")
    @classmethod
    def _baseline_hparams(cls, v):
        """Checked at load, not after the supernet and the search have run."""
        from recnas.baselines.base import parse_hparams

        for name, hparams in v.items():
            _as_value_error(lambda: parse_hparams(name, baseline_class(name).Config, hparams))
        return v

    @model_validator(mode="after")
    def _space_is_valid(self):
        """Checked here, so a bad override fails before any data is prepared."""
        from recnas.space import get_space

        _as_value_error(get_space, self.space, **self.space_overrides)
        return self

    @model_validator(mode="after")
    def _sample_within_population(self):
        """RegularizedEvolution refuses it too, but only after the supernet has trained."""
        ev = self.evolution
        if ev.sample_size > ev.population:
            raise ValueError(f"evolution.sample_size ({ev.sample_size}) exceeds evolution.population ({ev.population})")
        if ev.children > ev.population:  # the C oldest leave each generation: children among them, before any tournament saw them
            raise ValueError(f"evolution.children ({ev.children}) exceeds evolution.population ({ev.population}): each generation's children replace its oldest members, so some would leave before any tournament could pick them")
        return self

    @model_validator(mode="after")
    def _halving_needs_evaluations(self):
        if self.finalist_selection == "halving" and self.final.eval_every == 0:
            raise ValueError("finalist_selection: halving ranks finalists by validation log loss, so final.eval_every must not be 0")
        return self

    def final_config(self, point: dict) -> TrainConfig:
        """The final recipe at one point of `final_grid` (every point was checked at load)."""
        return TrainConfig.model_validate(over_final(self.final, point))

    @model_validator(mode="after")
    def _final_grid_points_are_recipes(self):
        """Every combination is checked as a `final` recipe at load, not when its model trains,
        and the grid keeps the values as `final` reads them (`lr: ["1e-3"]` -> 0.001, `epochs:
        [2.0]` -> 2): values equal once read (`lr: [1, 1.0]`) are one recipe, and the folder of
        a point is named from what trains there. Values were kept as given, so `[1, 1.0]` or
        two learning rates that agree in 6 digits trained as two points in one folder, the
        second taking the first's model (or resuming it under another recipe)."""
        _check_recipe_keys("final_grid", self.final_grid)
        for key, values in self.final_grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"final_grid.{key}: give a non-empty list of values")
        if self.final_grid and self.finalist_selection == "halving":
            raise ValueError("final_grid with finalist_selection: halving is not supported: halving ranks finalists on one recipe; use finalist_selection: full")
        keys = list(self.final_grid)
        read = {key: list(values) for key, values in self.final_grid.items()}
        recipes: set[str] = set()  # what each point trains, to find two points that train alike
        for index in itertools.product(*(range(len(v)) for v in self.final_grid.values())):
            point = {key: self.final_grid[key][i] for key, i in zip(keys, index)}
            checked = _as_value_error(configs.validate, TrainConfig, over_final(self.final, point), f"final_grid point {point_tag(point)}")
            for key, i in zip(keys, index):
                read[key][i] = getattr(checked, key)
            trains = checked.model_dump()
            if trains["max_steps"] is not None:  # it overrides epochs
                trains["epochs"] = None
            recipes.add(json.dumps(trains, sort_keys=True))
        for key, values in read.items():
            if len({json.dumps(v) for v in values}) < len(values):
                raise ValueError(f"final_grid.{key}: {self.final_grid[key]} repeats a value")
        if len(recipes) < len(grid_points(self.final_grid)):  # the values differ, but not what trains
            raise ValueError(
                f"final_grid: points that set max_steps train alike whatever their epochs (max_steps overrides epochs), "
                f"so {len(grid_points(self.final_grid))} points would train only {len(recipes)} recipes; grid epochs or max_steps, not both"
            )
        self.final_grid = read
        return self

    @model_validator(mode="after")
    def _proxy_is_a_recipe(self):
        """Checked at load as a `final` recipe, like a grid point; keys that only say where or
        how fast it trains come from `final` (as the finalists train there)."""
        _check_recipe_keys("proxy", self.proxy)
        _as_value_error(self.proxy_config)
        return self

    def proxy_config(self) -> TrainConfig:
        """The training that scores each candidate when `scoring: scratch`: `final` with `proxy`."""
        return configs.validate(TrainConfig, over_final(self.final, self.proxy), "proxy (final with its settings)")

    @model_validator(mode="after")
    def _distill_only_in_the_supernet(self):
        """In-place distillation needs a supernet's largest path. `finetune`, `final` (its grid
        points, the proxy) train plain subnets and baselines, whose Trainer refused it only when
        they started: after the supernet and the search, and a run folder whose `finetune` had
        it could not be continued once it was fixed ("other settings")."""
        recipes = {"finetune": self.finetune, "proxy": self.proxy_config() if self.scoring == "scratch" else None}
        recipes.update({f"final{' at ' + point_tag(p) if p else ''}": self.final_config(p) for p in grid_points(self.final_grid)})
        bad = [name for name, tcfg in recipes.items() if tcfg is not None and tcfg.inplace_distill]
        if bad:
            raise ValueError(f"inplace_distill is set in {', '.join(bad)}, which train plain models; only the supernet section can distil from its largest path")
        return self

    @model_validator(mode="after")
    def _pim_costs_need_pim(self):
        """Without hardware: pim no candidate has energy or latency: a target on them was
        ignored, and the Pareto ranking counted them as 0 (`kind: pareto` ranked on log loss and
        FLOPs alone, under the default pareto_costs too)."""
        ob = self.objective
        used = set(ob.ratios) | set(ob.targets) | (set(ob.pareto_costs) if ob.kind == "pareto" else set())
        pim_costs = sorted({"energy", "latency"} & used)
        if pim_costs and self.hardware != "pim":
            hint = "; or set objective.pareto_costs without them, e.g. [flops, params]" if ob.kind == "pareto" else ""
            raise ValueError(f"objective costs {pim_costs} are PIM costs: they need hardware: pim{hint}")
        return self

    @model_validator(mode="after")
    def _pim_choices_need_pim(self):
        """Without hardware: pim no PIM configuration is searched: the restriction was ignored."""
        if self.pim_choices and self.hardware != "pim":
            raise ValueError(f"pim_choices {self.pim_choices} restrict the searched PIM configuration: they need hardware: pim")
        return self


def over_final(final: TrainConfig, settings: dict) -> dict:
    """`final`'s settings changed by `settings` (a `final_grid` point, the `proxy`), to validate.
    Settings that give `epochs` without `max_steps` drop a `max_steps` of `final`, which would
    override them: the default proxy `{epochs: 1}` trained every candidate for the whole
    `final: {max_steps: N}`, and `final_grid: {epochs: [...]}` trained the same steps at every point."""
    base = final.model_dump()
    if "epochs" in settings and "max_steps" not in settings:
        base["max_steps"] = None
    return {**base, **settings}


def _check_recipe_keys(section: str, keys) -> None:
    """`section`'s keys (final_grid, proxy) change what `final` trains: each must be a setting of
    `final`, and not one of where or how fast it runs (RUNTIME_KEYS), which `final` alone sets."""
    for key in keys:
        if key not in TrainConfig.model_fields:
            raise ValueError(f"{section}: {key!r} is not a setting of final (allowed: {', '.join(TrainConfig.model_fields)})")
        if key in RUNTIME_KEYS:
            raise ValueError(f"{section}: {key!r} says where or how fast a model trains, not what it learns; set it in final")


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of a `final_grid`, in the order given; [{}] (the recipe as is) without one."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def decays_every_table(cfg: JobConfig) -> bool:
    """Whether every final training (each point of `final_grid`) puts weight decay on the
    embedding tables. A CIN head without it made models overfit sooner (docs/search.md)."""
    return all(cfg.final_config(point).table_decay > 0 for point in grid_points(cfg.final_grid))


def point_tag(point: dict) -> str:
    """A grid point as a folder and report name: `lr=0.001,weight_decay=1e-05`."""
    return ",".join(f"{k}={_tag_value(v)}" for k, v in point.items())


def _tag_value(v: Any) -> str:
    """A float in 6 digits where that is the number itself (0.001, 1e-05), else in full: two
    values of a grid never share a tag (and so a folder)."""
    return (f"{v:g}" if float(f"{v:g}") == v else repr(v)) if isinstance(v, float) else str(v)


_TINY_SPACE = {"n_blocks": 3, "dense_dims": [8, 16, 32], "sparse_dims": [4, 8], "emb_dim": 8}

PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop CPU: used by the tests
    "smoke": dict(
        synthetic_rows=3000,
        space_overrides=_TINY_SPACE,
        supernet=dict(batch_size=256, epochs=1, lr=3e-3, eval_every=0, device="cpu"),
        finetune=dict(batch_size=256, max_steps=2, lr=1e-3, eval_every=0, restore_best=False, device="cpu"),
        eval_rows=300,
        evolution=dict(population=6, sample_size=3, children=2, generations=2),
        final=dict(batch_size=256, epochs=1, lr=3e-3, device="cpu"),
        baselines=["lr", "dlrm"],
        baseline_hparams={"dlrm": {"bottom_mlp": [8, 16], "top_mlp": [8]}},
    ),
    # the default: under 10 minutes on 2 CPU cores
    "cpu": dict(
        synthetic_rows=200_000,
        space="small",  # FC, dot-product, EFC: NASRec's best space on Criteo, and few enough paths to train on a CPU
        space_overrides={"n_blocks": 3, "dense_dims": [64, 128, 256], "sparse_dims": [16, 32, 48], "emb_dim": 16},
        supernet=dict(batch_size=1024, epochs=6, lr=3e-3, warmup_steps=50, lr_schedule="cosine", eval_every=0),
        finetune=dict(batch_size=1024, max_steps=30, lr=1e-3, eval_every=0, restore_best=False),
        eval_rows=10_000,
        evolution=dict(population=16, sample_size=4, children=4, generations=8),
        # every model peaks by epoch 1-3 here, but 2 epochs at lr 2e-3 (cosine to zero) left DCN-v2
        # and xDeepFM 0.02-0.03 short of that peak (docs/benchmarks.md); early stopping restores it
        final=dict(batch_size=1024, epochs=6, lr=3e-3, lr_schedule="cosine", early_stopping_patience=2),
        # BARS Criteo_x1's xDeepFM: CIN [16, 16] through FuxiCTR's CIN, which pools and forwards every
        # map (no split); it beat the split CIN of the same sizes on all 12 seeds of
        # configs/search-cpu-decay.yaml (docs/benchmarks.md, "xDeepFM as BARS ran it"). The
        # paper's [200, 200, 200] takes minutes per epoch on 2 cores
        baseline_hparams={"xdeepfm": {"cin": [16, 16], "cin_split_half": False}},
    ),
    # real data on one GPU (NASRec-scale search)
    "gpu": dict(
        synthetic_rows=2_000_000,
        # a 100-step warmup: 500 outlasted the whole 390-step epoch of the default 2M synthetic rows
        supernet=dict(batch_size=4096, epochs=1, lr=1e-3, warmup_steps=100, lr_schedule="cosine", resident_data=True, eval_every=0),
        finetune=dict(batch_size=4096, max_steps=50, lr=2e-4, eval_every=0, restore_best=False, resident_data=True),
        eval_rows=200_000,
        evolution=dict(population=128, sample_size=64, children=8, generations=240),
        final=dict(batch_size=4096, epochs=2, lr=1e-3, lr_schedule="cosine", resident_data=True),
        # the paper's CIN [200, 200, 200] without its split, as FuxiCTR's CIN (BARS) computes it:
        # better at 1M synthetic rows by 0.0014 on average (seeds 0-3; docs/benchmarks.md, "the
        # 1M-row baselines as BARS ran them"), as BARS's CIN was at 200k rows (the `cpu` preset)
        baseline_hparams={"xdeepfm": {"cin_split_half": False}},
    ),
}


# keys a --config file (or option) replaces whole instead of merging into the preset's: the
# preset's own tiny space or baseline sizes would otherwise leak into the user's (docs/search.md)
REPLACED_WHOLE = ("baseline_hparams", "space_overrides")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in REPLACED_WHOLE else v
    return out


# every training config of a job: `device` (`--device`) sets each of them
TRAINING_SECTIONS = ("supernet", "finetune", "final")


def _with_device(data: dict, device: str | None) -> dict:
    """`data` with `device` in every training section, replacing the preset's and the file's
    own: where a model trains is not part of what it learns (RUNTIME_KEYS), and a preset sets it
    per section (`smoke`'s device: cpu), which a section's own value winning would have left
    unchangeable. A fine-tune left out or null is no fine-tune, and stays one."""
    if device is None:
        return data
    out = dict(data)
    for section in TRAINING_SECTIONS:
        own = out.get(section, None if section == "finetune" else {})
        if isinstance(own, dict):  # anything else is left to be refused as it is
            out[section] = {**own, "device": device}
    return out


def load_job_config(budget: str = "cpu", path: str | Path | None = None, **overrides) -> JobConfig:
    """Preset `budget`, then the YAML file at `path`, then keyword overrides (None = unset: the
    CLI's options, each named `--key`). A refusal is blamed on the options when the preset and
    file alone are valid: it used to name the file for an option's bad value. `device` is no
    key of the job: it sets that of every training section (`_with_device`)."""
    if budget not in PRESETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(PRESETS)}")
    if path is not None and not isinstance(path, (str, os.PathLike)):  # e.g. a dict of overrides: pathlib's "expected str" said nothing of it
        raise TypeError(f"load_job_config's path is a YAML file's path, got {type(path).__name__}; settings go as keywords, e.g. load_job_config({budget!r}, seed=1)")
    data, source = dict(PRESETS[budget]), f"budget {budget!r}"
    if path is not None:
        data, source = _merge(data, configs.read_yaml(path)), str(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    merged = _with_device(_merge(data, {k: v for k, v in given.items() if k != "device"}), given.get("device"))
    try:
        return configs.validate(JobConfig, merged, source)
    except ConfigError:
        if not given:
            raise
        configs.validate(JobConfig, data, source)  # the preset and file alone refused: their error
        options = ", ".join("--" + k.replace("_", "-") for k in given)
        return configs.validate(JobConfig, merged, f"{source} with {options}")


def dump_config(cfg: JobConfig, path: Path) -> None:
    configs.write_text_atomic(path, yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))


# what the stored supernet, candidate scores and data of a run folder depend on; the other keys
# (more generations, finalists, baselines, ...) may change when a run is continued, and so may
# where and how fast the supernet and fine-tunes run (e.g. a CPU run continued on a GPU)
RUN_IDENTITY = ("data", "synthetic_rows", "seed", "space", "space_overrides", "scoring", "sampler", "emb_dims", "supernet", "finetune", "proxy", "eval_rows", "hardware", "pim_choices")
# what a search writes after its config.yaml, so never without it
RUN_RESULTS = ("search.sqlite", "supernet", "finalists", "best", "baselines", "results.json")
RUNTIME_KEYS = {"device", "resident_data", "amp", "compile", "eval_batch_size", "log_every", "checkpoint_every", "tensorboard"}


def recipe(train_config: dict) -> dict:
    """A training config without the keys of where and how fast it runs (RUNTIME_KEYS)."""
    return {k: v for k, v in train_config.items() if k not in RUNTIME_KEYS}


def _identity(cfg: JobConfig) -> dict:
    """What the stored scores depend on: with `scoring: scratch` the proxy recipe (so `final`
    too) and not the supernet, its sampler or fine-tune, which are then never trained."""
    ident = cfg.model_dump(mode="json", include=set(RUN_IDENTITY))
    if cfg.scoring == "scratch":
        ident.update(supernet=None, finetune=None, sampler=None, proxy=recipe(cfg.proxy_config().model_dump(mode="json")))
    else:
        ident["proxy"] = None
    for key in ("supernet", "finetune"):
        if ident[key] is not None:
            ident[key] = recipe(ident[key])
    return ident


def _is_training_config(path: Path) -> bool:
    """Whether `path` is the config.yaml a training command writes in its run folder."""
    try:
        configs.load(TrainConfig, path)
    except ConfigError:
        return False
    return True


def holds_training_run(path: Path) -> bool:
    """Whether the config.yaml at `path` is a training command's, not a search job's (a job's
    few keys, e.g. `seed: 0`, read as a training config too)."""
    if not _is_training_config(path):
        return False
    try:
        configs.load(JobConfig, path)
    except ConfigError:
        return True
    return False


def _changes(key: str, before: Any, now: Any) -> list[str]:
    """`key: old -> new` for each setting that differs, a section's by its own keys
    (`supernet.seed: 0 -> 3`): whole sections were printed, so `--seed 3` listed every setting
    of the supernet and fine-tune twice, the one that changed lost among them."""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return [] if before == now else [f"{key}: {_shown(before)} -> {_shown(now)}"]
    return [change for k in dict.fromkeys([*before, *now]) for change in _changes(f"{key}.{k}", before.get(k, _UNSET), now.get(k, _UNSET))]


_UNSET = object()


def _shown(value: Any) -> str:
    """A setting in `_changes`: a whole section (against none) as `{...}`, one left out as unset."""
    return "unset" if value is _UNSET else "{...}" if isinstance(value, dict) else repr(value)


def check_same_run(cfg: JobConfig, path: Path) -> None:
    """Refuse to continue the run whose config is at `path` with settings that would mix its
    stored results with new ones (and overwrite its config and results with the mixture).
    Results without their config (deleted, or a database copied in) are refused too: nothing
    says what they were scored with, and they used to be taken as this run's."""
    if not path.exists():
        held = [name for name in RUN_RESULTS if (path.parent / name).exists()]
        if held:
            raise ConfigError(f"{path.parent} holds {', '.join(held)} of a search but no {path.name} saying which settings made them; they would be mixed with this run's: use another --out, or move them away")
        return
    try:
        old = configs.load(JobConfig, path)
    except ConfigError as exc:
        if _is_training_config(path):  # "cannot be read" sent users looking for a broken file
            raise ConfigError(f"{path.parent} holds a training run (`recnas supernet/subnet/baseline train`), not a search; use another --out") from None
        raise ConfigError(f"{path.parent} holds a run whose config cannot be read ({exc}); use another --out") from None
    before, now = _identity(old), _identity(cfg)
    diff = "; ".join(change for k in RUN_IDENTITY for change in _changes(k, before[k], now[k]))
    if diff:
        raise ConfigError(f"{path.parent} holds a run with other settings ({diff}); its results would be mixed with the new ones: use another --out{_moved_store(before['data'], now['data'], path)}")


def _moved_store(before: str | None, now: str | None, path: Path) -> str:
    """The way on for a run whose store was moved (or renamed) since: `data` is compared as a
    path, and "use another --out" alone meant running the whole job again on the same rows."""
    if before is None or now is None or before == now or (Path(before) / "meta.json").exists():
        return ""
    return (f"; no store is at {before} any more: if that very store was moved to {now} (not another one made since), "
            f"set `data: {now}` in {path} to continue the run on it")
