"""Dense operators compute their written-out forms on leading weight slices."""

import torch

from recnas.ops.dense import Cross


def test_cross_is_dcn_v2s_cross_layer_on_the_leading_slice():
    op = Cross(8)
    h = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    w, b = op.linear.weight[:5, :5], op.linear.bias[:5]
    torch.testing.assert_close(op(h), h * (h @ w.T + b) + h)
    # unlike gating, the product is not squashed: scaling h scales the cross term quadratically
    torch.testing.assert_close(op(2 * h) - 2 * h, 4 * (h * (h @ w.T)) + 2 * h * b)
