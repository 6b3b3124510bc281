"""Dense operators compute their written-out forms on leading weight slices."""

import pytest
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


def test_elastic_linear_refuses_a_call_wider_than_its_weights():
    """More inputs or outputs than the stored matrix: a ValueError (the leading slice of too few
    rows used to be returned as if it were the wider output)."""
    from recnas.ops.elastic import ElasticLinear

    lin = ElasticLinear(4, 3)
    x = torch.randn(2, 4)
    assert lin(x, out=3).shape == (2, 3) and lin(x[:, :2], out=1).shape == (2, 1)
    with pytest.raises(ValueError, match=r"ElasticLinear\(4->3\) asked for 4->5"):
        lin(x, out=5)
    with pytest.raises(ValueError, match=r"ElasticLinear\(4->3\) asked for 6->3"):
        lin(torch.randn(2, 6))


def test_token_linear_inherits_the_leading_slice_of_weight_and_bias_and_refuses_a_bias_mismatch():
    from recnas.ops.elastic import TokenLinear

    source, target = TokenLinear(6, 5), TokenLinear(4, 3)
    with torch.no_grad():
        source.bias.copy_(torch.arange(5.0))
    target.inherit_from(source)
    torch.testing.assert_close(target.weight, source.weight[:3, :4])
    torch.testing.assert_close(target.bias, torch.tensor([0.0, 1.0, 2.0]))
    for a, b in ((TokenLinear(4, 3, bias=False), source), (target, TokenLinear(6, 5, bias=False))):
        with pytest.raises(ValueError, match="cannot hold"):
            a.inherit_from(b)


def test_elastic_linear_starts_like_nn_linear_with_a_zero_bias():
    """Weights U(+-1/sqrt(max_in)) (kaiming_uniform with a=sqrt(5), nn.Linear's), bias zero
    (mutation round 4, E03 E04)."""
    from recnas.ops.elastic import ElasticLinear

    torch.manual_seed(0)
    lin = ElasticLinear(16, 32)
    bound = 16**-0.5
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    assert torch.equal(lin.bias, torch.zeros(32))
    assert ElasticLinear(16, 32, bias=False).bias is None


def test_token_linear_refuses_to_inherit_from_fewer_inputs_or_outputs():
    """A source projection narrower than the target on either axis is a ValueError naming both,
    not a torch copy error (mutation round 4, E07)."""
    from recnas.ops.elastic import TokenLinear

    target = TokenLinear(4, 3)
    for source in (TokenLinear(3, 5), TokenLinear(6, 2)):
        with pytest.raises(ValueError, match=rf"TokenLinear\({source.max_in}->{source.max_out}\) cannot hold TokenLinear\(4->3\)"):
            target.inherit_from(source)
