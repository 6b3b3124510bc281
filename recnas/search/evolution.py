"""Regularized evolution (Real et al. 2019) over genotypes, as used by NASRec.

Each generation (the default `style: real`; `style: nasrec` follows NASRec's own searcher, see
`RegularizedEvolution._children`): draw `sample_size` members of the population, take the best as parent,
mutate it into a child (`children` times), evaluate the children, and retire the oldest
members. The whole candidate sequence is a function of the seed, and every evaluation is
cached in the results store, so re-running an interrupted search replays it without
re-evaluating anything already scored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recnas import configs
from recnas.search.evaluator import Genotype
from recnas.search.objective import Objective
from recnas.search.results import ResultsStore
from recnas.space.mutation import mutate
from recnas.space.samplers import random_architecture
from recnas.space.spaces import SearchSpace


_NEW_CHILD_TRIES = 100  # nasrec style: rounds of mutation that look for a child not met before


class EvolutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    population: int = Field(128, ge=2)
    sample_size: int = Field(64, ge=1)
    children: int = Field(8, ge=1)
    generations: int = Field(240, ge=0)
    seed: configs.Seed = 0
    hardware_mutation_prob: float = Field(0.3, ge=0, le=1, description="co-design: chance a child mutates the hardware instead")
    style: Literal["real", "nasrec"] = Field(
        "real",
        description="real: a tournament per child, one decision mutated (Real et al.); nasrec: NASRec's searcher.py "
        "(one tournament per generation, more mutations early, a child repeating an earlier child mutated again)",
    )


@dataclass
class EvolutionResult:
    best: Genotype
    best_metrics: dict
    history: list[dict] = field(default_factory=list)  # every evaluation in order
    evaluated: int = 0  # evaluations actually run (not served from the cache)

    def ranked(self) -> list[tuple[str, float]]:
        """(key, score) of every distinct candidate, best score first."""
        best: dict[str, float] = {}
        for h in self.history:
            best[h["key"]] = min(h["score"], best.get(h["key"], float("inf")))
        return sorted(best.items(), key=lambda kv: kv[1])


class RegularizedEvolution:
    def __init__(
        self,
        space: SearchSpace,
        evaluate: Callable[[Genotype], dict],
        results: ResultsStore,
        cfg: EvolutionConfig,
        objective: Objective | None = None,
        codesign: bool = False,
        run_name: str = "search",
        evaluate_many: Callable[[list[Genotype]], list[dict]] | None = None,
        emb_dims: tuple[int, ...] | None = None,
        pim_choices: dict | None = None,
    ):
        if cfg.sample_size > cfg.population:
            from recnas.errors import ConfigError

            raise ConfigError(f"evolution.sample_size ({cfg.sample_size}) exceeds evolution.population ({cfg.population})")
        self.space, self.evaluate, self.results, self.cfg = space, evaluate, results, cfg
        self.objective = objective or Objective()
        self.codesign, self.run_name = codesign, run_name
        self.pim_choices = None
        if codesign:
            from recnas.hardware import pim_choices as _choices

            self.pim_choices = _choices(pim_choices)  # validated: the searched values of every PIM field
        self.evaluate_many = evaluate_many
        self.emb_dims = None if emb_dims is None else tuple(emb_dims)  # fixed per-field widths (recnas embed search)
        self.rng = np.random.default_rng(cfg.seed)
        self.history: list[dict] = []
        self.evaluated = 0

    # -- genotype operators -----------------------------------------------------------
    def random_genotype(self) -> Genotype:
        hw = None
        if self.codesign:
            from recnas.hardware import random_pim

            hw = random_pim(self.rng, choices=self.pim_choices)
        arch = random_architecture(self.rng, self.space)
        if self.emb_dims is not None:  # mutation copies the architecture, so children keep them
            arch = arch.model_copy(update={"emb_dims": self.emb_dims})
        return Genotype(arch, hw)

    def mutate(self, g: Genotype) -> Genotype:
        if self.codesign and self.rng.random() < self.cfg.hardware_mutation_prob:
            from recnas.hardware import mutate_pim

            hw = mutate_pim(g.hardware, self.rng, self.pim_choices)
            if hw is not None:  # None: every PIM field is fixed, so the architecture mutates
                return Genotype(g.arch, hw)
        return Genotype(mutate(g.arch, self.space, self.rng), g.hardware)

    # -- evaluation with the cache ----------------------------------------------------
    def _score_all(self, genos: list[Genotype]) -> list[dict]:
        todo = [g for g in genos if self.results.get(g.key) is None]
        unique = list({g.key: g for g in todo}.values())
        if unique:
            if self.evaluate_many is not None:  # e.g. a Ray pool; results land when all are back
                scored = zip(unique, self.evaluate_many(unique))
            else:  # one at a time, each committed at once: an interruption loses at most one
                scored = ((g, self.evaluate(g)) for g in unique)
            for g, m in scored:
                self.results.put(g.key, g.arch.to_json(), m, g.hardware_json)
            self.evaluated += len(unique)
        out = []
        for g in genos:
            m = dict(self.results.get(g.key))
            m["score"] = self.objective.score(m)
            self.history.append({"key": g.key, **m})
            out.append(m)
        return out

    def _select(self, members: list[tuple[Genotype, dict]]) -> Genotype:
        if self.objective.kind == "pareto":
            from recnas.search.pareto import crowding_distance, non_dominated_sort

            # only candidates with finite objectives are ranked: a diverged one (log loss inf)
            # used to end the whole search ("points contain NaN or infinite objective values")
            vectors = [self.objective.vector(m) for _, m in members]
            finite = [i for i, v in enumerate(vectors) if np.isfinite(v).all()]
            if finite:
                pts = np.array([vectors[i] for i in finite])
                first = non_dominated_sort(pts)[0]
                crowd = crowding_distance(pts[first])
                return members[finite[first[int(np.argmax(crowd))]]][0]
        return min(members, key=lambda gm: gm[1]["score"])[0]

    def _tournament(self, population) -> Genotype:
        idx = self.rng.choice(len(population), size=self.cfg.sample_size, replace=False)
        return self._select([population[i] for i in idx])

    def _children(self, gen: int, population) -> list[Genotype]:
        """The children of generation `gen` (from 1). `real`: each its own tournament and one
        mutation. `nasrec`, as NASRec's searcher.py: one parent for the generation, each child
        `(G - g) // max(20, G // 5) + 1` mutations from it (g = gen - 1 of G generations: 6 at
        the start of 240, 1 at the end), and one that repeats a child of this search mutated on
        until it is new (`_NEW_CHILD_TRIES` rounds at most: a space too small to hold a new one
        gives the repeat, which takes its stored score)."""
        cfg = self.cfg
        if cfg.style == "real":
            return [self.mutate(self._tournament(population)) for _ in range(cfg.children)]
        parent = self._tournament(population)
        rounds = (cfg.generations - (gen - 1)) // max(20, cfg.generations // 5) + 1
        children = []
        for _ in range(cfg.children):
            child = parent
            for _ in range(_NEW_CHILD_TRIES):
                for _ in range(rounds):
                    child = self.mutate(child)
                if child.key not in self._children_seen:
                    break
            self._children_seen.add(child.key)
            children.append(child)
        return children

    # -- the loop ---------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> EvolutionResult:
        cfg = self.cfg
        # the log is this search's alone: a run continued with fewer generations (or another
        # objective) used to keep the earlier search's later generations, which the progress plot
        # then drew after this one's
        self.results.clear_generations(self.run_name)
        self._children_seen: set[str] = set()  # nasrec style: the keys of this search's children
        init = [self.random_genotype() for _ in range(cfg.population)]
        population = deque(zip(init, self._score_all(init)))
        self._log(0, population)
        if progress:
            progress(0, cfg.generations)
        for gen in range(1, cfg.generations + 1):
            children = self._children(gen, population)
            for item in zip(children, self._score_all(children)):
                population.append(item)
                population.popleft()
            self._log(gen, population)
            if progress:
                progress(gen, cfg.generations)
        best_key = min(self.history, key=lambda h: h["score"])["key"]
        return EvolutionResult(self.genotype(best_key), dict(self.results.get(best_key)), self.history, self.evaluated)

    def genotype(self, key: str) -> Genotype:
        """The genotype of a scored candidate, from the results store."""
        return Genotype(*self.results.design(key))

    def _log(self, gen: int, population) -> None:
        scores = [m["score"] for _, m in population]
        best = min(population, key=lambda gm: gm[1]["score"])
        self.results.log_generation(self.run_name, gen, best[0].key, float(min(scores)), float(np.mean(scores)), self.evaluated)
