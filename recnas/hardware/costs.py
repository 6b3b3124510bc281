"""Analytic parameter and FLOP counts of a NASRec architecture, layer by layer.

Why analytic: the search scores thousands of candidates, including default-size ones whose
supernet would be slow to build, so costs come from the encoding alone. The same per-layer
list feeds the PIM model (`recnas.hardware.pim`), and its `after` links form the dataflow
graph used for the critical-path latency.

Conventions (per sample, i.e. batch size 1):
- `flops` = 2 x multiply-accumulates of every matrix product: weight x activation (linear
  layers) and activation x activation (dot-product Gram matrix, attention scores/values).
  This is the convention of `torch.utils.flop_counter.FlopCounterMode`.
- `elementwise_ops`: bias adds, input sums, activations, gating products, norms, softmax;
  approximate (one op per element, LayerNorm 5, softmax 3) and *not* part of `flops`.
- Parameters are exact and equal `sum(p.numel())` of `recnas.supernet.Subnet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recnas.baselines.interactions import cin_layers
from recnas.configs import require_type
from recnas.data.schema import DatasetMeta, check_meta
from recnas.space.arch import ARCH_HINT, SPACE_HINT, Architecture
from recnas.space.spaces import SearchSpace

LAYER_KINDS = ("linear", "digital", "embedding")
NORM_OPS = 5  # elementwise ops per element of a LayerNorm (mean, centre, variance, scale, shift)
SOFTMAX_OPS = 3  # per score: exp, sum, divide


@dataclass(frozen=True)
class Layer:
    """One node of the cost graph.

    linear: a weight matrix n_in -> n_out applied `reps` times per sample (crossbar-mapped).
    digital: activation x activation products (`macs`) and elementwise work on digital units.
    embedding: table lookups, `reads` values per sample (memory, not crossbars).
    """

    name: str
    block: int  # -1 embedding, 0..n-1 choice blocks, n head
    kind: str
    n_in: int = 0
    n_out: int = 0
    reps: int = 1
    bias: bool = False
    params: int = 0
    macs: int = 0  # multiply-accumulates per sample
    elementwise: int = 0
    reads: int = 0
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockCost:
    """Parameters and FLOPs (per sample) of one choice block."""

    block: int
    params: int
    flops: int


@dataclass
class Costs:
    """Per-sample costs of a model (`count_costs`, `module_costs`): parameters (dense and
    embedding), matmul FLOPs (2 x MACs), elementwise operations, per-block totals and the layer
    graph the PIM model maps (`recnas.hardware.pim_cost`)."""

    dense_params: int
    embedding_params: int
    flops: int
    elementwise_ops: int
    blocks: list[BlockCost] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    parallel: bool = True  # False: `after` links are only a recording order (generic modules)

    @property
    def params(self) -> int:
        """All parameters: dense plus embedding tables."""
        return self.dense_params + self.embedding_params

    def summary(self) -> dict:
        """The totals as a plain dict (params, dense_params, embedding_params, flops, elementwise_ops)."""
        return dict(params=self.params, dense_params=self.dense_params, embedding_params=self.embedding_params, flops=self.flops, elementwise_ops=self.elementwise_ops)


class CostGraph:
    """Collects layers; `linear` and `digital` return the node name so callers chain `after`."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []

    def add(self, layer: Layer) -> str:
        """Append `layer` (of a kind in LAYER_KINDS); returns its name, for later layers' `after`."""
        if layer.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
        self.layers.append(layer)
        return layer.name

    def linear(self, name: str, block: int, n_in: int, n_out: int, after=(), reps: int = 1, bias: bool = True, elementwise: int = 0) -> str:
        """Bias adds run on the digital units, so they count as elementwise work."""
        params = n_in * n_out + (n_out if bias else 0)
        ew = elementwise + (n_out * reps if bias else 0)
        return self.add(Layer(name, block, "linear", n_in, n_out, reps, bias, params, n_in * n_out * reps, ew, after=tuple(after)))

    def digital(self, name: str, block: int, after=(), macs: int = 0, elementwise: int = 0, params: int = 0) -> str:
        """Add work of the digital units (activation x activation `macs`, `elementwise` ops); returns its name."""
        return self.add(Layer(name, block, "digital", params=params, macs=macs, elementwise=elementwise, after=tuple(after)))

    def costs(self, n_blocks: int, parallel: bool = True) -> Costs:
        """The `Costs` of the layers added, with per-block totals for blocks 0..n_blocks-1;
        `parallel=False` says the `after` links are only a recording order."""
        emb = sum(l.params for l in self.layers if l.kind == "embedding")
        dense = sum(l.params for l in self.layers if l.kind != "embedding")
        blocks = [
            BlockCost(i, sum(l.params for l in self.layers if l.block == i), 2 * sum(l.macs for l in self.layers if l.block == i))
            for i in range(n_blocks)
        ]
        return Costs(
            dense_params=dense,
            embedding_params=emb,
            flops=2 * sum(l.macs for l in self.layers),
            elementwise_ops=sum(l.elementwise for l in self.layers),
            blocks=blocks,
            layers=list(self.layers),
            parallel=parallel,
        )


