"""RowLayerNorm: the closed-form LayerNorm used for large GPU batches equals nn.LayerNorm."""

import pytest
import torch
import torch.nn as nn

from recnas.ops.norm import RowLayerNorm


@pytest.mark.parametrize("shape", [(64, 7, 16), (5, 16), (3, 2, 4, 8)])
def test_closed_form_matches_layernorm_values_and_gradients(shape):
    torch.manual_seed(0)
    ref, fast = nn.LayerNorm(shape[-1]), RowLayerNorm(shape[-1], min_elements=0)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    fast.load_state_dict(ref.state_dict())  # same parameters, same state dict keys
    x = (torch.randn(*shape) * 3 + 1).double().float().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    dy = torch.randn(*shape)
    y_ref, y = ref(x), fast(x2)
    y_ref.backward(dy)
    y.backward(dy)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(x2.grad, x.grad, atol=1e-4)
    assert torch.allclose(fast.weight.grad, ref.weight.grad, atol=1e-4)
    assert torch.allclose(fast.bias.grad, ref.bias.grad, atol=1e-5)


def test_fused_kernel_kept_for_small_or_cpu_inputs(monkeypatch):
    calls = []
    monkeypatch.setattr("recnas.ops.norm._RowLayerNorm.apply", lambda *a: calls.append(a) or a[0])
    RowLayerNorm(16)(torch.randn(4, 16))  # default threshold, CPU: nn.LayerNorm's kernel
    assert not calls
    RowLayerNorm(16, min_elements=0)(torch.randn(4, 16))
    assert len(calls) == 1


def test_dtype_follows_layernorm():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert RowLayerNorm(16, min_elements=0)(x).dtype == nn.LayerNorm(16)(x.float()).to(torch.bfloat16).dtype == torch.bfloat16
    with torch.autocast("cpu", torch.bfloat16):
        assert RowLayerNorm(16, min_elements=0)(x).dtype == torch.float32


@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_eps_is_added_to_the_variance_as_layernorm_adds_it(eps):
    """Rows of variance near eps: the closed form must add the module's eps, not a constant of
    its own (mutation round 4, R04)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16) * 1e-3
    ref, fast = nn.LayerNorm(16, eps=eps), RowLayerNorm(16, eps=eps, min_elements=0)
    torch.testing.assert_close(fast(x), ref(x))
