"""hinm.linear / hinm.spmm under torch autograd: the products have no backward, so an output that
autograd would differentiate carries a node whose backward raises, instead of silently dropping the
gradient of x, the bias, B or the weight's values. Under no_grad nothing is attached."""

import numpy as np
import pytest

import hinm
from conftest import needs_torch

pytestmark = needs_torch
torch = pytest.importorskip("torch")

NO_BACKWARD = "has no backward"


@pytest.fixture
def weight():
    torch.manual_seed(0)
    return hinm.compress_nm(torch.randn(24, 64), 2, 4)


def refuses_backward(y, name):
    assert y.grad_fn is not None
    with pytest.raises(RuntimeError, match=f"hinm.{name} {NO_BACKWARD}"):
        y.sum().backward()


def test_linear_input_requiring_grad(weight):
    x = torch.randn(5, 64, requires_grad=True)
    y = hinm.linear(x, weight)
    torch.testing.assert_close(y, x.detach() @ weight.to_dense().T, rtol=1e-5, atol=1e-5)
    refuses_backward(y, "linear")
    with torch.no_grad():
        assert hinm.linear(x, weight).grad_fn is None


def test_a_gradient_through_other_terms_still_refuses(weight):
    # x also reaches the loss without hinm: that gradient must not come back without hinm's part
    x = torch.randn(3, 64, requires_grad=True)
    loss = (2 * x).sum() + hinm.linear(x, weight).sum()
    with pytest.raises(RuntimeError, match=NO_BACKWARD):
        loss.backward()
    assert x.grad is None


def test_linear_bias_requiring_grad(weight):
    bias = torch.nn.Parameter(torch.randn(24))
    x = torch.randn(2, 64)
    y = hinm.linear(x, weight, bias)
    torch.testing.assert_close(y.detach(), x @ weight.to_dense().T + bias.detach(), rtol=1e-5, atol=1e-5)
    refuses_backward(y, "linear")


def test_values_requiring_grad_before_and_after_the_fast_path(weight):
    x = torch.randn(4, 64)
    leaf = hinm.NMTensor(torch.nn.Parameter(weight.values.clone()), weight.indices, weight.shape, 2, 4)
    refuses_backward(hinm.linear(x, leaf), "linear")
    refuses_backward(hinm.linear(x, leaf), "linear")  # the second call would take the cached path
    later = hinm.NMTensor(weight.values.clone(), weight.indices, weight.shape, 2, 4)
    assert hinm.linear(x, later).grad_fn is None  # prepares the cached path
    later.values.requires_grad_(True)
    refuses_backward(hinm.linear(x, later), "linear")
    with pytest.raises(RuntimeError, match="prepack: the weight's values require grad"):
        hinm.prepack(later)


def test_hinm_weight_and_tasd_series():
    torch.manual_seed(1)
    w = torch.randn(64, 128)
    x = torch.randn(3, 128, requires_grad=True)
    for weight in (hinm.compress(w, hinm.HiNMConfig(32, 0.5, 2, 4)), hinm.tasd(w, "2:4+2:4")):
        y = hinm.linear(x, weight)
        torch.testing.assert_close(y.detach(), hinm.linear(x.detach(), weight))
        refuses_backward(y, "linear")


def test_spmm(weight):
    b = torch.randn(64, 3, requires_grad=True)
    y = hinm.spmm(weight, b)
    torch.testing.assert_close(y, weight.to_dense() @ b.detach(), rtol=1e-5, atol=1e-5)
    refuses_backward(y, "spmm")
    leaf = hinm.NMTensor(torch.nn.Parameter(weight.values.clone()), weight.indices, weight.shape, 2, 4)
    refuses_backward(hinm.spmm(leaf, b.detach()), "spmm")


def test_out_and_numpy_results_cannot_carry_a_gradient(weight):
    x = torch.randn(2, 64, requires_grad=True)
    with pytest.raises(RuntimeError, match="out= cannot be used when an input requires grad"):
        hinm.linear(x, weight, out=torch.empty(2, 24))
    with pytest.raises(RuntimeError, match="result is a numpy array"):
        hinm.linear(np.zeros((2, 64), np.float32), weight, torch.nn.Parameter(torch.zeros(24)))
    with torch.no_grad():
        out = torch.empty(2, 24)
        assert hinm.linear(x, weight, out=out) is out
