"""The sparse operators' implementation choices (padded Gram matrix, gather backward, fused
attention) compute the same function as their plain definitions."""

import pytest
import torch

from recnas.ops import token_attention
from recnas.ops.sparse import Attention, DotProduct

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [2, 5, 8, 9, 17])
@pytest.mark.parametrize("pad", [1, 8])
def test_pairs_equal_plain_inner_products_in_values_and_gradients(device, n, pad):
    op = DotProduct(max_tokens=16, max_dense=8, emb_dim=4).double().to(device)
    x = torch.randn(3, n, 4, dtype=torch.float64, device=device, requires_grad=True)
    rows, cols = torch.tril_indices(n, n, offset=-1)
    want = (x[:, rows] * x[:, cols]).sum(-1)  # [B, pairs], row-major lower triangle
    got = op.pairs(x, pad)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    (gx,) = torch.autograd.grad(got, x, g)
    (wx,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(gx, wx)


@pytest.mark.parametrize("n, pad", [(9, 8), (9, 1), (6, 1), (6, 8)])
def test_pairs_of_more_tokens_than_the_operator_holds_fail(n, pad):
    # a clear ValueError, as ElasticLinear gives, not a bare KeyError from the offsets table;
    # 6 vectors with padding to 8 used to pass here and fail only at the output projection
    op = DotProduct(max_tokens=4, max_dense=8, emb_dim=4)
    with pytest.raises(ValueError, match=rf"DotProduct\(max_tokens=4\) takes at most 5 vectors .*, got {n}"):
        op.pairs(torch.randn(2, n, 4), pad)
    assert op.pairs(torch.randn(2, 5, 4), pad).shape == (2, 10)


def reference_attention(qkv, heads, mask=None):
    """softmax(QK^T / sqrt(d)) V per head, written out."""
    b, t, e3 = qkv.shape
    q, k, v = qkv.float().view(b, t, 3, heads, e3 // 3 // heads).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e3 // 3)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_operator_equals_the_written_out_form(masked):
    torch.manual_seed(0)
    op = Attention(max_tokens=6, max_dense=8, emb_dim=8).double()
    z = torch.randn(5, 6, 8, dtype=torch.float64, requires_grad=True)
    key_mask = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.float64) if masked else None
    got, _ = op(z, None, 8, key_mask)
    x = op.norm1(z + op.proj(reference_attention(op.qkv(z), op.heads, key_mask).double()))
    want = op.norm2(x + op.ffn(x))
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    torch.testing.assert_close(torch.autograd.grad(got, z, g)[0], torch.autograd.grad(want, z, g)[0])
    if masked:  # masked-out keys change nothing for the real tokens
        z2 = z.detach().clone()
        z2[:, 4:] = torch.randn(5, 2, 8, dtype=torch.float64)
        again, _ = op(z2, None, 8, key_mask)
        torch.testing.assert_close(again[:, :4], got[:, :4].detach())


@pytest.mark.skipif(not token_attention.supported(torch.zeros(1, 1, 6, device="cuda" if torch.cuda.is_available() else "cpu"), 2), reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [5, 16, 33, 64])
@pytest.mark.parametrize("masked", [False, True])
def test_triton_token_attention_equals_the_written_out_form(dtype, t, masked):
    g = torch.Generator(device="cuda").manual_seed(t)
    qkv = torch.randn(300, t, 48, device="cuda", generator=g).to(dtype).requires_grad_()
    mask = (torch.arange(t, device="cuda") < max(1, 2 * t // 3)).float() if masked else None
    got = token_attention.attention(qkv, 2, mask)
    want = reference_attention(qkv, 2, mask)
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3  # bf16 / TF32 dots: error relative to the largest entry
    assert got.dtype == dtype and got.shape == (300, t, 16)
    torch.testing.assert_close(got.float(), want, rtol=0, atol=tol * want.abs().max().item())
    grad = torch.randn(300, t, 16, device="cuda", generator=g)
    (g_got,) = torch.autograd.grad(got.float(), qkv, grad)
    (g_want,) = torch.autograd.grad(want, qkv, grad)
    torch.testing.assert_close(g_got.float(), g_want.float(), rtol=0, atol=tol * g_want.abs().max().item())
    compiled = torch.compile(lambda x: token_attention.attention(x, 2, mask))
    torch.testing.assert_close(compiled(qkv), got)


def test_efc_and_dot_product_are_their_written_out_forms_on_the_leading_slice():
    # docs/search.md ("What a choice block computes"): EFC is W z + b along the token axis; the
    # dot-product maps the pairwise products of [u(h); z] (i > j) to width d and passes z on
    from recnas.ops.sparse import EFC

    g = torch.Generator().manual_seed(2)
    t, e, d = 5, 4, 6
    z, h = torch.randn(3, t, e, generator=g), torch.randn(3, d, generator=g)
    efc = EFC(max_tokens=8, max_dense=16, emb_dim=e)
    w, b = efc.linear.weight[:t, :t], efc.linear.bias[:t]
    tokens, dense = efc(z, h, d)
    torch.testing.assert_close(tokens, torch.einsum("ot,bte->boe", w, z) + b[None, :, None])
    assert dense is None
    dot = DotProduct(max_tokens=8, max_dense=16, emb_dim=e)
    x = torch.cat([(h @ dot.dense_token.weight[:, :d].T + dot.dense_token.bias)[:, None], z], 1)
    rows, cols = torch.tril_indices(t + 1, t + 1, offset=-1)
    pairs = (x[:, rows] * x[:, cols]).sum(-1)
    n_pairs = (t + 1) * t // 2
    tokens, dense = dot(z, h, d)
    assert tokens is z
    torch.testing.assert_close(dense, pairs @ dot.out.weight[:d, :n_pairs].T + dot.out.bias[:d])


def test_attention_normalises_every_token_after_each_residual():
    """Both LayerNorms are there: at their start (weight 1, bias 0) every output token has mean 0
    and variance 1 over the embedding axis. The written-out test reuses op.norm2 and so cannot
    see it missing (mutation round 4, S07); the FFN is Linear(e, 2e), ReLU, Linear(2e, e) (S10)."""
    torch.manual_seed(0)
    op = Attention(max_tokens=6, max_dense=8, emb_dim=8).double()
    out, dense = op(torch.randn(5, 6, 8, dtype=torch.float64) * 3 + 2, None, 8)
    assert dense is None
    assert [type(m).__name__ for m in op.ffn] == ["Linear", "ReLU", "Linear"] and op.ffn[0].out_features == 16  # S10
    torch.testing.assert_close(out.mean(-1), torch.zeros(5, 6, dtype=torch.float64))
    torch.testing.assert_close(out.var(-1, correction=0), torch.ones(5, 6, dtype=torch.float64), rtol=1e-4, atol=1e-4)


def test_attention_over_an_emb_dim_its_heads_do_not_divide_takes_one_head():
    """emb_dim 5 with 2 heads: one 5-wide head, not a reshape error (mutation round 4, S02)."""
    op = Attention(max_tokens=4, max_dense=8, emb_dim=5, heads=2)
    assert op.heads == 1 and Attention(max_tokens=4, max_dense=8, emb_dim=6, heads=2).heads == 2
    out, _ = op(torch.randn(3, 4, 5), None, 8)
    assert out.shape == (3, 4, 5) and torch.isfinite(out).all()
