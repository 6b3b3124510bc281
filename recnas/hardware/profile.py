"""Costs of *any* model by running it: parameters, profiler FLOPs, crossbar layers, latency.

The analytic counter (`recnas.hardware.costs`) only knows NASRec subnets; the hand-designed
baselines are costed here by one forward pass:
- forward hooks on every crossbar-mappable module (nn.Linear, ElasticLinear/TokenLinear,
  1x1 Conv1d) record its input/output widths and how often it is applied per sample;
- hooks on embedding modules record the values read per sample;
- `FlopCounterMode` gives all matrix-product FLOPs; what the hooked layers do not explain is
  activation x activation work (bmm/einsum interactions), costed on digital units;
- a dispatch mode counts elementwise work: output elements of pointwise ATen ops, input
  elements of reductions, norms and softmax (weighted like the analytic counter).
- a torch-function mode tracks which recorded layers every tensor was computed from, so
  each layer's `after` list names the layers it really waits for: the PIM latency of a
  generic module is then its critical path, as for analytic NASRec costs (parallel
  branches, e.g. DCNv2's cross and deep networks or DLRM's bottom MLP and embeddings, overlap).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from recnas.errors import ConfigError
from recnas.hardware.costs import NORM_OPS, SOFTMAX_OPS, CostGraph, Costs, Layer
from recnas.ops.elastic import ElasticLinear, TokenLinear
from recnas.ops.embedding import FieldEmbedding

# ops per input element of non-pointwise elementwise work (same weights as the analytic counter)
_REDUCTIONS = {
    "sum": 1, "mean": 1, "amax": 1, "_softmax": SOFTMAX_OPS, "_log_softmax": SOFTMAX_OPS,
    "native_layer_norm": NORM_OPS, "native_batch_norm": NORM_OPS,
    "_native_batch_norm_legit": NORM_OPS, "_native_batch_norm_legit_no_training": NORM_OPS,
}


def is_crossbar(module: nn.Module) -> bool:
    """Layers whose weights can sit in a crossbar: one matrix applied to activations."""
    if isinstance(module, (nn.Linear, ElasticLinear)):
        return True
    return isinstance(module, nn.Conv1d) and module.kernel_size == (1,) and module.groups == 1


def is_embedding(module: nn.Module) -> bool:
    return isinstance(module, (FieldEmbedding, nn.Embedding, nn.EmbeddingBag))


def _shape(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[int, int, int]:
    """(n_in, n_out, applications per sample) of one call of a crossbar layer."""
    if isinstance(module, TokenLinear):  # [B, T, E]: the matrix acts on the token axis, once per column
        n_in, n_out = x.shape[1], y.shape[1]
    elif isinstance(module, nn.Conv1d):  # [B, C, L]: once per output position (stride, padding)
        return int(x.shape[-2]), int(y.shape[-2]), int(y.numel() // (batch * max(int(y.shape[-2]), 1)))
    else:
        n_in, n_out = x.shape[-1], y.shape[-1]
    return int(n_in), int(n_out), int(x.numel() // (batch * max(int(n_in), 1)))


def param_split(model: nn.Module) -> tuple[int, int]:
    """(dense, embedding) parameter counts; shared tensors are counted once."""
    emb_ids = {id(p) for m in model.modules() if is_embedding(m) for p in m.parameters(recurse=False)}
    seen, dense, emb = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in emb_ids:
            emb += p.numel()
        else:
            dense += p.numel()
    return dense, emb


_MOVES = {"clone", "copy_", "_to_copy", "fill_", "zero_", "zeros_like", "ones_like"}  # data movement, not arithmetic


def _is_identity(name: str, args) -> bool:
    """x + 0 and x * 1 (e.g. Python's `sum(tensors)` starting from 0) do no work."""
    if len(args) < 2 or isinstance(args[1], torch.Tensor):
        return False
    return (name in ("add", "sub") and args[1] == 0) or (name in ("mul", "div") and args[1] == 1)


class _ElementwiseCounter(TorchDispatchMode):
    """Elementwise ops per forward: output elements of pointwise ATen ops, weighted input
    elements of reductions and norms; copies and identities are free."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in _MOVES or _is_identity(name, args):
            pass
        elif torch.Tag.pointwise in func.tags:
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.ops += first.numel() if isinstance(first, torch.Tensor) else 0
        elif name in _REDUCTIONS and args and isinstance(args[0], torch.Tensor):
            self.ops += _REDUCTIONS[name] * args[0].numel()
        return out


class _Provenance(TorchFunctionMode):
    """For every tensor, the recorded layers it was most recently computed from: an op's
    outputs inherit the union of its tensor inputs' sources, a recorded layer's output is
    `mark`ed as coming from that layer alone. Tensors are kept alive so their ids stay unique."""

    def __init__(self):
        super().__init__()
        self.sources: dict[int, frozenset[str]] = {}
        self._alive: list[torch.Tensor] = []

    def of(self, obj) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for leaf in tree_leaves(obj):
            if isinstance(leaf, torch.Tensor):
                out |= self.sources.get(id(leaf), frozenset())
        return out

    def mark(self, obj, sources: frozenset[str]) -> None:
        for leaf in tree_leaves(obj):
            if isinstance(leaf, torch.Tensor):
                self.sources[id(leaf)] = sources
                self._alive.append(leaf)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sources = self.of((args, kwargs))
        if sources:
            self.mark(out, sources)
        return out


def _forward(model: nn.Module, dense: torch.Tensor, sparse: torch.Tensor, arch=None):
    return model(dense, sparse) if arch is None else model(dense, sparse, arch)


def _check_arch(model: nn.Module, arch, where: str) -> None:
    """A supernet is profiled on one of its paths (`arch`), any other recnas model without one."""
    from recnas.supernet.net import check_path_use

    check_path_use(model, arch is not None, where, "arch", "an Architecture of its space")


def _counted_forward(model, dense, sparse, arch, *modes):
    """Forward pass under `modes` with the math SDPA kernel, whose matmuls the profiler sees.
    Gradients stay enabled: FlopCounterMode's module tracker (torch 2.13) fails under no_grad
    when a parameter slice is the only input of a block (datasets without dense features).

    It runs in eval mode (every module's mode restored afterwards): inference costs, without
    dropout's work, and without side effects. In training mode the random profiling batch
    updated BatchNorm's running statistics, so a trained baseline costed before its test pass
    (the search's results table) was reported with statistics that were not its own."""
    _check_arch(model, arch, "profiling")
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH), contextlib.ExitStack() as stack:
            for mode in modes:
                stack.enter_context(mode)
            return _forward(model, dense, sparse, arch)
    finally:
        for m, training in was_training.items():
            m.training = training


def profile_module(model: nn.Module, dense: torch.Tensor, sparse: torch.Tensor, arch=None) -> tuple[int, float]:
    """(parameters, FLOPs per sample) of any (dense, sparse) -> logits model via FlopCounterMode.

    Counts matrix products only (mm/addmm/bmm/convolution); attention runs with the math SDPA
    kernel because the profiler has no formula for the fused CPU kernel. Elementwise work
    (bias adds in fused addmm aside) is not included.
    """
    batch = _batch(dense, sparse)
    counter = FlopCounterMode(display=False)
    _counted_forward(model, dense, sparse, arch, counter)
    dense_p, emb_p = param_split(model)
    return dense_p + emb_p, counter.get_total_flops() / batch


def _batch(dense: torch.Tensor, sparse: torch.Tensor) -> int:
    b = sparse.shape[0] if sparse.dim() else 0
    if b <= 0 or dense.shape[0] != b:
        raise ConfigError(f"profiling needs a non-empty batch with equal sizes, got dense {list(dense.shape)} and sparse {list(sparse.shape)}")
    return b


def module_costs(model: nn.Module, dense: torch.Tensor, sparse: torch.Tensor, arch=None) -> Costs:
    """`Costs` of any model from one forward pass (see the module docstring for what is measured);
    each layer's `after` names the recorded layers its inputs were computed from."""
    batch = _batch(dense, sparse)
    g = CostGraph()
    names = {m: n for n, m in model.named_modules()}
    provenance = _Provenance()
    waits: dict[nn.Module, list[frozenset[str]]] = {}

    def pre_hook(module, inputs):
        waits.setdefault(module, []).append(provenance.of(inputs))

    def hook(module, inputs, output):
        x = inputs[0]
        name = names.get(module) or type(module).__name__
        name = f"{name}#{sum(l.name.startswith(name + '#') for l in g.layers)}"  # a module may run twice
        after = tuple(sorted(waits[module].pop()))
        if is_embedding(module):
            # a bag pools its rows: every id of it is read, not just the pooled vector
            values = x.numel() * module.embedding_dim if isinstance(module, nn.EmbeddingBag) else output.numel()
            g.add(Layer(name, -1, "embedding", reads=int(values // batch), after=after))
        else:
            n_in, n_out, reps = _shape(module, x, output, batch)
            bias = getattr(module, "bias", None) is not None
            g.linear(name, 0, n_in, n_out, after, reps=reps, bias=bias)
        provenance.mark(output, frozenset([name]))

    tracked = [m for m in model.modules() if is_crossbar(m) or is_embedding(m)]
    handles = [m.register_forward_pre_hook(pre_hook) for m in tracked] + [m.register_forward_hook(hook) for m in tracked]
    counter = _ElementwiseCounter()
    try:
        flops = FlopCounterMode(display=False)
        logits = _counted_forward(model, dense, sparse, arch, flops, counter, provenance)
    finally:
        for h in handles:
            h.remove()
    linear_macs = sum(l.macs for l in g.layers)
    total_macs = flops.get_total_flops() // (2 * batch)
    # activation x activation work is not attributed to a place in the graph: it runs last
    last = provenance.of(logits) or frozenset(l.name for l in g.layers[-1:])
    g.digital("digital", 0, tuple(sorted(last)), macs=max(0, total_macs - linear_macs), elementwise=counter.ops // batch)
    costs = g.costs(0, parallel=True)
    costs.dense_params, costs.embedding_params = param_split(model)
    return costs


def example_inputs(model: nn.Module, batch_size: int, device="cpu", meta=None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (dense, sparse) inputs for a model that exposes `meta` (NASRec nets) or
    `n_dense` and `vocab_sizes` (baselines), or for an explicit `meta`."""
    meta = meta if meta is not None else getattr(model, "meta", None)
    if meta is not None:
        n_dense, vocab = meta.n_dense, list(meta.vocab_sizes)
    elif hasattr(model, "vocab_sizes") and hasattr(model, "n_dense"):
        n_dense, vocab = model.n_dense, list(model.vocab_sizes)
    else:
        raise ConfigError(f"{type(model).__name__}: pass `meta` so random inputs can be made (model has no meta / vocab_sizes)")
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, v, (batch_size,), generator=g) for v in vocab], 1) if vocab else torch.zeros(batch_size, 0, dtype=torch.long)
    return torch.randn(batch_size, n_dense, generator=g).to(device), sparse.to(device)


def measure_latency(model: nn.Module, batch_size: int = 256, device="cpu", warmup: int = 5, repeats: int = 20, arch=None, meta=None) -> dict[str, float | int | str]:
    """Wall-clock inference latency of one batch on `device` (mean, median, 90th percentile, ms).

    Runs in eval mode without gradients; on CUDA every repeat ends with a synchronize so the
    timer sees the finished kernels. The model is moved to `device`.
    """
    if repeats <= 0 or warmup < 0:
        raise ConfigError(f"need repeats > 0 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    _check_arch(model, arch, "measure_latency")
    model = model.to(device)
    was_training = model.training
    model.eval()
    dense, sparse = example_inputs(model, batch_size, device, meta)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    try:
        with torch.no_grad():
            for k in range(warmup + repeats):
                start = time.perf_counter()
                _forward(model, dense, sparse, arch)
                sync()
                if k >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return dict(mean_ms=statistics.fmean(times), p50_ms=statistics.median(times), p90_ms=p90, batch_size=batch_size, device=str(device))
