"""Mutation for regularized evolution: change one operator, one connection or one width."""

from __future__ import annotations

import numpy as np

from recnas.space.arch import Architecture
from recnas.space.spaces import SearchSpace

KINDS = ("dense_op", "sparse_op", "dense_input", "sparse_input", "dense_dim", "sparse_dim")


def _other(rng: np.random.Generator, options: tuple, current):
    choices = [o for o in options if o != current]
    return choices[rng.integers(len(choices))] if choices else current


def _toggle(rng: np.random.Generator, inputs: tuple[int, ...], n_sources: int) -> tuple[int, ...]:
    """Add or drop one input, never leaving the block without inputs."""
    j = int(rng.integers(n_sources))
    if j in inputs and len(inputs) > 1:
        return tuple(x for x in inputs if x != j)
    if j not in inputs:
        return tuple(sorted(inputs + (j,)))
    others = [x for x in range(n_sources) if x != j]
    return tuple(sorted(inputs + (others[rng.integers(len(others))],))) if others else inputs


def mutate(arch: Architecture, space: SearchSpace, rng: np.random.Generator, max_tries: int = 20) -> Architecture:
    """A child differing from `arch` in exactly one decision (when the space allows one)."""
    for _ in range(max_tries):
        i = int(rng.integers(len(arch.blocks)))
        b = arch.blocks[i]
        kind = KINDS[rng.integers(len(KINDS))]
        if kind == "dense_op":
            upd = {"dense_ops": (_other(rng, space.dense_ops, b.dense_ops[0]),)}
        elif kind == "sparse_op":
            upd = {"sparse_ops": (_other(rng, space.sparse_ops, b.sparse_ops[0]),)}
        elif kind == "dense_input":
            upd = {"dense_inputs": _toggle(rng, b.dense_inputs, i + 1)}
        elif kind == "sparse_input":
            upd = {"sparse_inputs": _toggle(rng, b.sparse_inputs, i + 1)}
        elif kind == "dense_dim":
            upd = {"dense_dim": int(_other(rng, space.dense_dims, b.dense_dim))}
        else:
            upd = {"sparse_dim": int(_other(rng, space.sparse_dims, b.sparse_dim))}
        blocks = list(arch.blocks)
        blocks[i] = b.model_copy(update=upd)
        child = arch.model_copy(update={"blocks": tuple(blocks)}).canonical()
        if child.hash != arch.canonical().hash:
            return child
    return arch.canonical()
