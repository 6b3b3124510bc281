"""The architecture encoding: a plain, JSON-serialisable description of one subnet.

Input index convention (for `dense_inputs` / `sparse_inputs` of block b):
0 is the raw input (dense features / field embeddings), j >= 1 is the output of block j-1.
So block b may read indices 0..b.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recnas.configs import parse_json, read_text, validate, write_text_atomic
from recnas.errors import ConfigError
from recnas.space.spaces import SearchSpace

# how to make the right argument, for the TypeError of a function given something else
SPACE_HINT = "recnas.space.get_space(name) gives a preset, resolve_space(path) a space file"
ARCH_HINT = "Architecture.load(path) reads an architecture file, Architecture.model_validate(d) a dict"


class BlockSpec(BaseModel):
    """One choice block of an architecture: its dense and sparse operators, the inputs each
    side reads (0 = raw input, j = block j-1's output) and its dense and sparse widths."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dense_ops: tuple[str, ...] = Field(min_length=1)
    sparse_ops: tuple[str, ...] = Field(min_length=1)
    dense_inputs: tuple[int, ...] = Field(min_length=1)
    sparse_inputs: tuple[int, ...] = Field(min_length=1)
    dense_dim: int
    sparse_dim: int

    @field_validator("dense_ops", "sparse_ops", "dense_inputs", "sparse_inputs")
    @classmethod
    def _as_set(cls, v: tuple) -> tuple:
        """Each list is a set of choices, kept sorted without repeats (as `canonical` keeps it):
        a hand-written `"dense_inputs": [0, 0]` read input 0 twice on the supernet's sliced path,
        once on its masked path and in the Subnet, under the same hash."""
        return tuple(sorted(set(v)))


class Architecture(BaseModel):
    """A subnet of a search space. Normal subnets use one dense and one sparse op per block;
    lists exist so any-path sampling (several ops summed) shares the same encoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocks: tuple[BlockSpec, ...] = Field(min_length=1)
    emb_dims: tuple[int, ...] | None = Field(
        default=None, description="optional per-field embedding widths (embedding size search)"
    )

    # -- identity -------------------------------------------------------------------
    def canonical(self) -> "Architecture":
        """Sorted, de-duplicated input and op lists: equal subnets get equal encodings."""
        blocks = [
            b.model_copy(
                update=dict(
                    dense_ops=tuple(sorted(set(b.dense_ops))),
                    sparse_ops=tuple(sorted(set(b.sparse_ops))),
                    dense_inputs=tuple(sorted(set(b.dense_inputs))),
                    sparse_inputs=tuple(sorted(set(b.sparse_inputs))),
                )
            )
            for b in self.blocks
        ]
        return self.model_copy(update=dict(blocks=tuple(blocks)))

    def to_json(self) -> str:
        """The canonical encoding as compact JSON (sorted keys): equal subnets give equal text."""
        return json.dumps(self.canonical().model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Stable across processes and versions of Python (sha1 of canonical JSON)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]

    def dense_leaves(self) -> tuple[int, ...]:
        """Blocks whose dense output no later block reads (the last block always): the logit
        sums a head over each, so no block's dense output is ever dead."""
        read = {j - 1 for b in self.blocks for j in b.dense_inputs if j > 0}
        last = len(self.blocks) - 1
        return tuple(i for i in range(len(self.blocks)) if i == last or i not in read)

    # -- validation -----------------------------------------------------------------
    def validate_for(self, space: SearchSpace, n_fields: int | None = None) -> "Architecture":
        """This architecture if it is one of `space`'s (block count, operators, inputs, widths;
        per-field `emb_dims`, one per field when `n_fields` is given); a ConfigError naming the
        first misfit otherwise."""
        if len(self.blocks) != space.n_blocks:
            raise ConfigError(f"architecture has {len(self.blocks)} blocks, space {space.name!r} has {space.n_blocks}")
        for i, b in enumerate(self.blocks):
            where = f"block {i}"
            for op in b.dense_ops:
                if op not in space.dense_ops:
                    raise ConfigError(f"{where}: dense op {op!r} not in space ({', '.join(space.dense_ops)})")
            for op in b.sparse_ops:
                if op not in space.sparse_ops:
                    raise ConfigError(f"{where}: sparse op {op!r} not in space ({', '.join(space.sparse_ops)})")
            for kind, inputs in (("dense", b.dense_inputs), ("sparse", b.sparse_inputs)):
                bad = [j for j in inputs if not 0 <= j <= i]
                if bad:
                    raise ConfigError(f"{where}: {kind} inputs {bad} out of range 0..{i} (0 = raw input, j = block j-1)")
            if b.dense_dim not in space.dense_dims:
                raise ConfigError(f"{where}: dense_dim {b.dense_dim} not in {list(space.dense_dims)}")
            if b.sparse_dim not in space.sparse_dims:
                raise ConfigError(f"{where}: sparse_dim {b.sparse_dim} not in {list(space.sparse_dims)}")
        if self.emb_dims is not None:
            check_emb_dims(self.emb_dims, space, n_fields)
        return self

    # -- files ----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the canonical encoding as indented JSON to `path` (atomically)."""
        write_text_atomic(path, json.dumps(self.canonical().model_dump(mode="json", exclude_none=True), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "Architecture":
        """The architecture of a JSON file (`save`'s, a search's best_arch.json); a missing or
        invalid file is a ConfigError naming it. `load_architecture_for` also checks it against a space."""
        data = parse_json(read_text(path, "architecture file"), f"{path}: invalid architecture")
        return validate(cls, data, f"{path}: invalid architecture")


def load_architecture_for(path: str | Path, space: SearchSpace, n_fields: int | None = None) -> Architecture:
    """`Architecture.load(path)` checked against `space`; a misfit names the file and the space,
    which "block 0: sparse op 'attention' not in space" alone did not."""
    arch = Architecture.load(path)
    try:
        return arch.validate_for(space, n_fields)
    except ConfigError as exc:
        raise ConfigError(f"{path}: the architecture does not fit the space {space.name!r}: {exc}{_space_beside(Path(path))}") from None


def _space_beside(path: Path) -> str:
    """The way on for a search's best_arch.json given with another space: the space.yaml beside
    it; a search of a recnas before 2026-12-02 wrote none, and its arch fit no space that could be
    named (a preset's space with the job's overrides), which the error left unsaid."""
    folder = path.parent
    if (folder / "space.yaml").is_file():
        return f"; the search that wrote it searched the space in {folder / 'space.yaml'}: pass --space {folder / 'space.yaml'}"
    if (folder / "config.yaml").is_file() and (folder / "search.sqlite").exists():
        return (f"; the search that wrote it (a recnas before 2026-12-02) left no space.yaml of its space: run that `recnas search` "
                f"again (its options, --out {folder}), which goes on from what is there and writes it, then pass --space {folder / 'space.yaml'}")
    return ""


def load_emb_dims(path: str | Path) -> list[int]:
    """The per-field widths of an `emb_dims.json` (from `recnas embed search`): a JSON list of
    positive integers; anything else is a ConfigError naming the file."""
    dims = parse_json(read_text(path, "emb_dims file"), str(path))
    if not isinstance(dims, list) or not dims or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in dims):
        raise ConfigError(f"{path}: expected a JSON list of positive integers, got {str(dims)[:80]}")
    return dims


def check_emb_dims(emb_dims, space: SearchSpace, n_fields: int | None = None) -> tuple[int, ...]:
    """Per-field embedding widths: one per field, each within 1..space.emb_dim."""
    if n_fields is not None and len(emb_dims) != n_fields:
        raise ConfigError(
            f"emb_dims has {len(emb_dims)} entries, data has {n_fields} fields: one width per categorical field, "
            "in the data's field order; widths searched on other data? (`recnas embed search --data` this store gives its own)"
        )
    if any(w <= 0 or w > space.emb_dim for w in emb_dims):
        raise ConfigError(f"emb_dims must lie in 1..{space.emb_dim} (the space's emb_dim), got {list(emb_dims)}")
    return tuple(emb_dims)
