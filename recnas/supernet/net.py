"""The NASRec network: embeddings -> stacked choice blocks (dense connectivity) -> logit.

`Supernet` holds every block at full capacity and runs any architecture of its space;
`Subnet` is the compact standalone model of one architecture (no supernet overhead).
The logit is the sum of a linear head over every block whose dense output no later block
reads (`Architecture.dense_leaves`), so every block of a subnet contributes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recnas.configs import require_type
from recnas.data.schema import DatasetMeta, check_meta
from recnas.errors import ConfigError
from recnas.ops.elastic import ElasticLinear
from recnas.ops.embedding import FieldEmbedding, MixedWidthEmbedding
from recnas.space.arch import ARCH_HINT, SPACE_HINT, Architecture
from recnas.space.spaces import SearchSpace
from recnas.supernet.block import BlockCapacity, ChoiceBlock
from recnas.supernet.head import CINHead
from recnas.supernet.masks import PathMasks, path_masks


class NASRecNet(nn.Module):
    """`emb_dims` (a subnet's per-field widths) selects compact tables (sum vocab_i * w_i
    parameters) with an identity-initialised projection to `emb_dim`, which reproduces the
    supernet's width masks exactly after inheritance; without it, one emb_dim-wide table."""

    def __init__(self, capacities: list[BlockCapacity], meta: DatasetMeta, emb_dim: int, head_blocks: tuple[int, ...], emb_dims: tuple[int, ...] | None = None, cin_head: tuple[int, ...] = (), cin_head_split: bool = True):
        super().__init__()
        self.n_dense, self.n_fields = meta.n_dense, meta.n_sparse
        if not emb_dims:  # None, or () for a store without categorical fields: no table to narrow
            self.embedding = FieldEmbedding(meta.vocab_sizes, emb_dim).fan_uniform_()
        else:
            self.embedding = MixedWidthEmbedding(meta.vocab_sizes, list(emb_dims), emb_dim, identity=True)
            for table in self.embedding.tables:
                table.fan_uniform_()
        self.blocks = nn.ModuleList(ChoiceBlock(c) for c in capacities)
        self.heads = nn.ModuleDict({str(i): ElasticLinear(capacities[i].dense_dim, 1) for i in head_blocks})
        self.cin_head = CINHead(meta.vocab_sizes, self.n_dense, emb_dim, cin_head, cin_head_split) if cin_head else None

    def run(self, dense: torch.Tensor, sparse: torch.Tensor, path: Architecture | PathMasks) -> torch.Tensor:
        """Logits of one path: an `Architecture` runs sliced, its `PathMasks` run masked at full
        width (same function; recnas.supernet.masks says when each is faster)."""
        masked = isinstance(path, PathMasks)
        if isinstance(self.embedding, MixedWidthEmbedding):
            emb = self.embedding(sparse)  # widths are built into the compact tables
        elif masked:
            emb = self.embedding(sparse) * path.emb
        else:
            widths = None if path.emb_dims is None else torch.as_tensor(path.emb_dims, device=sparse.device)
            emb = self.embedding(sparse, widths)
        dense_outs, sparse_outs = [dense], [emb]
        for i, block in enumerate(self.blocks):
            d, s = block(dense_outs, sparse_outs, masks=path.block(i)) if masked else block(dense_outs, sparse_outs, path.blocks[i])
            dense_outs.append(d)
            sparse_outs.append(s)
        if masked:
            logit = sum(self.heads[str(i)](dense_outs[i + 1], 1) * path.heads[i] for i in range(len(self.blocks)))
        else:
            logit = sum(self.heads[str(i)](dense_outs[i + 1], 1) for i in path.dense_leaves())
        if self.cin_head is not None:
            logit = logit + self.cin_head(dense, sparse, emb)
        return logit.squeeze(-1)


def _full_capacities(space: SearchSpace, meta: DatasetMeta) -> list[BlockCapacity]:
    caps = []
    for i in range(space.n_blocks):
        dense_in = {0: meta.n_dense, **{j: space.max_dense for j in range(1, i + 1)}}
        sparse_in = {0: meta.n_sparse, **{j: space.max_sparse for j in range(1, i + 1)}}
        caps.append(BlockCapacity(dense_in, sparse_in, space.dense_ops, space.sparse_ops, space.max_dense, space.max_sparse, space.emb_dim))
    return caps


def _arch_capacities(arch: Architecture, space: SearchSpace, meta: DatasetMeta) -> list[BlockCapacity]:
    dims = [(meta.n_dense, meta.n_sparse)] + [(b.dense_dim, b.sparse_dim) for b in arch.blocks]
    return [
        BlockCapacity(
            {j: dims[j][0] for j in b.dense_inputs},
            {j: dims[j][1] for j in b.sparse_inputs},
            tuple(b.dense_ops),
            tuple(b.sparse_ops),
            b.dense_dim,
            b.sparse_dim,
            space.emb_dim,
        )
        for b in arch.blocks
    ]


