"""Analytic ReRAM-crossbar processing-in-memory (PIM) cost model (docs/hardware.md section 3).

Every linear layer (`Layer.kind == "linear"`) is mapped onto its own crossbars (weights
stationary); activation x activation products and elementwise work run on digital units;
embedding lookups are DRAM reads. Energy, latency and area come from one constant table,
`PIMConstants`, whose every entry names its source; docs/hardware.md explains the model and
walks through a worked example. Use it for *relative* comparisons under one constant set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from recnas.configs import require_type, validate
from recnas.errors import ConfigError
from recnas.hardware.costs import Costs, Layer, count_costs

# Allowed values of every searchable field; validation and mutation both read this table.
CHOICES: dict[str, tuple[int, ...]] = {
    "xbar_size": (64, 128, 256),
    "cell_bits": (1, 2, 4),
    "weight_bits": (4, 6, 8),
    "act_bits": (4, 6, 8),
    "dac_bits": (1, 2),
    "adc_bits": (4, 5, 6, 7, 8),
    "cols_per_adc": (8, 16, 32, 64, 128),
    "replication": (1, 2, 4, 8, 16),
}
DEFAULT_BUDGET = 16128  # one ISAAC chip: 168 tiles x 12 IMAs x 8 crossbars


class PIMConfig(BaseModel):
    """One PIM design point. Defaults are ISAAC's (128x128, 2-bit cells, 1-bit DAC, 8-bit ADC
    shared by 128 columns) with 8-bit weights and activations. `replication` is the most
    copies of a layer's weights (each on its own crossbars) that serve the layer's repeated
    applications in parallel: a layer applied `reps` times per sample gets min(replication,
    reps) copies, which divides its latency and multiplies its crossbars (area) by that
    factor at unchanged energy (ISAAC replicates layers the same way to balance its
    pipeline). `crossbar_budget` is the chip size: it is not searched, a design that needs
    more crossbars does not fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    xbar_size: int = 128
    cell_bits: int = 2
    weight_bits: int = 8
    act_bits: int = 8
    dac_bits: int = 1
    adc_bits: int = 8
    cols_per_adc: int = 128
    replication: int = 1
    crossbar_budget: int = DEFAULT_BUDGET

    @field_validator(*CHOICES)
    @classmethod
    def _allowed(cls, v, info):
        if v not in CHOICES[info.field_name]:
            raise ValueError(f"must be one of {list(CHOICES[info.field_name])}")  # the key and the value: from the caller
        return v

    @field_validator("crossbar_budget")
    @classmethod
    def _budget(cls, v):
        if v <= 0:
            raise ValueError("must be positive")
        return v

    @model_validator(mode="after")
    def _adc_sharing(self):
        if self.cols_per_adc > self.xbar_size:
            raise ValueError(f"cols_per_adc ({self.cols_per_adc}) cannot exceed the crossbar size ({self.xbar_size})")
        return self

    @classmethod
    def from_dict(cls, data: dict, source: str = "PIM config") -> "PIMConfig":
        """Validated config from user input; problems become one ConfigError line, worded like
        every other config's (recnas.configs.validate), prefixed by `source`."""
        return validate(cls, data, source)

    @property
    def cells_per_weight(self) -> int:
        """ReRAM cells that hold one weight: ceil(weight_bits / cell_bits)."""
        return math.ceil(self.weight_bits / self.cell_bits)

    @property
    def input_slices(self) -> int:
        """Bit-slices an activation is fed in through the DACs: ceil(act_bits / dac_bits)."""
        return math.ceil(self.act_bits / self.dac_bits)

    @property
    def lossless_adc_bits(self) -> int:
        """Bits to represent one column's partial sum exactly: S rows of (2^b_c - 1) x (2^b_dac - 1)."""
        s = self.xbar_size * (2**self.cell_bits - 1) * (2**self.dac_bits - 1)
        return math.ceil(math.log2(s + 1))


