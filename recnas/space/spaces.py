"""The NASRec search spaces (docs/search.md, "Search spaces"): `full` and `small`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recnas import configs
from recnas.baselines.interactions import check_cin_sizes
from recnas.configs import explain
from recnas.errors import ConfigError

NASREC_DENSE_OPS = ("fc", "gating", "sum")  # the `full` space's, as in NASRec
DENSE_OPS = NASREC_DENSE_OPS + ("cross",)  # every dense operator a space may list (recnas/ops/dense.py)
SPARSE_OPS = ("efc", "dot", "attention")


class SearchSpace(BaseModel):
    """Which operators and widths each choice block may take; the supernet is sized from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "full"
    n_blocks: int = Field(7, ge=1, le=32)
    dense_ops: tuple[str, ...] = NASREC_DENSE_OPS
    sparse_ops: tuple[str, ...] = SPARSE_OPS
    dense_dims: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 768, 1024)
    sparse_dims: tuple[int, ...] = (16, 32, 48, 64)
    emb_dim: int = Field(16, ge=1, le=512)
    # layer sizes of a CIN head (xDeepFM's, over the raw fields) beside every architecture's
    # blocks; empty = none. Not searched, and not in the supernet: recnas/supernet/head.py
    cin_head: tuple[int, ...] = ()
    # whether the head's CIN splits its maps as xDeepFM's paper does (each non-final layer sends
    # half its maps on and sum-pools the other half) or, false, forwards and pools every map as
    # the CIN of BARS/FuxiCTR does (the xDeepFM baseline's `cin_split_half`). Left out of a spec
    # when true, so specs written before it existed still match: `spec`
    cin_head_split: bool = True

    @field_validator("dense_ops", "sparse_ops", "dense_dims", "sparse_dims")
    @classmethod
    def _distinct(cls, v, info):
        # a choice listed twice is a mistake in the file: dims used to drop it silently, ops to keep it
        twice = sorted({c for c in v if v.count(c) > 1}, key=v.index)
        if twice:
            raise ValueError(f"{info.field_name} lists {', '.join(map(str, twice))} more than once; give each choice once")
        return v

    @field_validator("dense_ops", "sparse_ops")
    @classmethod
    def _ops(cls, v, info):
        allowed = DENSE_OPS if info.field_name == "dense_ops" else SPARSE_OPS
        bad = [o for o in v if o not in allowed]
        if bad or not v:
            raise ValueError(f"{info.field_name} must be a non-empty subset of {allowed}")
        return tuple(v)

    @field_validator("dense_dims", "sparse_dims")
    @classmethod
    def _dims(cls, v):
        if not v or any(d <= 0 for d in v):
            raise ValueError("dims must be a non-empty list of positive integers")
        return tuple(sorted(set(v)))

    @field_validator("cin_head")
    @classmethod
    def _cin_head(cls, v):
        if v:  # empty: no head; the even sizes the split needs: `_cin_head_split`
            check_cin_sizes(v, split_half=False)
        return tuple(v)

    @model_validator(mode="after")
    def _cin_head_split(self):
        if not self.cin_head:
            if not self.cin_head_split:
                raise ValueError("cin_head_split: false needs a cin_head (it sets how a CIN head's layers split their maps; without a head it would do nothing)")
            return self
        if self.cin_head_split:
            try:
                check_cin_sizes(self.cin_head, split_half=True)
            except ValueError as err:
                raise ValueError(f"key 'cin_head': {err} (got {list(self.cin_head)}); with cin_head_split: false every layer pools all its maps and any positive sizes do") from None
        return self

    def blocks_only(self) -> "SearchSpace":
        """This space without its CIN head: what the supernet holds and candidates are scored on.
        `cin_head_split` goes back to its default with the head, so the result equals (and has
        the spec of) the same space written without a head."""
        return self.model_copy(update={"cin_head": (), "cin_head_split": True}) if self.cin_head else self

    def spec(self) -> dict:
        """The space as a model spec records it. An empty `cin_head` and a true (default)
        `cin_head_split` are left out, so a spec written before either field existed still
        matches the same model (run folders resume, checkpoints load)."""
        exclude = set() if self.cin_head else {"cin_head"}
        if self.cin_head_split:
            exclude.add("cin_head_split")
        return self.model_dump(mode="json", exclude=exclude)

    @property
    def max_dense(self) -> int:
        """The widest dense width: the supernet's dense tensors are this wide."""
        return max(self.dense_dims)

    @property
    def max_sparse(self) -> int:
        """The most tokens a sparse output may have: the supernet's token tensors hold this many."""
        return max(self.sparse_dims)


PRESETS = {
    "full": dict(name="full"),
    "small": dict(name="small", dense_ops=("fc",), sparse_ops=("efc", "dot")),
    # tiny spaces for tests and CPU smoke runs: same operators, narrow widths
    "full-tiny": dict(name="full-tiny", n_blocks=3, dense_dims=(8, 16, 32), sparse_dims=(4, 8), emb_dim=8),
    "small-tiny": dict(name="small-tiny", n_blocks=3, dense_ops=("fc",), sparse_ops=("efc", "dot"), dense_dims=(8, 16, 32), sparse_dims=(4, 8), emb_dim=8),
}


def get_space(name: str = "full", **overrides) -> SearchSpace:
    """A preset space, optionally with fields overridden (e.g. `n_blocks=5`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown search space {name!r}; choose one of {', '.join(PRESETS)}")
    try:
        return SearchSpace(**{**PRESETS[name], **overrides})
    except ValidationError as exc:
        raise ConfigError(f"invalid search space: {explain(SearchSpace, exc)}") from None


def resolve_space(value: str | Path) -> SearchSpace:
    """A preset name, or a space file (YAML/JSON with SearchSpace's keys, e.g. the `space.yaml`
    a search run writes). Why the file: a searched architecture only rebuilds as found inside
    the exact space of its run, presets plus `space_overrides` (token width, operators, block
    count), which no preset name can carry."""
    if str(value) in PRESETS:
        return get_space(str(value))
    path = Path(value)
    if not str(value) or (path.suffix.lower() not in (".yaml", ".yml", ".json") and not path.exists()):  # "" is Path("."): a folder that exists
        raise ConfigError(f"unknown search space {str(value)!r}; choose one of {', '.join(PRESETS)}, or give a space file (a search run's space.yaml)")
    if path.is_dir():  # a search run's folder was "cannot read config file (Is a directory)"
        inside = path / "space.yaml"
        raise ConfigError(f"search space {str(value)!r} is a folder; give " + (f"its space file, {inside}" if inside.is_file() else "a space file (a search run's space.yaml) or one of " + ", ".join(PRESETS)))
    return configs.load(SearchSpace, path)
