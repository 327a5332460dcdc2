"""Autograd beyond the parity grid (PARITY.md items 21, 26, 27): gradcheck, gradgradcheck,
frozen parameters, retain_graph, no_grad, inputs left untouched, non-contiguous tensors."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from helpers import (CELLS, DEVICES, MODULES, assert_matches_torch, call, flatten, make_pair,
                     random_input, random_states)

KINDS = {
    "RNN-tanh": ("RNN", dict(nonlinearity="tanh")),
    "RNN-relu": ("RNN", dict(nonlinearity="relu")),
    "GRU": ("GRU", {}),
    "LSTM": ("LSTM", {}),
    "LSTM-proj": ("LSTM", dict(proj_size=1)),
}


def _tiny(kind, device="cpu", **kwargs):
    name, extra = KINDS[kind]
    return getattr(rnnkit, name)(2, 2, **extra, **kwargs, dtype=torch.float64, device=device)


def _as_function(module, packed_lengths=None):
    """f(x, *states, *params) -> every output, for gradcheck over inputs and parameters."""
    names = [n for n, _ in module.named_parameters()]

    def f(x, *rest):
        states, params = rest[:len(rest) - len(names)], rest[len(rest) - len(names):]
        hx = states[0] if len(states) == 1 else tuple(states)
        if packed_lengths is not None:
            x = pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
        result = torch.func.functional_call(module, dict(zip(names, params)), (x, hx))
        if packed_lengths is not None:
            result = (pad_packed_sequence(result[0])[0], result[1])
        return tuple(t for t in flatten(result) if t is not None and t.is_floating_point())
    return f


def _leaves(module, steps=3, batch=2):
    x = random_input(module, steps, batch).requires_grad_()
    states = [s.requires_grad_() for s in random_states(module, batch)]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    return [x, *states, *params]


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_bidirectional_two_layers(kind):
    module = _tiny(kind, num_layers=2, bidirectional=True)
    assert gradcheck(_as_function(module), _leaves(module))


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_bidirectional_packed(kind):
    module = _tiny(kind, bidirectional=True)
    assert gradcheck(_as_function(module, torch.tensor([2, 3, 1])), _leaves(module, 3, 3))


# Double backward on CUDA too, where torch.nn (cuDNN) has none.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["GRU", "LSTM", "LSTM-proj", "RNN-tanh"])
def test_gradgradcheck(kind, device):
    module = _tiny(kind, device, num_layers=2)
    assert gradgradcheck(_as_function(module), _leaves(module, steps=2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_gradgradcheck_packed_bidirectional(kind, device):
    module = _tiny(kind, device, bidirectional=True)
    assert gradgradcheck(_as_function(module, torch.tensor([1, 2])), _leaves(module, 2, 2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CELLS)
def test_cell_gradcheck_and_gradgradcheck(name, device):
    cell = getattr(rnnkit, name)(2, 3, dtype=torch.float64, device=device)
    names = [n for n, _ in cell.named_parameters()]

    def f(x, *rest):
        states, params = rest[:len(rest) - len(names)], rest[len(rest) - len(names):]
        hx = states[0] if len(states) == 1 else tuple(states)
        return torch.func.functional_call(cell, dict(zip(names, params)), (x, hx))

    leaves = [torch.randn(2, 2, dtype=torch.float64, device=device, requires_grad=True)]
    leaves += [s.requires_grad_() for s in random_states(cell, 2)]
    leaves += [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert gradcheck(f, leaves)
    assert gradgradcheck(f, leaves)


def _pair(name, **kwargs):
    kwargs = {"proj_size": 2, **kwargs} if name == "LSTM" else kwargs
    return make_pair(name, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("name", MODULES)
def test_frozen_parameters_still_give_input_gradients(name):
    ref, ours = _pair(name)
    for module in (ref, ours):
        module.requires_grad_(False)
    _, grads = assert_matches_torch(ref, ours, [random_input(ref, 4, 2)] + random_states(ref, 2))
    assert grads["leaf0"] is not None and grads["leaf0"].abs().sum() > 0
    assert all(p.grad is None for p in ours.parameters())


@pytest.mark.parametrize("name", MODULES)
def test_partly_frozen_parameters_match_torch(name):
    ref, ours = _pair(name)
    for module in (ref, ours):
        module.weight_hh_l0.requires_grad_(False)
        module.bias_ih_l1_reverse.requires_grad_(False)
    assert_matches_torch(ref, ours, [random_input(ref, 4, 2)] + random_states(ref, 2))
    assert ours.weight_hh_l0.grad is None and ours.weight_ih_l0.grad is not None


@pytest.mark.parametrize("name", MODULES)
def test_streaming_steps_from_no_state_match_torch(name):
    """T = 1 calls (one cell step each) from no state and from a given one that needs no
    gradient, whose backward asks for none of that state, and from one that needs it."""
    ref, ours = make_pair(name, 3, 4, num_layers=2, dtype=torch.float64)
    frozen = random_states(ref, 2)

    def steps(module, x, *states):
        first = module(x[:1])
        second = call(module, x[1:2], *frozen)
        third = call(module, x[2:], *states)
        return (*flatten(first), *flatten(second), *flatten(third))
    _, grads = assert_matches_torch(ref, ours, [random_input(ref, 3, 2)] + random_states(ref, 2),
                                    fn=steps)
    assert grads["leaf1"] is not None


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_retain_graph_backward_twice_gives_identical_gradients(name):
    _, ours = make_pair(name, 3, 4, dtype=torch.float64)
    x = (random_input(ours, 4, 2) if name in MODULES else torch.randn(2, 3, dtype=torch.float64))
    x.requires_grad_()
    outputs = [t for t in flatten(ours(x)) if t is not None]
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs)
    leaves = [x, *ours.parameters()]
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_no_graph_under_no_grad(name):
    _, ours = make_pair(name, 3, 4, dtype=torch.float64)
    x = (random_input(ours, 4, 2) if name in MODULES else torch.randn(2, 3, dtype=torch.float64))
    x.requires_grad_()
    with torch.no_grad():
        outputs = [t for t in flatten(ours(x)) if t is not None]
    assert all(not o.requires_grad and o.grad_fn is None for o in outputs)


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_inputs_states_and_weights_are_not_modified(name):
    _, ours = make_pair(name, 3, 4, dtype=torch.float64)
    if name in MODULES:
        x, states = random_input(ours, 4, 2), random_states(ours, 2)
    else:
        x, states = torch.randn(2, 3, dtype=torch.float64), random_states(ours, 2)
    saved = [t.clone() for t in [x, *states, *ours.parameters()]]
    outputs = [t for t in flatten(call(ours, x, *states)) if t is not None]
    sum(o.sum() for o in outputs).backward()
    for before, after in zip(saved, [x, *states, *ours.parameters()], strict=True):
        assert torch.equal(before, after)


def _non_contiguous(t):
    """The same values, stored transposed in a wider buffer."""
    wide = torch.randn(*reversed(t.shape), 2, dtype=t.dtype)[..., 0]
    wide.copy_(t.permute(*reversed(range(t.dim()))))
    view = wide.permute(*reversed(range(t.dim())))
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_non_contiguous_input_states_and_weights_match_torch(name):
    ref, ours = make_pair(name, 3, 4, **({"num_layers": 2} if name in MODULES else {}),
                          dtype=torch.float64)
    weight = "weight_hh_l0" if name in MODULES else "weight_hh"
    values = getattr(ref, weight).detach()
    for module in (ref, ours):
        setattr(module, weight, torch.nn.Parameter(_non_contiguous(values)))
    assert not getattr(ours, weight).is_contiguous()
    if name in MODULES:
        leaves = [random_input(ref, 4, 3)] + random_states(ref, 3)
    else:
        leaves = [torch.randn(3, 3, dtype=torch.float64)] + random_states(ref, 3)

    def run_non_contiguous(module, *tensors):
        return call(module, *[_non_contiguous(t) for t in tensors])

    assert_matches_torch(ref, ours, leaves, fn=run_non_contiguous)


@pytest.mark.parametrize("name", MODULES)
def test_input_grad_holds_only_its_own_memory(name):
    """x.grad of a leaf input owns just its elements, not a larger scratch buffer of
    the kernels (which would stay alive with it)."""
    module = getattr(rnnkit, name)(3, 64)
    x = torch.randn(7, 5, 3, requires_grad=True)
    module(x)[0].sum().backward()
    assert x.grad.untyped_storage().nbytes() == x.grad.nbytes