class Supernet(NASRecNet):
    """All architectures of `space` in one set of weights; `forward` takes the architecture."""

    def __init__(self, space: SearchSpace, meta: DatasetMeta):
        require_type(space, SearchSpace, "Supernet's space", SPACE_HINT)
        check_meta(meta, "Supernet's meta")
        space = space.blocks_only()  # never the CIN head (recnas/supernet/head.py)
        super().__init__(_full_capacities(space, meta), meta, space.emb_dim, tuple(range(space.n_blocks)))
        self.space, self.meta = space, meta

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, path: Architecture | PathMasks) -> torch.Tensor:
        """Logits [B] of the path `path` (an architecture of this supernet's space, run sliced,
        or its `path_masks`, run masked) for dense [B, n_dense] and sparse [B, n_fields]."""
        if isinstance(path, Architecture):  # masks were checked when `path_masks` built them
            self.check_fits(path)
        return self.run(dense, sparse, path)

    def check_fits(self, arch: Architecture) -> Architecture:
        """`arch` if it is an architecture of this supernet's space; a ConfigError naming the misfit
        otherwise. Without it a foreign architecture failed deep inside the forward (KeyError
        'gating', a tensor-size RuntimeError), or ran without error on weights no path of the
        space uses: a width the space does not list but below its maximum, or a negative input
        index, which the dense side skipped (~8 us per call on the CPU)."""
        try:
            return arch.validate_for(self.space, self.n_fields)
        except ConfigError as exc:
            raise ConfigError(f"the architecture does not fit the supernet's space {self.space.name!r}: {exc}") from None

    def largest_architecture(self) -> Architecture:
        """The path holding every weight of the supernet: every operator and input of every
        block at the space's widest dims (the in-place distillation teacher)."""
        from recnas.space.samplers import largest_architecture

        return largest_architecture(self.space)

    def path_masks(self, arch: Architecture, device: torch.device | str = "cpu") -> PathMasks:
        """The 0/1 masks on `device` that run `arch` at full width (`forward` with them computes
        what `forward(..., arch)` does; ConfigError when `arch` does not fit the space)."""
        return path_masks(self.check_fits(arch), self.space, self.n_fields, device)

    def off_path_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        """Parameters the sliced forward of `arch` never touches. After a masked step their
        gradients are exact zeros; dropping them (grad = None) makes the optimizer skip them
        as it does after a sliced step, so both modes train identically."""
        off: list[nn.Parameter] = []
        tokens_read = {j - 1 for b in arch.blocks for j in b.sparse_inputs if j > 0}
        for i, (block, spec) in enumerate(zip(self.blocks, arch.blocks)):
            if i not in tokens_read:  # nothing reads this block's tokens
                off += list(block.dense_to_sparse.parameters())
            for group, chosen in ((block.dense_proj, spec.dense_inputs), (block.sparse_proj, spec.sparse_inputs), (block.dense_ops, spec.dense_ops), (block.sparse_ops, spec.sparse_ops)):
                keep = {str(c) for c in chosen}
                off += [p for name, m in group.items() if name not in keep for p in m.parameters()]
        leaves = {str(i) for i in arch.dense_leaves()}
        off += [p for name, m in self.heads.items() if name not in leaves for p in m.parameters()]
        return off


