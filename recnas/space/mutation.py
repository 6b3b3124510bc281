"""Mutation for regularized evolution: change one operator, one connection or one width."""

from __future__ import annotations

import numpy as np

from recnas.space.arch import Architecture, BlockSpec
from recnas.space.spaces import SearchSpace

KINDS = ("dense_op", "sparse_op", "dense_input", "sparse_input", "dense_dim", "sparse_dim")
FIELDS = {"dense_op": "dense_ops", "sparse_op": "sparse_ops", "dense_input": "dense_inputs", "sparse_input": "sparse_inputs", "dense_dim": "dense_dim", "sparse_dim": "sparse_dim"}


def _alternatives(b: BlockSpec, space: SearchSpace, kind: str) -> list:
    """The values an operator or width decision of block `b` may change to (none: it is fixed)."""
    if kind == "dense_op":
        return [(o,) for o in space.dense_ops if o != b.dense_ops[0]]
    if kind == "sparse_op":
        return [(o,) for o in space.sparse_ops if o != b.sparse_ops[0]]
    if kind == "dense_dim":
        return [int(d) for d in space.dense_dims if d != b.dense_dim]
    return [int(d) for d in space.sparse_dims if d != b.sparse_dim]


def _toggle(rng: np.random.Generator, inputs: tuple[int, ...], n_sources: int) -> tuple[int, ...]:
    """Add or drop one input, never leaving the block without inputs."""
    j = int(rng.integers(n_sources))
    if j in inputs and len(inputs) > 1:
        return tuple(x for x in inputs if x != j)
    if j not in inputs:
        return tuple(sorted(inputs + (j,)))
    others = [x for x in range(n_sources) if x != j]
    return tuple(sorted(inputs + (others[rng.integers(len(others))],))) if others else inputs


def _toggles(inputs: tuple[int, ...], n_sources: int) -> list[tuple[int, ...]]:
    """Every input list `_toggle` can give: one source added, or one dropped where others remain."""
    return [tuple(sorted(inputs + (j,))) if j not in inputs else tuple(x for x in inputs if x != j) for j in range(n_sources) if j not in inputs or len(inputs) > 1]


def _child(arch: Architecture, i: int, kind: str, value) -> Architecture:
    blocks = list(arch.blocks)
    blocks[i] = arch.blocks[i].model_copy(update={FIELDS[kind]: value})
    return arch.model_copy(update={"blocks": tuple(blocks)}).canonical()


def _neighbours(arch: Architecture, space: SearchSpace) -> list[Architecture]:
    """Every architecture differing from `arch` in exactly one decision, in a fixed order."""
    parent = arch.canonical()
    out: dict[str, Architecture] = {}
    for i, b in enumerate(parent.blocks):
        for kind in KINDS:
            values = _toggles(getattr(b, FIELDS[kind]), i + 1) if kind.endswith("_input") else _alternatives(b, space, kind)
            for value in values:
                child = _child(parent, i, kind, value)
                if child.hash != parent.hash:
                    out.setdefault(child.hash, child)
    return list(out.values())


def mutate(arch: Architecture, space: SearchSpace, rng: np.random.Generator, max_tries: int = 20) -> Architecture:
    """A child differing from `arch` in exactly one decision; `arch` itself only when the space
    allows no such child. Draws a block and a kind of decision at random; where `max_tries`
    draws all hit decisions with no alternative (e.g. a space's only operator), one of the
    parent's one-decision neighbours is drawn (the parent itself used to come back, a wasted
    child: 2.6% of them where one block's sparse operator was the only free decision)."""
    for _ in range(max_tries):
        i = int(rng.integers(len(arch.blocks)))
        b = arch.blocks[i]
        kind = KINDS[rng.integers(len(KINDS))]
        if kind.endswith("_input"):
            value = _toggle(rng, getattr(b, FIELDS[kind]), i + 1)
        else:
            values = _alternatives(b, space, kind)
            if not values:
                continue
            value = values[rng.integers(len(values))]
        child = _child(arch, i, kind, value)
        if child.hash != arch.canonical().hash:
            return child
    neighbours = _neighbours(arch, space)
    return neighbours[int(rng.integers(len(neighbours)))] if neighbours else arch.canonical()