def _c(value: float, source: str, unit: str):
    return field(default=value, metadata={"source": source, "unit": unit})


ISAAC = "ISAAC (Shafiee et al., ISCA 2016), 32 nm"
ISAAC_T = "ISAAC Table 6 (32 nm), per unit = IMA total / units per IMA"
HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"


@dataclass(frozen=True)
class PIMConstants:
    """The one constant table of the PIM model. Scaling rules (applied in `pim_cost`):
    ADC energy x adc_bit_factor^(b-8); DAC energy and area x (2^b - 1); crossbar read energy and
    area x (S/128)^2; ADC area x 2^(b-8); ADC conversion time x b/8 (SAR: one step per bit);
    digital add x b_a/8, multiply x (b_a/8)^2."""

    adc_pj_8bit: float = _c(1.67, ISAAC, "pJ per conversion")
    adc_bit_factor: float = _c(1.2, "our rule: 0.81 pJ at 4 bits, 2.40 pJ at 10 bits (a 0.8-2.4 pJ band for 4-10 bits)", "x per bit")
    dac_pj_1bit: float = _c(0.417, ISAAC, "pJ per conversion")
    xbar_read_mw: float = _c(0.3, ISAAC + " (128x128 array)", "mW")
    xbar_cycle_ns: float = _c(100.0, ISAAC + " (one read cycle)", "ns")
    shift_add_pj: float = _c(0.021, ISAAC, "pJ per op")
    buffer_pj_256b: float = _c(20.45, ISAAC + " (eDRAM buffer)", "pJ per 256-bit access")
    add_pj_8bit: float = _c(0.03, HOROWITZ, "pJ")
    mult_pj_8bit: float = _c(0.2, HOROWITZ, "pJ")
    dram_pj_bit: float = _c(30.0, "assumption: midpoint of 20-40 pJ/bit", "pJ per bit")
    adc_gsps_8bit: float = _c(1.28, "ISAAC Table 6 (8-bit ADC at 1.28 GS/s)", "GS/s")
    digital_lanes: int = _c(64, "assumption: 64-lane SIMD digital unit", "ops per cycle")
    digital_ghz: float = _c(1.0, "assumption", "GHz")
    dram_latency_ns: float = _c(50.0, "assumption: one DRAM row access", "ns")
    dram_bits_ns: float = _c(204.8, "assumption: one DDR4-3200 channel, 25.6 GB/s", "bits per ns")
    xbar_area_mm2: float = _c(0.0002 / 8, ISAAC_T + " (8 arrays 0.0002 mm2)", "mm2 per 128x128 array")
    adc_area_mm2: float = _c(0.0096 / 8, ISAAC_T + " (8 ADCs 0.0096 mm2)", "mm2 per 8-bit ADC")
    dac_area_mm2: float = _c(0.00017 / 1024, ISAAC_T + " (8x128 DACs 0.00017 mm2)", "mm2 per 1-bit DAC")
    shift_add_area_mm2: float = _c(0.00024 / 4, ISAAC_T + " (4 S+A 0.00024 mm2); one per ADC here", "mm2")

    def table(self) -> list[tuple[str, float, str, str]]:
        """(name, value, unit, source) rows, for docs and reports."""
        return [(f.name, getattr(self, f.name), f.metadata["unit"], f.metadata["source"]) for f in fields(self)]

    # -- scaled per-unit quantities ------------------------------------------------------
    def adc_pj(self, bits: int) -> float:
        """Energy of one `bits`-bit ADC conversion, pJ."""
        return self.adc_pj_8bit * self.adc_bit_factor ** (bits - 8)

    def dac_pj(self, bits: int) -> float:
        """Energy of one `bits`-bit DAC conversion, pJ."""
        return self.dac_pj_1bit * (2**bits - 1)

    def xbar_pj(self, size: int) -> float:
        """Energy of one read cycle of a `size` x `size` crossbar, pJ."""
        return self.xbar_read_mw * self.xbar_cycle_ns * (size / 128) ** 2  # mW x ns = pJ

    def adc_ns(self, bits: int) -> float:
        """Time of one `bits`-bit ADC conversion, ns."""
        return bits / 8 / self.adc_gsps_8bit

    def add_pj(self, bits: int) -> float:
        """Energy of one `bits`-bit digital addition, pJ."""
        return self.add_pj_8bit * bits / 8

    def mult_pj(self, bits: int) -> float:
        """Energy of one `bits`-bit digital multiplication, pJ."""
        return self.mult_pj_8bit * (bits / 8) ** 2


