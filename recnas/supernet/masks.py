"""A sampled path as 0/1 mask tensors of fixed shape (the supernet's *masked* execution).

The sliced forward (`Supernet.forward(dense, sparse, arch)`) runs only the chosen inputs,
operators and leading weight slices, so every step has different shapes and a different
sequence of kernels: cheap in arithmetic, but on a GPU it is bound by per-kernel launch and
dispatch cost, and it cannot be compiled or captured as a CUDA graph. The masked forward runs
every block at full width with every input and operator, and multiplies by these masks
instead: the shapes never change, so one compiled, graph-captured step serves every path.
Because unchosen inputs, operators, widths and tokens are multiplied by exact zeros, its
outputs and gradients equal the sliced forward's (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from recnas.space.arch import Architecture
from recnas.space.spaces import SearchSpace


class BlockMasks(NamedTuple):
    """One block's rows of `PathMasks`."""

    dense_ops: torch.Tensor
    sparse_ops: torch.Tensor
    dense_inputs: torch.Tensor
    sparse_inputs: torch.Tensor
    width: torch.Tensor
    tokens: torch.Tensor


class PathMasks(NamedTuple):
    dense_ops: torch.Tensor  # [blocks, n dense ops]   1 = operator chosen
    sparse_ops: torch.Tensor  # [blocks, n sparse ops]
    dense_inputs: torch.Tensor  # [blocks, blocks + 1]  1 = block reads that source's dense output
    sparse_inputs: torch.Tensor  # [blocks, blocks + 1]
    width: torch.Tensor  # [blocks, max dense dim]  1 for the block's first dense_dim units
    tokens: torch.Tensor  # [blocks, max sparse dim] 1 for the block's first sparse_dim tokens
    heads: torch.Tensor  # [blocks]                 1 = the block's dense output feeds the logit
    emb: torch.Tensor  # [fields, emb_dim]         1 for each field's first emb_dims[f] columns

    def block(self, i: int) -> BlockMasks:
        return BlockMasks(self.dense_ops[i], self.sparse_ops[i], self.dense_inputs[i], self.sparse_inputs[i], self.width[i], self.tokens[i])


def path_masks(arch: Architecture, space: SearchSpace, n_fields: int, device: torch.device | str = "cpu") -> PathMasks:
    """The masks of `arch`; built on the host in one pinned buffer and copied without blocking."""
    n = space.n_blocks
    shapes = [(n, len(space.dense_ops)), (n, len(space.sparse_ops)), (n, n + 1), (n, n + 1), (n, space.max_dense), (n, space.max_sparse), (n,), (n_fields, space.emb_dim)]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = np.zeros(sum(sizes), np.float32)
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    views = [p.reshape(s) for p, s in zip(parts, shapes)]
    dense_ops, sparse_ops, dense_in, sparse_in, width, tokens, heads, emb = views
    for i, b in enumerate(arch.blocks):
        dense_ops[i, [space.dense_ops.index(o) for o in b.dense_ops]] = 1
        sparse_ops[i, [space.sparse_ops.index(o) for o in b.sparse_ops]] = 1
        dense_in[i, list(b.dense_inputs)] = 1
        sparse_in[i, list(b.sparse_inputs)] = 1
        width[i, : b.dense_dim] = 1
        tokens[i, : b.sparse_dim] = 1
    heads[list(arch.dense_leaves())] = 1
    widths = arch.emb_dims if arch.emb_dims is not None else (space.emb_dim,) * n_fields
    emb[:] = np.arange(space.emb_dim)[None, :] < np.asarray(widths)[:, None]
    host = torch.from_numpy(flat)
    device = torch.device(device)
    if device.type == "cuda":
        host = host.pin_memory()  # a fresh pinned buffer per call: safe to copy asynchronously
    buf = host.to(device, non_blocking=True)
    return PathMasks(*(t.view(s) for t, s in zip(torch.split(buf, sizes), shapes)))
