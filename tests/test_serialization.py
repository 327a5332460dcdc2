"""state_dict, save/load, pickle, deepcopy, and parameter changes taking effect in the next
forward (PARITY.md items 14, 16), each compared with torch.nn doing the same."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import rnnkit
from helpers import (CELLS, MODULES, assert_matches_torch, call, make_pair, random_input,
                     random_states)

KINDS = {
    "RNN": ("RNN", dict(num_layers=2, bidirectional=True, nonlinearity="relu")),
    "GRU": ("GRU", dict(num_layers=2, bidirectional=True)),
    "LSTM": ("LSTM", dict(num_layers=2, bidirectional=True)),
    "LSTM-proj": ("LSTM", dict(num_layers=2, proj_size=3, bias=False)),
    "RNNCell": ("RNNCell", dict(nonlinearity="relu")),
    "GRUCell": ("GRUCell", {}),
    "LSTMCell": ("LSTMCell", {}),
}


def _pair(kind, **kwargs):
    name, extra = KINDS[kind]
    return make_pair(name, 3, 5, **extra, **kwargs, dtype=torch.float64)


def _input(module):
    if isinstance(module, nn.RNNCellBase):
        return torch.randn(2, 3, dtype=torch.float64)
    return random_input(module, 4, 2)


def _forward(module, x):
    with torch.no_grad():
        result = module(x)
    return [t for t in (result if isinstance(result, tuple) else (result,))]


def _assert_same_outputs(a, b, x):
    def flat(module):
        out = _forward(module, x)
        return [t for o in out for t in (o if isinstance(o, tuple) else (o,))]
    for u, v in zip(flat(a), flat(b), strict=True):
        assert torch.equal(u, v)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_interchangeable_with_torch_both_ways(kind):
    ref, ours = _pair(kind)  # torch -> rnnkit already done strictly by make_pair
    fresh_ref = getattr(nn, KINDS[kind][0])(3, 5, **KINDS[kind][1], dtype=torch.float64)
    assert fresh_ref.load_state_dict(ours.state_dict(), strict=True).missing_keys == []
    x = _input(ref)
    assert_matches_torch(fresh_ref, ours, [x])
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())


def _round_trips():
    def save_load(m):
        buffer = io.BytesIO()
        torch.save(m, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)
    return {"torch.save": save_load,
            "pickle": lambda m: pickle.loads(pickle.dumps(m)),
            "deepcopy": copy.deepcopy}


@pytest.mark.parametrize("how", list(_round_trips()))
@pytest.mark.parametrize("kind", KINDS)
def test_whole_module_round_trip_gives_same_outputs(kind, how):
    _, ours = _pair(kind)
    copied = _round_trips()[how](ours)
    assert type(copied) is type(ours)
    assert repr(copied) == repr(ours)
    assert all(p is not q for p, q in zip(copied.parameters(), ours.parameters()))
    _assert_same_outputs(copied, ours, _input(ours))
    # The copy is independent: editing it leaves the original as it was. The edit
    # must show in the output: a relu cell's output can be all zeros before and after
    # an edit of W_ih by 1. With inputs >= 0.5 and W_ih + 2 (torch's init keeps
    # |w|, |b| <= 1/sqrt(5)), every pre-activation of the copy is positive and above
    # the original's.
    with torch.no_grad():
        next(copied.parameters()).add_(2)
    x = _input(ours)
    if isinstance(ours, nn.RNNCellBase):
        x = x.abs() + 0.5
    assert not torch.equal(_forward(copied, x)[0], _forward(ours, x)[0])


def _first_hh(module):
    """The recurrent weight of layer 0; for cells, run here for one step from zero state, the
    input weight (weight_hh would multiply zeros)."""
    return "weight_ih" if isinstance(module, nn.RNNCellBase) else "weight_hh_l0"


@pytest.mark.parametrize("kind", KINDS)
def test_reassigned_parameter_used_in_next_forward(kind):
    ref, ours = _pair(kind)
    x = _input(ref)
    before = _forward(ours, x)[0]
    name = _first_hh(ref)
    new = torch.randn_like(getattr(ref, name))
    setattr(ref, name, nn.Parameter(new.clone()))
    setattr(ours, name, nn.Parameter(new.clone()))
    after = assert_matches_torch(ref, ours, [x])[0][0]
    assert not torch.allclose(after, before)


@pytest.mark.parametrize("kind", KINDS)
def test_in_place_edit_used_in_next_forward(kind):
    ref, ours = _pair(kind)
    x = _input(ref)
    before = _forward(ours, x)[0]
    with torch.no_grad():
        for module in (ref, ours):
            getattr(module, _first_hh(module)).mul_(3)
            next(module.parameters()).add_(0.5)
    after = assert_matches_torch(ref, ours, [x])[0][0]
    assert not torch.allclose(after, before)


@pytest.mark.parametrize("kind", KINDS)
def test_functional_call_uses_given_parameters_and_gives_their_gradients(kind):
    ref, ours = _pair(kind)
    x = _input(ref)
    replacement = {name: torch.randn_like(p) * 0.3 for name, p in ref.named_parameters()
                   if "weight" in name}

    def run(module):
        params = {n: t.clone().requires_grad_() for n, t in replacement.items()}
        result = torch.func.functional_call(module, params, (x,))
        outputs = [t for r in (result if isinstance(result, tuple) else (result,))
                   for t in (r if isinstance(r, tuple) else (r,))]
        grads = torch.autograd.grad(sum(o.sum() for o in outputs), list(params.values()))
        return outputs, grads

    (ref_out, ref_grads), (our_out, our_grads) = run(ref), run(ours)
    for a, e in zip(our_out + list(our_grads), ref_out + list(ref_grads), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)
    # The module's own parameters are untouched and used again afterwards.
    torch.testing.assert_close(_forward(ours, x)[0], _forward(ref, x)[0], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(_forward(ours, x)[0], our_out[0])


@pytest.mark.parametrize("kind", KINDS)
def test_weight_norm_parametrization_on_weight_hh_matches_torch(kind):
    ref, ours = _pair(kind)
    name = _first_hh(ref)
    for module in (ref, ours):
        parametrizations.weight_norm(module, name)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = _input(ref)
    assert_matches_torch(ref, ours, [x])
    # Changing the magnitude parameter changes the next forward, as in torch.
    with torch.no_grad():
        for module in (ref, ours):
            module.parametrizations[name].original0.mul_(2)
    assert_matches_torch(ref, ours, [x])


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM", "LSTM-proj"])
def test_tied_parameters_match_torch(kind):
    """Layer 1 shares layer 0's recurrent weight (same shape in every layer)."""
    ref, ours = _pair(kind)
    for module in (ref, ours):
        module.weight_hh_l1 = module.weight_hh_l0
    assert ours.weight_hh_l1 is ours.weight_hh_l0
    assert_matches_torch(ref, ours, [random_input(ref, 4, 2)] + random_states(ref, 2))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_state_dict_from_torch_with_other_layout_rejected_like_torch(kind):
    """strict=True means strict: a torch state_dict of another configuration is refused by
    rnnkit exactly as by torch."""
    name, extra = KINDS[kind]
    source = getattr(nn, name)(3, 5, num_layers=1)
    ref, ours = getattr(nn, name)(3, 5, **extra), getattr(rnnkit, name)(3, 5, **extra)
    with pytest.raises(RuntimeError) as expected:
        ref.load_state_dict(source.state_dict(), strict=True)
    with pytest.raises(RuntimeError) as actual:
        ours.load_state_dict(source.state_dict(), strict=True)
    assert str(actual.value).replace("rnnkit", "x") == str(expected.value).replace("torch", "x")
