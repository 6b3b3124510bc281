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


def test_fc_gating_and_sum_are_their_written_out_forms_on_the_leading_slice():
    # the forms docs/search.md ("What a choice block computes") states; gating gates the block's
    # combined input h by itself, h * sigmoid(W h + b), not one input by another
    from recnas.ops.dense import FC, Gating, Sum

    h = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    fc, gating = FC(8), Gating(8)
    w, b = fc.linear.weight[:5, :5], fc.linear.bias[:5]
    torch.testing.assert_close(fc(h), torch.relu(h @ w.T + b))
    w, b = gating.gate.weight[:5, :5], gating.gate.bias[:5]
    torch.testing.assert_close(gating(h), h * torch.sigmoid(h @ w.T + b))
    assert Sum(8)(h) is h and not list(Sum(8).parameters())
