"""Path samplers for supernet training (NASRec section on sampling strategies).

- single-path: one operator and one input of each kind per block.
- any-path: any non-empty subset of operators and of inputs (several operators are summed).
- single-op-any-conn (default): one operator, any non-empty subset of inputs.
- farthest-greedy: draws several single-op-any-conn candidates and keeps the one farthest
  (Hamming distance of encodings) from the recently trained paths, to spread coverage.

All randomness comes from one numpy Generator whose state is saved in checkpoints.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from recnas.configs import require_type
from recnas.errors import ConfigError
from recnas.space.arch import SPACE_HINT, Architecture, BlockSpec
from recnas.space.spaces import SearchSpace

STRATEGIES = ("single-op-any-conn", "single-path", "any-path", "farthest-greedy")


def check_strategy(strategy: str) -> str:
    """`strategy` if it names a path sampler; ConfigError listing them otherwise."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown sampler {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


def _subset(rng: np.random.Generator, items: tuple) -> tuple:
    """A uniformly random non-empty subset (include each with prob 0.5, retry if empty)."""
    while True:
        mask = rng.random(len(items)) < 0.5
        if mask.any():
            return tuple(x for x, m in zip(items, mask) if m)


def random_block(rng: np.random.Generator, space: SearchSpace, i: int, any_ops: bool, any_conn: bool) -> BlockSpec:
    """Block `i` drawn with `rng`: one operator of each kind (any non-empty set with
    `any_ops`), one input of each kind (any non-empty set of 0..i with `any_conn`), and widths
    drawn uniformly from the space's."""
    sources = tuple(range(i + 1))
    pick_ops = (lambda ops: _subset(rng, ops)) if any_ops else (lambda ops: (ops[rng.integers(len(ops))],))
    pick_in = (lambda: _subset(rng, sources)) if any_conn else (lambda: (sources[rng.integers(len(sources))],))
    return BlockSpec(
        dense_ops=pick_ops(space.dense_ops),
        sparse_ops=pick_ops(space.sparse_ops),
        dense_inputs=pick_in(),
        sparse_inputs=pick_in(),
        dense_dim=int(space.dense_dims[rng.integers(len(space.dense_dims))]),
        sparse_dim=int(space.sparse_dims[rng.integers(len(space.sparse_dims))]),
    )


def random_architecture(rng: np.random.Generator, space: SearchSpace, any_ops: bool = False, any_conn: bool = True) -> Architecture:
    """A random architecture of `space` drawn with the numpy Generator `rng` (`random_block`
    per block; the defaults draw as single-op-any-conn), canonical."""
    require_type(rng, np.random.Generator, "random_architecture's rng", "np.random.default_rng(seed) makes one")
    return Architecture(blocks=tuple(random_block(rng, space, i, any_ops, any_conn) for i in range(space.n_blocks))).canonical()


DRAWS_PER_SUBNET = 100  # random draws per wanted subnet before `distinct_random_architectures` concludes the space holds no more


def distinct_random_architectures(seed: int, space: SearchSpace, n: int) -> list[Architecture]:
    """`n` distinct random architectures drawn with `seed`, in draw order (repeats are drawn
    again): the subnets of a rank study, so that any tool drawing with the same seed gets the
    same subnets. Fewer only when `n * DRAWS_PER_SUBNET` draws find no more (a small space)."""
    rng = np.random.default_rng(seed)
    found: dict[str, Architecture] = {}
    for _ in range(n * DRAWS_PER_SUBNET):
        if len(found) == n:
            break
        arch = random_architecture(rng, space)
        found.setdefault(arch.hash, arch)
    return list(found.values())


def largest_architecture(space: SearchSpace) -> Architecture:
    """Every operator and every input at the widest dims: the path that holds all the
    supernet's weights (the in-place distillation teacher, `TrainConfig.inplace_distill`)."""
    blocks = tuple(
        BlockSpec(dense_ops=space.dense_ops, sparse_ops=space.sparse_ops, dense_inputs=tuple(range(i + 1)), sparse_inputs=tuple(range(i + 1)), dense_dim=space.max_dense, sparse_dim=space.max_sparse)
        for i in range(space.n_blocks)
    )
    return Architecture(blocks=blocks).canonical()