DEFAULT_CONSTANTS = PIMConstants()
COMPONENTS = ("adc", "dac", "crossbar", "shift_add", "buffer", "digital", "dram")


@dataclass(frozen=True)
class Mapping:
    """Crossbar tiling of one linear layer (the symbols of docs/hardware.md section 3, "Mapping")."""

    k: int  # cells per weight
    rows: int  # R: row tiles
    cols: int  # C: column tiles
    slices: int  # T: input bit-slices

    @property
    def crossbars(self) -> int:
        return self.rows * self.cols


def map_layer(n_in: int, n_out: int, cfg: PIMConfig) -> Mapping:
    """The crossbar tiling of an `n_in` x `n_out` weight matrix on `cfg`: row tiles of
    `xbar_size` inputs, column tiles of `xbar_size` cells (`cells_per_weight` per weight), and
    the input bit-slices."""
    k = cfg.cells_per_weight
    return Mapping(k, math.ceil(n_in / cfg.xbar_size), math.ceil(k * n_out / cfg.xbar_size), cfg.input_slices)


@dataclass
class LayerReport:
    """One linear layer's share of a `PIMReport`: crossbars, energy per component (pJ), latency (ns)."""

    name: str
    crossbars: int
    energy_pj: dict[str, float]
    latency_ns: float


@dataclass
class PIMReport:
    """`pim_cost`'s result: per-sample energy, latency and area of a model on one PIM design
    point, whether its crossbars fit the budget, the energy per component and per layer."""

    energy_pj: float  # per sample
    latency_ns: float  # per sample, critical path (the sequential sum with parallel=False)
    area_mm2: float  # crossbars + their ADCs, DACs, shift-adders (no buffers, DRAM, digital units)
    crossbars: int
    crossbar_budget: int
    fits: bool
    breakdown: dict[str, float]  # energy per component, pJ
    layers: list[LayerReport]
    config: PIMConfig

    def summary(self) -> dict:
        """The totals and the energy per component (`energy_<component>_pj`) as a plain dict."""
        return dict(energy_pj=self.energy_pj, latency_ns=self.latency_ns, area_mm2=self.area_mm2, crossbars=self.crossbars, fits=self.fits, **{f"energy_{k}_pj": v for k, v in self.breakdown.items()})


def _digital_ns(ops: float, c: PIMConstants) -> float:
    return math.ceil(ops / c.digital_lanes) / c.digital_ghz if ops > 0 else 0.0


