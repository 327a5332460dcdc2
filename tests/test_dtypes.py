"""Low-precision dtypes on CPU and autocast (PARITY.md item 25): rnnkit runs float16 and
bfloat16 modules as torch.nn does, returns the input's dtype, and agrees within loose
tolerances (gradients included)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from helpers import (CELLS, MODULES, assert_matches_torch, call, flatten,
                     make_pair, random_input, random_states)

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
# Autocast on CPU. torch's own CPU behaviour is uneven (RNN, LSTM and RNNCell compute in the
# low dtype; GRU, GRUCell and LSTMCell return float32, and a projected LSTM returns c in
# float32); rnnkit follows it. Values agree within the low dtype's tolerance.

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
def test_cpu_autocast_behaves_as_torch(name, kwargs, with_hx, autocast_dtype):
    ref, ours = make_pair(name, 3, 4, **kwargs)  # float32 parameters
    batch = 2
    x = random_input(ref, 3, batch) if name in MODULES else torch.randn(batch, 3)
    states = random_states(ref, batch) if with_hx else []
    with torch.no_grad(), torch.autocast("cpu", dtype=autocast_dtype):
        try:
            expected = flatten(call(ref, x, *states))
        except RuntimeError as error:  # float16 LSTM: oneDNN has no CPU primitive for it
            pytest.skip(f"torch.nn cannot run this on CPU: {str(error)[:80]}")
        actual = flatten(call(ours, x, *states))
    assert [t.dtype for t in actual] == [t.dtype for t in expected]
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.float(), e.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_backward_inside_cpu_autocast_matches_torch(name):
    """torch's AMP recipe runs the loss's backward outside autocast, but torch.nn also
    allows it inside the region: gradients (float32, as the parameters) match torch."""
    ref, ours = make_pair(name, 3, 4)
    x = random_input(ref, 3, 2) if name in MODULES else torch.randn(2, 3)
    grads = []
    for module in (ref, ours):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = [t for t in flatten(module(leaf)) if t is not None]
            sum(o.float().sum() for o in outputs).backward()
        grads.append([leaf.grad] + [p.grad for p in module.parameters()])
    for actual, expected in zip(grads[1], grads[0], strict=True):
        assert actual.dtype == expected.dtype == torch.float32
        torch.testing.assert_close(actual, expected, rtol=5e-2, atol=5e-2)
