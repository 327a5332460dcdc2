"""RNNCell (tanh, relu), GRUCell and LSTMCell against torch.nn: outputs and every gradient,
batched and unbatched, N=0, hidden_size=0 (PARITY.md items 1, 9, 22, 26)."""

import itertools

import pytest
import torch

from helpers import assert_matches_torch, make_pair, random_states

CELL_KINDS = {
    "RNNCell-tanh": ("RNNCell", dict(nonlinearity="tanh")),
    "RNNCell-relu": ("RNNCell", dict(nonlinearity="relu")),
    "GRUCell": ("GRUCell", {}),
    "LSTMCell": ("LSTMCell", {}),
}


def cell_pair(kind, input_size=3, hidden_size=5, dtype=torch.float64, **kwargs):
    name, extra = CELL_KINDS[kind]
    return make_pair(name, input_size, hidden_size, **extra, **kwargs, dtype=dtype)


@pytest.mark.parametrize("kind, bias, dtype, batch, with_hx", list(itertools.product(
    CELL_KINDS, (True, False), (torch.float64, torch.float32), (1, 4, None), (False, True))))
def test_cell_outputs_and_all_gradients_match_torch(kind, bias, dtype, batch, with_hx):
    """batch=None: unbatched 1-D input and state."""
    ref, ours = cell_pair(kind, bias=bias, dtype=dtype)
    lead = () if batch is None else (batch,)
    leaves = [torch.randn(*lead, 3, dtype=dtype)]
    if with_hx:
        leaves += random_states(ref, batch)
    outputs, _ = assert_matches_torch(ref, ours, leaves)
    for output in outputs:
        assert output.shape == (*lead, 5)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_cell_with_empty_batch_matches_torch(kind):
    ref, ours = cell_pair(kind)
    for leaves in ([torch.randn(0, 3, dtype=torch.float64)],
                   [torch.randn(0, 3, dtype=torch.float64)] + random_states(ref, 0)):
        outputs, _ = assert_matches_torch(ref, ours, leaves)
        assert all(o.shape == (0, 5) for o in outputs)


@pytest.mark.parametrize("which", [0, 1])
def test_backward_through_one_lstm_cell_output_matches_torch(which):
    ref, ours = cell_pair("LSTMCell")
    leaves = [torch.randn(3, 3, dtype=torch.float64)] + random_states(ref, 3)

    def only_one_output(module, x, h, c):
        return module(x, (h, c))[which]

    assert_matches_torch(ref, ours, leaves, fn=only_one_output)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_cell_unrolled_over_a_sequence_matches_torch(kind):
    """Feeding each step's state to the next step: gradients flow back through the chain."""
    ref, ours = cell_pair(kind)
    leaves = [torch.randn(4, 2, 3, dtype=torch.float64)] + random_states(ref, 2)

    def unroll(module, xs, *states):
        outputs = []
        for x in xs:
            result = module(x, states[0] if len(states) == 1 else tuple(states))
            states = result if isinstance(result, tuple) else (result,)
            outputs.append(states[0])
        return torch.stack(outputs), states

    assert_matches_torch(ref, ours, leaves, fn=unroll)


@pytest.mark.parametrize("kind, hidden_size", [("RNNCell-tanh", 512), ("GRUCell", 192),
                                                ("LSTMCell", 128)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cell_with_narrow_input_at_large_batch_matches_torch(kind, hidden_size, dtype):
    # dW_ih with 2-11 columns over a batch large enough that it is computed with the
    # narrow operand first (csrc/transposed_product.h).
    input_size = int(torch.randint(2, 12, ()).item())
    ref, ours = cell_pair(kind, input_size=input_size, hidden_size=hidden_size, dtype=dtype)
    leaves = [torch.randn(128, input_size, dtype=dtype)] + random_states(ref, 128)
    assert_matches_torch(ref, ours, leaves)