def encode(arch: Architecture, space: SearchSpace) -> np.ndarray:
    """A fixed-length 0/1 vector of an architecture (operators, connections, dims) for distances."""
    bits = []
    for i, b in enumerate(arch.blocks):
        bits += [op in b.dense_ops for op in space.dense_ops] + [op in b.sparse_ops for op in space.sparse_ops]
        bits += [j in b.dense_inputs for j in range(i + 1)] + [j in b.sparse_inputs for j in range(i + 1)]
        bits += [d == b.dense_dim for d in space.dense_dims] + [d == b.sparse_dim for d in space.sparse_dims]
    return np.array(bits, dtype=bool)


class ArchSampler:
    """Samples one architecture per training step; reproducible and checkpointable."""

    def __init__(self, space: SearchSpace, strategy: str = "single-op-any-conn", seed: int = 0, candidates: int = 8, memory: int = 16):
        """Draws from `space` with the path sampler `strategy` (one of STRATEGIES), its stream
        seeded by `seed`; `candidates` and `memory` are farthest-greedy's draws per step and
        remembered paths."""
        require_type(space, SearchSpace, "ArchSampler's space", SPACE_HINT)
        self.space, self.strategy, self.seed = space, check_strategy(strategy), seed
        for name, value in (("candidates", candidates), ("memory", memory)):
            # 0 candidates crashed the second draw (argmax of an empty list); a memory of 0 kept
            # no history, so farthest-greedy drew as single-op-any-conn without a word
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sampler {name} must be a positive integer, got {value!r}")
        self.rng = np.random.default_rng(seed)
        self.candidates = candidates
        self.history: deque[np.ndarray] = deque(maxlen=memory)

    def sample(self) -> Architecture:
        """The next path of the stream."""
        s = self.strategy
        if s == "single-path":
            return random_architecture(self.rng, self.space, any_ops=False, any_conn=False)
        if s == "any-path":
            return random_architecture(self.rng, self.space, any_ops=True, any_conn=True)
        if s == "single-op-any-conn" or not self.history:
            arch = random_architecture(self.rng, self.space)
        else:
            cands = [random_architecture(self.rng, self.space) for _ in range(self.candidates)]
            past = np.stack(self.history)
            dist = [int((encode(c, self.space)[None] != past).sum(1).min()) for c in cands]
            arch = cands[int(np.argmax(dist))]
        if s == "farthest-greedy":
            self.history.append(encode(arch, self.space))
        return arch

    def state_dict(self) -> dict:
        """Strategy, seed, RNG state and farthest-greedy's history, in plain containers."""
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "history": [h.astype(int).tolist() for h in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from `state_dict`'s state (a ConfigError when it is another strategy's)."""
        if state.get("strategy") != self.strategy:
            raise ConfigError(f"sampler state is for {state.get('strategy')!r}, not {self.strategy!r}")
        self.rng.bit_generator.state = state["rng"]
        self.history.clear()
        for h in state.get("history", []):
            self.history.append(np.array(h, dtype=bool))


class FixedSampler:
    """Always the same architecture: fine-tuning one subnet inside the supernet."""

    def __init__(self, arch: Architecture):
        """`arch`: what every `sample()` returns (an Architecture for a `Supernet`; any path
        a generic supernet's forward takes)."""
        self.arch = arch

    def sample(self) -> Architecture:
        """Always `arch`."""
        return self.arch

    def state_dict(self) -> dict:
        """The architecture, as JSON."""
        return {"strategy": "fixed", "arch": self.arch.to_json()}

    def load_state_dict(self, state: dict) -> None:
        """Take the architecture `state_dict` recorded."""
        self.arch = Architecture.model_validate_json(state["arch"])


def make_sampler(name: str, space: SearchSpace, seed: int = 0):
    """`ArchSampler(space, name, seed)`: the path sampler named `name` (one of STRATEGIES)."""
    return ArchSampler(space, name, seed)
