"""Hardware costs for model-hardware co-design (docs/hardware.md).

- `count_costs(arch, space, meta)`: exact parameters and matmul FLOPs of a NASRec subnet,
  plus the layer graph; `module_costs` / `profile_module` do the same for any model by running it.
- `measure_latency`: wall-clock inference latency on the current device.
- `pim_cost(arch_or_costs, PIMConfig)`: analytic ReRAM-crossbar energy, latency, area.
- `quantized(model, config)` / `fake_quant`: score a model at a PIM config's precision.
- `random_pim` / `mutate_pim`: the PIM configuration as part of a search genotype, over the
  values `pim_choices` allows (all of `CHOICES`, or a user-restricted subset).
"""

from recnas.hardware.costs import BlockCost, CostGraph, Costs, Layer, count_costs
from recnas.hardware.pim import CHOICES, DEFAULT_CONSTANTS, PIMConfig, PIMConstants, PIMReport, map_layer, mutate_pim, pim_choices, pim_cost, random_pim
from recnas.hardware.profile import example_inputs, is_crossbar, measure_latency, module_costs, profile_module
from recnas.hardware.quant import fake_quant, quantized

__all__ = [
    "BlockCost",
    "CHOICES",
    "CostGraph",
    "Costs",
    "DEFAULT_CONSTANTS",
    "Layer",
    "PIMConfig",
    "PIMConstants",
    "PIMReport",
    "count_costs",
    "example_inputs",
    "fake_quant",
    "is_crossbar",
    "map_layer",
    "measure_latency",
    "module_costs",
    "mutate_pim",
    "pim_choices",
    "pim_cost",
    "profile_module",
    "quantized",
    "random_pim",
]