def _layer_cost(layer: Layer, cfg: PIMConfig, c: PIMConstants) -> tuple[int, dict[str, float], float]:
    """(crossbars, energy per component in pJ, latency in ns) of one layer for one sample."""
    e = dict.fromkeys(COMPONENTS, 0.0)
    b_a = cfg.act_bits
    digital_macs = layer.macs if layer.kind == "digital" else 0  # a linear layer's MACs are in the crossbar
    e["digital"] = digital_macs * (c.mult_pj(b_a) + c.add_pj(b_a)) + layer.elementwise * c.add_pj(b_a)
    ns = _digital_ns(digital_macs + layer.elementwise, c)
    if layer.kind == "embedding":
        if layer.reads == 0:  # nothing looked up (a store without categorical fields): no DRAM access
            return 0, e, ns
        bits = layer.reads * cfg.weight_bits
        e["dram"] = bits * c.dram_pj_bit
        return 0, e, ns + c.dram_latency_ns + bits / c.dram_bits_ns
    if layer.kind != "linear":
        return 0, e, ns
    m = map_layer(layer.n_in, layer.n_out, cfg)
    if m.crossbars == 0 or layer.reps == 0:
        # a matrix without rows or columns (the raw tokens' projection on a store without
        # categorical fields) holds no crossbar and computes nothing; one applied 0 times per
        # sample holds its crossbars and spends nothing. Both used to cost a full pass of
        # bit-slices per application, and module_costs' 0 applications divided by zero
        return m.crossbars, e, ns
    conversions = m.slices * m.rows * m.k * layer.n_out * layer.reps
    e["adc"] = conversions * c.adc_pj(cfg.adc_bits)
    e["shift_add"] = conversions * c.shift_add_pj
    e["dac"] = m.slices * layer.n_in * m.cols * layer.reps * c.dac_pj(cfg.dac_bits)
    e["crossbar"] = m.slices * m.crossbars * layer.reps * c.xbar_pj(cfg.xbar_size)
    e["buffer"] = (layer.n_in + layer.n_out) * b_a / 256 * layer.reps * c.buffer_pj_256b
    cycle = max(c.xbar_cycle_ns, cfg.cols_per_adc * c.adc_ns(cfg.adc_bits))
    copies = min(cfg.replication, layer.reps)  # weight copies run repeated applications in parallel
    return m.crossbars * copies, e, ns + math.ceil(layer.reps / copies) * m.slices * cycle


def _area(crossbars: int, cfg: PIMConfig, c: PIMConstants) -> float:
    s = cfg.xbar_size
    per_xbar = (
        c.xbar_area_mm2 * (s / 128) ** 2
        + s / cfg.cols_per_adc * (c.adc_area_mm2 * 2.0 ** (cfg.adc_bits - 8) + c.shift_add_area_mm2)
        + s * c.dac_area_mm2 * (2**cfg.dac_bits - 1)
    )
    return crossbars * per_xbar


def critical_path(layers: list[Layer], latency: dict[str, float]) -> float:
    """Longest path through the `after` links: a layer starts once all its inputs are done.
    Layers must be listed in a topological order (as `CostGraph` builds them)."""
    finish: dict[str, float] = {}
    for layer in layers:
        missing = [a for a in layer.after if a not in finish]
        if missing:
            raise ValueError(f"layer {layer.name!r} depends on {missing}, which come later or do not exist")
        finish[layer.name] = max((finish[a] for a in layer.after), default=0.0) + latency[layer.name]
    return max(finish.values(), default=0.0)


def pim_cost(target, config: PIMConfig | None = None, space=None, meta=None, constants: PIMConstants = DEFAULT_CONSTANTS, parallel: bool | None = None) -> PIMReport:
    """Energy (pJ), latency (ns), area (mm2) per sample of an Architecture (with `space`, `meta`)
    or of precomputed `Costs` (e.g. `module_costs` of a baseline) on one PIM design point.

    `parallel=None` follows `costs.parallel`: the critical path through the layer graph, for
    analytic NASRec costs (a block's dense and sparse branches overlap) and generic modules
    (`module_costs` traces which layers each layer waits for) alike. `parallel=False` gives the
    sequential sum of every layer's latency, an upper bound (`latency_seq` in the search's rows).
    """
    cfg = config if config is not None else PIMConfig()
    require_type(cfg, PIMConfig, "pim_cost's config", "PIMConfig.from_dict(d) makes one from a dict")
    if isinstance(target, Costs):
        costs = target
    elif hasattr(target, "blocks") and hasattr(target, "canonical"):
        if space is None or meta is None:
            raise ConfigError("pim_cost of an architecture needs its search space and dataset meta")
        costs = count_costs(target, space, meta)
    else:
        raise ConfigError(f"pim_cost needs an Architecture or Costs, got {type(target).__name__}")
    breakdown = dict.fromkeys(COMPONENTS, 0.0)
    reports, latency = [], {}
    for layer in costs.layers:
        xbars, energy, ns = _layer_cost(layer, cfg, constants)
        for k, v in energy.items():
            breakdown[k] += v
        latency[layer.name] = ns
        reports.append(LayerReport(layer.name, xbars, energy, ns))
    crossbars = sum(r.crossbars for r in reports)
    use_graph = costs.parallel if parallel is None else parallel
    total_ns = critical_path(costs.layers, latency) if use_graph else sum(latency.values())
    return PIMReport(
        energy_pj=sum(breakdown.values()),
        latency_ns=total_ns,
        area_mm2=_area(crossbars, cfg, constants),
        crossbars=crossbars,
        crossbar_budget=cfg.crossbar_budget,
        fits=crossbars <= cfg.crossbar_budget,
        breakdown=breakdown,
        layers=reports,
        config=cfg,
    )