class Subnet(NASRecNet):
    """One architecture as a compact model: only the chosen inputs, operators and widths."""

    def __init__(self, arch: Architecture, space: SearchSpace, meta: DatasetMeta):
        require_type(arch, Architecture, "Subnet's arch", ARCH_HINT)
        require_type(space, SearchSpace, "Subnet's space", SPACE_HINT)
        check_meta(meta, "Subnet's meta")
        arch = arch.canonical().validate_for(space, meta.n_sparse)
        super().__init__(_arch_capacities(arch, space, meta), meta, space.emb_dim, arch.dense_leaves(), arch.emb_dims, space.cin_head, space.cin_head_split)
        self.arch, self.space, self.meta = arch, space, meta

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Logits [B] for dense [B, n_dense] and sparse [B, n_fields] (pre-sigmoid)."""
        return self.run(dense, sparse, self.arch)

    @classmethod
    def from_architecture(cls, arch: Architecture, space: SearchSpace, meta: DatasetMeta, supernet: Supernet | None = None) -> "Subnet":
        """`Subnet(arch, space, meta)`, with `supernet`'s weights when one is given
        (`inherit_weights`: the subnet then computes exactly what the supernet does on `arch`;
        a supernet of other data, or of a space `arch` does not fit, is a ConfigError)."""
        net = cls(arch, space, meta)
        if supernet is not None:
            inherit_weights(net, supernet)
        return net


def inherit_weights(subnet: nn.Module, supernet: nn.Module) -> None:
    """Copy the leading slice of every supernet tensor into the same-named subnet tensor;
    modules with their own rule (`inherit_from`: compact mixed-width embeddings, the raw fields'
    folding projection) copy what it says. Modules that the supernet does not hold (the CIN
    head, recnas/supernet/head.py) say `keeps_own_init = True` and keep their initial weights.

    A `Subnet` inherits only from a `Supernet` of the same data (dense width and vocabulary
    sizes), of whose space its architecture is one path, at the same `emb_dim`: otherwise the
    leading slices are other weights (another field's embedding rows, a narrower token), copied
    without a word, and the subnet is not the supernet's path. Those are ConfigErrors."""
    if isinstance(subnet, Subnet) and isinstance(supernet, Supernet):
        _check_inheritable(subnet, supernet)
    source = supernet.state_dict()
    handled: list[str] = []  # modules whose whole state is settled by their own rule
    with torch.no_grad():
        for prefix, module in subnet.named_modules():
            if any(prefix.startswith(f"{h}.") for h in handled):
                continue
            if getattr(module, "keeps_own_init", False):
                handled.append(prefix)
            elif hasattr(module, "inherit_from"):
                try:
                    module.inherit_from(supernet.get_submodule(prefix))
                except (AttributeError, ValueError) as exc:
                    raise ConfigError(f"cannot inherit {prefix!r} from the supernet: {exc}") from None
                handled.append(prefix)
        done = {f"{h}.{n}" for h in handled for n in subnet.get_submodule(h).state_dict()}
        for name, target in subnet.state_dict().items():
            if name in done:
                continue
            if name not in source:
                raise ConfigError(f"supernet has no weight {name!r}: architecture does not belong to its space")
            src = source[name]
            if src.dim() != target.dim() or any(s < t for s, t in zip(src.shape, target.shape)):
                raise ConfigError(f"supernet weight {name!r} {tuple(src.shape)} cannot hold {tuple(target.shape)}")
            target.copy_(src[tuple(slice(0, n) for n in target.shape)])


def _check_inheritable(subnet: Subnet, supernet: Supernet) -> None:
    """Refuse to inherit across data, across spaces the subnet's architecture does not fit,
    or across embedding widths (`inherit_weights`)."""
    mine, theirs = subnet.meta, supernet.meta
    if mine.n_dense != theirs.n_dense or list(mine.vocab_sizes) != list(theirs.vocab_sizes):
        if mine.n_dense != theirs.n_dense or mine.n_sparse != theirs.n_sparse:
            how = f"{theirs.n_dense} dense and {theirs.n_sparse} categorical features, the subnet's {mine.n_dense} and {mine.n_sparse}"
        else:
            f = next(i for i, (a, b) in enumerate(zip(mine.vocab_sizes, theirs.vocab_sizes)) if a != b)
            how = f"field {f} ({mine.cat_names[f]}) with {theirs.vocab_sizes[f]:,} ids, the subnet's with {mine.vocab_sizes[f]:,}"
        raise ConfigError(f"cannot inherit from a supernet of other data: its data has {how}; build the subnet for the supernet's data (its .meta)")
    supernet.check_fits(subnet.arch)
    if subnet.space.emb_dim != supernet.space.emb_dim:
        raise ConfigError(f"cannot inherit from a supernet of emb_dim {supernet.space.emb_dim}: the subnet's space has emb_dim {subnet.space.emb_dim}")


def check_path_use(model: nn.Module, path_given: bool, where: str, arg: str, hint: str = "") -> None:
    """A `Supernet` runs one path per call and a `Subnet` or baseline is one fixed model: a
    ConfigError when `where` (e.g. "evaluate") is given no path (its argument `arg`, e.g. "arch")
    for a supernet, or one for a fixed model. Both used to fail inside torch's module call
    ("forward() missing 1 required positional argument: 'path'", "takes 3 positional arguments
    but 4 were given")."""
    from recnas.baselines.base import Baseline

    if isinstance(model, Supernet) and not path_given:
        raise ConfigError(f"{where}: a Supernet runs one of its architectures at a time: pass {arg}" + (f" ({hint})" if hint else ""))
    if isinstance(model, (Subnet, Baseline)) and path_given:
        raise ConfigError(f"{where}: a {type(model).__name__} is one fixed model and takes no {arg} (it chooses the path of a Supernet)")
