"""Low-precision dtypes on CPU and autocast (PARITY.md item 25): rnnkit runs float16 and
bfloat16 modules as torch.nn does, returns the input's dtype, and agrees within loose
tolerances (gradients included)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from helpers import (CELLS, MODULES, assert_matches_torch, call, cpu_autocast_output_dtypes,
                     cpu_autocast_reference, flatten, make_pair, random_input, random_states,
                     torch_bf16_autocast_is_native)

LOW = [torch.float16, torch.bfloat16]


def _low_pair(name, dtype, **kwargs):
    """Parameters drawn in float32 by torch, converted: both modules hold the same values."""
    ref, ours = make_pair(name, 3, 4, **kwargs)
    return ref.to(dtype), ours.to(dtype)


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name, kwargs", [
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(nonlinearity="relu")),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=2, batch_first=True)),
])
def test_low_precision_module_matches_torch(name, kwargs, dtype):
    ref, ours = _low_pair(name, dtype, **kwargs)
    leaves = [random_input(ref, 4, 2)] + random_states(ref, 2)
    outputs, grads = assert_matches_torch(ref, ours, leaves)
    assert all(o.dtype == dtype for o in outputs)
    assert all(g.dtype == dtype for g in grads.values())


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", MODULES)
def test_low_precision_packed_matches_torch(name, dtype):
    ref, ours = _low_pair(name, dtype, bidirectional=True)
    lengths = torch.tensor([2, 4, 1])

    def packed(module, x):
        out, hidden = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return out, hidden

    outputs, _ = assert_matches_torch(ref, ours, [torch.randn(4, 3, 3, dtype=dtype)], fn=packed)
    assert outputs[0].dtype == dtype


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", CELLS)
def test_low_precision_cell_matches_torch(name, dtype):
    ref, ours = _low_pair(name, dtype)
    leaves = [torch.randn(2, 3, dtype=dtype)] + random_states(ref, 2)
    outputs, _ = assert_matches_torch(ref, ours, leaves)
    assert all(o.dtype == dtype for o in outputs)


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_output_dtype_is_input_dtype(name):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        _, ours = make_pair(name, 3, 4, dtype=dtype)
        x = (random_input(ours, 2, 2) if name in MODULES else torch.randn(2, 3, dtype=dtype))
        with torch.no_grad():
            assert all(t.dtype == dtype for t in flatten(ours(x)))


# ---------------------------------------------------------------------------
# Autocast on CPU. rnnkit follows one dtype rule on every CPU (helpers.py, README "Autocast"):
# RNN, LSTM and RNNCell compute in the low dtype (a projected LSTM's c keeps its dtype); GRU,
# GRUCell and LSTMCell in promote(low dtype, state dtype). torch.nn follows the same rule only
# where its bfloat16 path (oneDNN's) works, so values are checked against torch.nn in float32 on
# the rounded inputs and weights, and against torch.nn itself where that path works.

AUTOCAST_CASES = [
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(nonlinearity="relu")),
    ("GRU", dict(num_layers=2)),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=2)),
    ("RNNCell", {}),
    ("GRUCell", {}),
    ("LSTMCell", {}),
]


@pytest.mark.parametrize("autocast_dtype", LOW, ids=str)
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("name, kwargs", AUTOCAST_CASES)
def test_cpu_autocast_follows_the_rule(name, kwargs, with_hx, autocast_dtype):
    ref, ours = make_pair(name, 3, 4, **kwargs)  # float32 parameters
    batch = 2
    x = random_input(ref, 3, batch) if name in MODULES else torch.randn(batch, 3)
    states = random_states(ref, batch) if with_hx else []
    with torch.no_grad():
        with torch.autocast("cpu", dtype=autocast_dtype):
            actual = flatten(call(ours, x, *states))
        rounded_module, rounded_x, rounded_states = cpu_autocast_reference(
            name, ref, autocast_dtype, x, states)
        expected = flatten(call(rounded_module, rounded_x, *rounded_states))
    assert [t.dtype for t in actual] == cpu_autocast_output_dtypes(
        name, ref, autocast_dtype, x.dtype, states)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.float(), e, rtol=5e-2, atol=5e-2)
    if autocast_dtype == torch.bfloat16 and torch_bf16_autocast_is_native():
        # Here torch.nn runs its bfloat16 path and follows the same rule.
        with torch.no_grad(), torch.autocast("cpu", dtype=autocast_dtype):
            native = flatten(call(ref, x, *states))
        assert [t.dtype for t in actual] == [t.dtype for t in native]
        for a, e in zip(actual, native):
            torch.testing.assert_close(a.float(), e.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_backward_inside_cpu_autocast(name):
    """torch's AMP recipe runs the loss's backward outside autocast, but torch.nn also
    allows it inside the region: gradients are float32, as the parameters, and match those of
    torch.nn in float32 on the rounded inputs and weights."""
    ref, ours = make_pair(name, 3, 4)
    x = random_input(ref, 3, 2) if name in MODULES else torch.randn(2, 3)
    rounded_module, rounded_x, _ = cpu_autocast_reference(name, ref, torch.bfloat16, x, [])
    grads = []
    for module, inputs, autocast in ((ours, x, True), (rounded_module, rounded_x, False)):
        leaf = inputs.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs = [t for t in flatten(module(leaf)) if t is not None]
            sum(o.float().sum() for o in outputs).backward()
        grads.append([leaf.grad] + [p.grad for p in module.parameters()])
    for actual, expected in zip(grads[0], grads[1], strict=True):
        assert actual.dtype == expected.dtype == torch.float32
        torch.testing.assert_close(actual, expected, rtol=5e-2, atol=5e-2)
