"""The planted click model behind the synthetic benchmark: feature distributions and true p.

Why a planted model: with the true click probability p of every row known, the best log
loss any model could reach (the Bayes-optimal one) is known too, so search results can be
read as "fraction of the achievable gain closed" instead of as bare numbers.

The logit is a weighted sum of *terms*, each normalised to unit standard deviation on a
fixed calibration sample and then scaled, so the share of signal each kind of interaction
carries is set explicitly (see `TERM_WEIGHTS`):

    logit = bias + sum_t scale_t * term_t(dense, sparse)

Latent tables are centred under each field's id frequencies, so pairwise, 3-way and
dense x categorical terms have zero marginal effect on any single feature: a model without
feature crosses cannot pick them up. Everything is a deterministic function of
(seed, SynthConfig); p depends only on the *stored* features (missing dense -> 0 after the
log transform, missing/rare categorical -> id 0), so p is exactly the Bayes posterior.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from recnas.errors import ConfigError, DataError

LATENT_DIM = 4  # small, so embeddings of width 16 can represent every planted interaction
CALIBRATION_ROWS = 100_000
# Total standard deviation carried by each group of terms (before `signal`): the crosses
# together carry ~3x the variance of the first-order part.
TERM_WEIGHTS = {"first": 0.55, "pair": 0.95, "cross": 0.45, "triple": 0.5, "mlp": 0.45, "gate": 0.4}


@dataclass(frozen=True)
class SynthConfig:
    """Shape and difficulty knobs of the synthetic benchmark (stored in meta.json `source`)."""

    n_dense: int = 13
    n_sparse: int = 26
    min_vocab: int = 3
    max_vocab: int = 2000
    positive_rate: float = 0.25
    signal: float = 1.0  # multiplies every term scale: >1 easier (lower Bayes loss), <1 harder

    def validate(self) -> "SynthConfig":
        """A checked copy with plain int/float values; ConfigError names the bad knob."""
        for f in fields(self):
            # a numpy float for an integer knob was taken and cut down by int() below (13.9 -> 13)
            value, kind = getattr(self, f.name), (int, np.integer) if f.type == "int" else (int, float, np.integer, np.floating)
            if isinstance(value, bool) or not isinstance(value, kind) or value != value:
                raise ConfigError(f"synthetic data: {f.name} must be {'an integer' if f.type == 'int' else 'a number'}, got {value!r}")
        checks = [
            (1 <= self.n_dense <= 1000, f"n_dense must be in 1..1000, got {self.n_dense}"),
            (3 <= self.n_sparse <= 1000, f"n_sparse must be in 3..1000 (the click model needs 3-way terms), got {self.n_sparse}"),
            (2 <= self.min_vocab <= self.max_vocab, f"need 2 <= min_vocab <= max_vocab, got {self.min_vocab}, {self.max_vocab}"),
            (self.max_vocab <= 10_000_000, f"max_vocab must be at most 10,000,000, got {self.max_vocab}"),
            (0.01 <= self.positive_rate <= 0.99, f"positive_rate must be in [0.01, 0.99], got {self.positive_rate}"),
            (0.0 <= self.signal <= 10.0, f"signal must be in [0, 10], got {self.signal}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"synthetic data: {msg}")
        # Plain Python numbers, so numpy scalars never reach meta.json or the model cache key.
        return SynthConfig(**{f.name: (int if f.type == "int" else float)(getattr(self, f.name)) for f in fields(self)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SynthConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"synthetic config: unknown keys {sorted(unknown)}")
        return cls(**d).validate()


@dataclass(frozen=True)
class Term:
    """One additive piece of the logit: `kind` plus the field / dense indices it reads."""

    kind: str  # first | pair | cross | triple | mlp | gate
    fields: tuple[int, ...] = ()
    dense: tuple[int, ...] = ()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


class PlantedModel:
    """Feature distributions plus click model, rebuilt identically from (config, seed)."""

    def __init__(self, config: SynthConfig, seed: int):
        self.config = config.validate()
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 0xC11C])
        self._init_features(rng)
        self._init_terms(rng)
        self._calibrate(np.random.default_rng([self.seed, 0xCA1B]))

    # -- feature distributions ---------------------------------------------------------
    def _init_features(self, rng: np.random.Generator) -> None:
        c = self.config
        sizes = np.geomspace(c.min_vocab, c.max_vocab, c.n_sparse).round().astype(np.int64)
        self.vocab_sizes = [int(v) for v in rng.permutation(sizes)]
        # id 0 = missing; ids 1..v-1 follow a shifted Zipf law with a per-field exponent.
        self.missing_rate = np.where(rng.random(c.n_sparse) < 0.6, 0.0, rng.uniform(0.01, 0.4, c.n_sparse))
        self.zipf_exponent = rng.uniform(0.8, 1.3, c.n_sparse)
        self.zipf_shift = rng.uniform(0.5, 3.0, c.n_sparse)
        self.id_freq: list[np.ndarray] = []
        for f, v in enumerate(self.vocab_sizes):
            w = (np.arange(1, v) + self.zipf_shift[f]) ** -self.zipf_exponent[f]
            freq = np.concatenate([[self.missing_rate[f]], (1 - self.missing_rate[f]) * w / w.sum()])
            self.id_freq.append(freq)
        self._id_cdf = [np.cumsum(p) for p in self.id_freq]
        # Dense counts: Poisson with a log-normal rate; a shared "activity" factor correlates them.
        self.dense_mu = rng.uniform(-0.5, 4.0, c.n_dense)
        self.dense_sigma = rng.uniform(0.4, 1.4, c.n_dense)
        self.dense_shared = rng.uniform(0.0, 0.6, c.n_dense)
        self.dense_missing = np.where(rng.random(c.n_dense) < 0.5, 0.0, rng.uniform(0.01, 0.45, c.n_dense))

    def sample_counts(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw features of n rows: (dense counts int64, dense missing mask, sparse ids int32)."""
        c = self.config
        shared = rng.standard_normal((n, 1))
        z = np.sqrt(self.dense_shared) * shared + np.sqrt(1 - self.dense_shared) * rng.standard_normal((n, c.n_dense))
        rate = np.exp(np.minimum(self.dense_mu + self.dense_sigma * z, 20.0))
        counts = rng.poisson(rate)
        missing = rng.random((n, c.n_dense)) < self.dense_missing
        counts[missing] = 0
        u = rng.random((c.n_sparse, n))  # field-major: each field's draws are contiguous
        sparse = np.empty((c.n_sparse, n), dtype=np.int32)
        for f, cdf in enumerate(self._id_cdf):
            sparse[f] = np.minimum(np.searchsorted(cdf, u[f] * cdf[-1], side="right"), len(cdf) - 1)
        return counts, missing, np.ascontiguousarray(sparse.T)

    @staticmethod
    def dense_transform(counts: np.ndarray) -> np.ndarray:
        """The Criteo transform log(max(x,0)+1), float32 as stored (missing counts are 0)."""
        return np.log1p(np.maximum(counts, 0).astype(np.float64)).astype(np.float32)

    # -- click model -------------------------------------------------------------------
    def _init_terms(self, rng: np.random.Generator) -> None:
        c, k = self.config, LATENT_DIM
        order = np.argsort(self.vocab_sizes, kind="stable")
        # Crosses mostly read the smaller two thirds of the fields, so their embeddings can be
        # learnt from ~1e5-1e6 rows; one pair touches a large field (a user x item-like cross).
        n_small = max(3, 2 * c.n_sparse // 3)
        small, big = [int(f) for f in order[:n_small]], [int(f) for f in order[n_small:]] or [int(order[-1])]
        pick = lambda pool, m: tuple(int(x) for x in rng.choice(pool, m, replace=False))  # noqa: E731
        dense_pick = lambda: (int(rng.integers(c.n_dense)),)  # noqa: E731

        terms = [Term("first")]
        pairs: set[tuple[int, ...]] = set()
        while len(pairs) < min(10, len(small) * (len(small) - 1) // 2):
            pairs.add(tuple(sorted(pick(small, 2))))
        terms += [Term("pair", p) for p in sorted(pairs)]
        terms.append(Term("pair", (int(rng.choice(big)), int(rng.choice(small)))))  # a user x item-like cross
        terms += [Term("cross", pick(small, 1), dense_pick()) for _ in range(3)]
        terms += [Term("triple", pick(small, 3)) for _ in range(2)]
        terms.append(Term("mlp", pick(small, min(4, len(small))), pick(np.arange(c.n_dense), min(2, c.n_dense))))
        terms += [Term("gate", pick(small, 1), dense_pick()) for _ in range(2)]
        self.terms = terms

        # Per-field tables, centred under the id frequencies (zero marginal effect).
        centre = lambda f, t: t - self.id_freq[f] @ t  # noqa: E731
        self.first_w = [centre(f, rng.standard_normal(v)) for f, v in enumerate(self.vocab_sizes)]
        self.dense_w = rng.standard_normal(c.n_dense)
        self.latent = [centre(f, rng.standard_normal((v, k))) for f, v in enumerate(self.vocab_sizes)]
        self.effect = [centre(t.fields[0], rng.standard_normal(self.vocab_sizes[t.fields[0]])) if t.kind in ("cross", "gate") else None for t in terms]
        mlp = next(t for t in terms if t.kind == "mlp")
        n_in = k * len(mlp.fields) + len(mlp.dense)
        self.mlp_w1 = rng.standard_normal((n_in, 16)) * (2.0 / np.sqrt(n_in))
        self.mlp_b1 = rng.standard_normal(16) * 0.5
        self.mlp_w2 = rng.standard_normal(16)

    def _term_values(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """Un-scaled term values [n, n_terms] from stored features."""
        z = (np.asarray(dense, dtype=np.float64) - self.dense_mean) / self.dense_std
        cols = np.ascontiguousarray(np.asarray(sparse).T)  # field-major for fast gathers
        lat = lambda f: self.latent[f][cols[f]]  # noqa: E731
        out = np.empty((cols.shape[1], len(self.terms)))
        for i, t in enumerate(self.terms):
            if t.kind == "first":
                v = z @ self.dense_w
                for f, w in enumerate(self.first_w):
                    v += w[cols[f]]
            elif t.kind == "pair":
                v = np.einsum("nk,nk->n", lat(t.fields[0]), lat(t.fields[1]))
            elif t.kind == "triple":
                v = np.einsum("nk,nk,nk->n", lat(t.fields[0]), lat(t.fields[1]), lat(t.fields[2]))
            elif t.kind == "cross":
                v = z[:, t.dense[0]] * self.effect[i][cols[t.fields[0]]]
            elif t.kind == "gate":
                v = _sigmoid(2.0 * z[:, t.dense[0]]) * self.effect[i][cols[t.fields[0]]]
            else:  # mlp
                x = np.concatenate([lat(f) for f in t.fields] + [z[:, list(t.dense)]], axis=1)
                v = np.tanh(x @ self.mlp_w1 + self.mlp_b1) @ self.mlp_w2
            out[:, i] = v
        return out

    def _calibrate(self, rng: np.random.Generator) -> None:
        """Fix dense standardisation, term scales and the bias on one seeded sample."""
        counts, _, sparse = self.sample_counts(rng, CALIBRATION_ROWS)
        dense = self.dense_transform(counts).astype(np.float64)
        self.dense_mean = dense.mean(0)
        self.dense_std = np.where(dense.std(0) > 0, dense.std(0), 1.0)
        values = self._term_values(dense, sparse)
        group_size = {kind: sum(t.kind == kind for t in self.terms) for kind in TERM_WEIGHTS}
        std = np.where(values.std(0) > 0, values.std(0), 1.0)
        self.scales = np.array([TERM_WEIGHTS[t.kind] / np.sqrt(group_size[t.kind]) for t in self.terms]) / std * self.config.signal
        logit = values @ self.scales
        lo, hi = -30.0, 30.0  # mean sigmoid is monotone in the bias: bisect
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _sigmoid(logit + mid).mean() < self.config.positive_rate else (lo, mid)
        self.bias = 0.5 * (lo + hi)

    def _checked_term_values(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """`_term_values` of stored rows, after checking their shapes and ids (DataError)."""
        dense, sparse = np.asarray(dense), np.asarray(sparse)
        c = self.config
        if dense.ndim != 2 or sparse.ndim != 2 or dense.shape != (len(sparse), c.n_dense) or sparse.shape[1] != c.n_sparse:
            raise DataError(f"planted model expects dense [n, {c.n_dense}] and sparse [n, {c.n_sparse}], got {dense.shape} and {sparse.shape}")
        if len(sparse) and ((sparse < 0).any() or (sparse >= np.array(self.vocab_sizes)).any()):
            raise DataError(f"planted model: sparse ids outside the vocabulary sizes {self.vocab_sizes}")
        return self._term_values(dense, sparse)

    def logit(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """True logit (float64) of rows given their *stored* dense [n, n_dense] and sparse [n, n_sparse]."""
        return self.bias + self._checked_term_values(dense, sparse) @ self.scales

    def term_contributions(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """Each term's scaled share of the logit, [n, n_terms]: the logit is `bias` plus their
        row sums (what benchmarks/term_capture.py regresses a model's logits on)."""
        return self._checked_term_values(dense, sparse) * self.scales

    def probability(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        return _sigmoid(self.logit(dense, sparse))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for meta.json (the seed + config alone reproduce everything)."""
        return {
            "bias": float(self.bias),
            "terms": [{"kind": t.kind, "fields": list(t.fields), "dense": list(t.dense), "scale": float(s)} for t, s in zip(self.terms, self.scales)],
        }


@lru_cache(maxsize=8)
def planted_model(config: SynthConfig, seed: int) -> PlantedModel:
    """Cached constructor: rebuilding costs a calibration pass (~0.5 s)."""
    return PlantedModel(config, seed)