def _embedding(g: CostGraph, arch: Architecture, meta: DatasetMeta, emb_dim: int) -> str:
    """Full-width fused table, or (emb_dims set) compact per-field tables each followed by a
    learned w_f -> emb_dim projection (`MixedWidthEmbedding`), which is a weight matrix."""
    if arch.emb_dims is None:
        return g.add(Layer("embedding", -1, "embedding", params=sum(meta.vocab_sizes) * emb_dim, reads=meta.n_sparse * emb_dim))
    table = g.add(Layer("embedding", -1, "embedding", params=sum(v * w for v, w in zip(meta.vocab_sizes, arch.emb_dims)), reads=sum(arch.emb_dims)))
    projs = [g.linear(f"embedding.proj.{f}", -1, w, emb_dim, (table,), bias=False) for f, w in enumerate(arch.emb_dims)]
    return g.digital("embedding.out", -1, projs)


def _source(j: int, raw: tuple[str, ...]) -> tuple[str, ...]:
    """Dependency of input index j: the raw input's node(s) for 0, else block j-1's output."""
    return raw if j == 0 else (f"block{j - 1}.out",)


def _sparse_op(g: CostGraph, op: str, p: str, i: int, z: str, h: str, d: int, t: int, e: int) -> tuple[str, str | None]:
    """(token node, dense-contribution node or None) of one sparse operator (recnas/ops/sparse.py)."""
    if op == "efc":
        return g.linear(f"{p}.efc", i, t, t, (z,), reps=e), None
    if op == "dot":
        token = g.linear(f"{p}.dot.dense_token", i, d, e, (h,))
        gram = g.digital(f"{p}.dot.gram", i, (z, token), macs=(t + 1) ** 2 * e)
        return z, g.linear(f"{p}.dot.out", i, (t + 1) * t // 2, d, (gram,))
    if op == "attention":
        heads = 2 if e % 2 == 0 else 1
        qkv = g.linear(f"{p}.attn.qkv", i, e, 3 * e, (z,), reps=t)
        sdpa = g.digital(f"{p}.attn.sdpa", i, (qkv,), macs=2 * t * t * e, elementwise=(SOFTMAX_OPS + 1) * heads * t * t)
        proj = g.linear(f"{p}.attn.proj", i, e, e, (sdpa,), reps=t)
        n1 = g.digital(f"{p}.attn.norm1", i, (z, proj), elementwise=(1 + NORM_OPS) * t * e, params=2 * e)
        f1 = g.linear(f"{p}.attn.ffn1", i, e, 2 * e, (n1,), reps=t, elementwise=2 * e * t)
        f2 = g.linear(f"{p}.attn.ffn2", i, 2 * e, e, (f1,), reps=t)
        return g.digital(f"{p}.attn.norm2", i, (n1, f2), elementwise=(1 + NORM_OPS) * t * e, params=2 * e), None
    raise ValueError(f"unknown sparse op {op!r}")


def _dense_op(g: CostGraph, op: str, p: str, i: int, h: str, d: int) -> str:
    if op == "fc":
        return g.linear(f"{p}.fc", i, d, d, (h,), elementwise=d)  # + ReLU
    if op == "gating":
        gate = g.linear(f"{p}.gating", i, d, d, (h,), elementwise=d)  # + sigmoid
        return g.digital(f"{p}.gating.mul", i, (h, gate), elementwise=d)
    if op == "cross":
        lin = g.linear(f"{p}.cross", i, d, d, (h,))
        return g.digital(f"{p}.cross.mul", i, (h, lin), elementwise=2 * d)  # h * (W h + b) + h
    if op == "sum":
        return h
    raise ValueError(f"unknown dense op {op!r}")


def _cin_head(g: CostGraph, sizes: tuple[int, ...], split_half: bool, meta: DatasetMeta, e: int, emb: str, n: int) -> str:
    """The CIN head (`recnas.supernet.head.CINHead`): every numeric feature as a field (value x a
    learnt vector), then xDeepFM's CIN counted as the paper computes it: outer products of the
    H maps with the F fields, a 1x1 convolution (H*F -> O, applied per embedding column), sum
    pooling; a linear map of the pooled maps to the logit; and the first-order term (a 1-wide
    table of a weight per id, summed over the fields, and a linear map of the numeric features).
    `split_half` (the space's `cin_head_split`) lays the layers out as the head's `CIN` does."""
    fields, n_fields = (emb,), meta.n_sparse + meta.n_dense
    if meta.n_dense:
        fields = (emb, g.digital("cin_head.numeric", n, (), elementwise=meta.n_dense * e, params=meta.n_dense * e))
    node, pooled, out_dim = fields, [], 0
    for k, (n_in, size, half) in enumerate(cin_layers(n_fields, sizes, split_half)):
        outer = g.digital(f"cin_head.{k}.outer", n, (*node, *fields), elementwise=n_in * n_fields * e)
        conv = g.linear(f"cin_head.{k}.conv", n, n_in * n_fields, size, (outer,), reps=e)
        pooled.append(g.digital(f"cin_head.{k}.pool", n, (conv,), elementwise=(size - half) * e))
        node, out_dim = (conv,), out_dim + size - half
    out = g.linear("cin_head.out", n, out_dim, 1, pooled)
    ids = g.add(Layer("cin_head.linear.ids", n, "embedding", params=sum(meta.vocab_sizes), reads=meta.n_sparse))
    first = [g.linear("cin_head.linear.dense", n, meta.n_dense, 1, bias=False)] if meta.n_dense else []
    return g.digital("cin_head.sum", n, (out, ids, *first), elementwise=meta.n_sparse + len(first) + 1, params=1)  # id weights, + bias


def count_costs(arch: Architecture, space: SearchSpace, meta: DatasetMeta) -> Costs:
    """Parameters, FLOPs and the layer graph of `Subnet(arch, space, meta)`, without building it."""
    require_type(arch, Architecture, "count_costs's arch", ARCH_HINT)
    require_type(space, SearchSpace, "count_costs's space", SPACE_HINT)
    check_meta(meta, "count_costs's meta")
    arch = arch.canonical().validate_for(space, meta.n_sparse)
    e = space.emb_dim
    g = CostGraph()
    emb = _embedding(g, arch, meta, e)
    dims = [(meta.n_dense, meta.n_sparse)] + [(b.dense_dim, b.sparse_dim) for b in arch.blocks]
    for i, b in enumerate(arch.blocks):
        d, t, p = b.dense_dim, b.sparse_dim, f"block{i}"
        dproj = [g.linear(f"{p}.dense_proj.{j}", i, dims[j][0], d, _source(j, ()), bias=False) for j in b.dense_inputs if dims[j][0] > 0]
        h = g.digital(f"{p}.dense_in", i, dproj, elementwise=d * len(dproj), params=d)  # block bias + sum
        tproj = [g.linear(f"{p}.sparse_proj.{j}", i, dims[j][1], t, _source(j, (emb,)), reps=e, bias=False) for j in b.sparse_inputs]
        z = g.digital(f"{p}.sparse_in", i, tproj, elementwise=(len(tproj) - 1) * t * e)
        dense_nodes = [_dense_op(g, op, p, i, h, d) for op in b.dense_ops]
        dense = g.digital(f"{p}.dense_ops", i, dense_nodes, elementwise=(len(dense_nodes) - 1) * d)
        pairs = [_sparse_op(g, op, p, i, z, h, d, t, e) for op in b.sparse_ops]
        tokens = g.digital(f"{p}.sparse_ops", i, [s for s, _ in pairs], elementwise=(len(pairs) - 1) * t * e)
        extra = [c for _, c in pairs if c is not None]
        s2d = g.linear(f"{p}.sparse_to_dense", i, t * e, d, (tokens,))
        d2s = g.linear(f"{p}.dense_to_sparse", i, d, e, (dense,))
        g.digital(f"{p}.out", i, (dense, tokens, s2d, d2s, *extra), elementwise=d * (1 + len(extra)) + t * e)
    n = len(arch.blocks)
    heads = [g.linear(f"head{i}", n, arch.blocks[i].dense_dim, 1, (f"block{i}.out",)) for i in arch.dense_leaves()]
    if space.cin_head:
        heads.append(_cin_head(g, space.cin_head, space.cin_head_split, meta, e, emb, n))
    g.digital("logit", n, heads, elementwise=len(heads) - 1)
    return g.costs(n)