# -- the PIM configuration as part of a search genotype ---------------------------------
def pim_choices(restrict: dict | None = None) -> dict[str, tuple[int, ...]]:
    """The searchable values of every field: CHOICES, with some fields restricted by the user
    (e.g. `{"weight_bits": [8], "act_bits": [8]}`: co-design at the baseline's precision)."""
    out = dict(CHOICES)
    for name, values in (restrict or {}).items():
        if name not in CHOICES:
            raise ConfigError(f"pim_choices: unknown field {name!r}; searchable fields are {', '.join(CHOICES)}")
        values = tuple(sorted(set(int(v) for v in (values if isinstance(values, (list, tuple)) else [values]))))
        bad = [v for v in values if v not in CHOICES[name]]
        if not values or bad:
            raise ConfigError(f"pim_choices.{name}: values must be a non-empty subset of {list(CHOICES[name])}, got {list(values)}")
        out[name] = values
    if min(out["cols_per_adc"]) > max(out["xbar_size"]):
        raise ConfigError("pim_choices: every cols_per_adc exceeds every xbar_size, so no configuration is valid")
    return out


def random_pim(rng: np.random.Generator, crossbar_budget: int = DEFAULT_BUDGET, choices: dict | None = None) -> PIMConfig:
    """A uniformly random valid design point drawn with the numpy Generator `rng` (fields from
    `choices`, default CHOICES; the budget stays fixed)."""
    require_type(rng, np.random.Generator, "random_pim's rng", "np.random.default_rng(seed) makes one")
    choices = choices or CHOICES
    while True:
        values = {k: int(v[rng.integers(len(v))]) for k, v in choices.items()}
        if values["cols_per_adc"] <= values["xbar_size"]:
            return PIMConfig(**values, crossbar_budget=crossbar_budget)


def mutate_pim(config: PIMConfig, rng: np.random.Generator, choices: dict | None = None) -> PIMConfig | None:
    """`config` with exactly one searchable field changed to another valid value from `choices`
    (default CHOICES), drawn with the numpy Generator `rng`; None when no field can change
    (every field fixed to one value)."""
    require_type(rng, np.random.Generator, "mutate_pim's rng", "np.random.default_rng(seed) makes one")
    choices = choices or CHOICES
    names = list(choices)
    for i in rng.permutation(len(names)):
        name = names[i]
        options = []
        for v in choices[name]:
            if v == getattr(config, name):
                continue
            try:
                options.append(PIMConfig(**{**config.model_dump(), name: v}))
            except ValidationError:
                continue
        if options:
            return options[rng.integers(len(options))]
    return None


__all__ = [
    "CHOICES",
    "pim_choices",
    "DEFAULT_CONSTANTS",
    "Mapping",
    "PIMConfig",
    "PIMConstants",
    "PIMReport",
    "critical_path",
    "map_layer",
    "mutate_pim",
    "pim_cost",
    "random_pim",
]
