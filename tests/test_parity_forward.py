"""Forward outputs, final states and every gradient of RNN, GRU and LSTM against torch.nn,
over the grid of configurations (PARITY.md items 11-12, 18-21, 23, 26)."""

import itertools

import pytest
import torch

import rnnkit.functional
from helpers import (assert_matches_torch, call, flatten, make_pair, random_input, random_sizes,
                     random_states)


def _grid():
    for dtype, bias, batch_first, bidirectional, layers, with_hx in itertools.product(
            (torch.float64, torch.float32), (True, False), (False, True), (False, True),
            (1, 2, 3), (False, True)):
        common = (dtype, bias, batch_first, bidirectional, layers, with_hx)
        for nonlinearity in ("tanh", "relu"):
            yield pytest.param("RNN", dict(nonlinearity=nonlinearity), *common)
        yield pytest.param("GRU", {}, *common)
        for proj in (False, True):
            yield pytest.param("LSTM", dict(proj=proj), *common)


def _ids(value):
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, dict):
        return "-".join(f"{k}={v}" for k, v in value.items()) or "-"
    return None


@pytest.mark.parametrize("name, extra, dtype, bias, batch_first, bidirectional, layers, with_hx",
                         list(_grid()), ids=_ids)
def test_outputs_states_and_all_gradients_match_torch(name, extra, dtype, bias, batch_first,
                                                      bidirectional, layers, with_hx):
    extra = dict(extra)
    sizes = random_sizes(proj=extra.pop("proj", False))
    steps, batch = sizes.pop("steps"), sizes.pop("batch")
    ref, ours = make_pair(name, **sizes, **extra, num_layers=layers, bias=bias,
                          batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)
    leaves = [random_input(ref, steps, batch)]
    if with_hx:
        leaves += random_states(ref, batch)
    assert_matches_torch(ref, ours, leaves)


def _small_pair(name, dtype=torch.float64, **kwargs):
    kwargs = {"proj_size": 2, **kwargs} if name == "LSTM" else kwargs
    return make_pair(name, 3, 4, num_layers=2, bidirectional=True, dtype=dtype, **kwargs)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_unbatched_input_matches_torch_and_batch_of_one(name, with_hx, batch_first):
    ref, ours = _small_pair(name, batch_first=batch_first)
    leaves = [random_input(ref, 5, None)] + (random_states(ref, None) if with_hx else [])
    outputs, _ = assert_matches_torch(ref, ours, leaves)
    assert outputs[0].shape == (5, 2 * (ref.proj_size or ref.hidden_size))

    # Equal to the batched run with N=1 (batch_first is ignored for 2-D input).
    batched = [leaves[0].unsqueeze(0 if batch_first else 1)] + [s.unsqueeze(1) for s in leaves[1:]]
    with torch.no_grad():
        expected = call(ours, *batched)
        actual = call(ours, *leaves)
    torch.testing.assert_close(actual[0], expected[0].squeeze(0 if batch_first else 1))
    states_expected = expected[1] if name == "LSTM" else (expected[1],)
    states_actual = actual[1] if name == "LSTM" else (actual[1],)
    for a, e in zip(states_actual, states_expected):
        torch.testing.assert_close(a, e.squeeze(1))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_empty_batch_forward_and_backward_match_torch(name, batch_first):
    ref, ours = _small_pair(name, batch_first=batch_first)
    for leaves in ([random_input(ref, 4, 0)], [random_input(ref, 4, 0)] + random_states(ref, 0)):
        outputs, _ = assert_matches_torch(ref, ours, leaves)
        assert outputs[0].numel() == 0


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_lstm_accepts_hx_as_list_and_rnn_gru_return_single_state(name):
    ref, ours = _small_pair(name)
    x = random_input(ref, 3, 2)
    states = random_states(ref, 2)
    hx = list(states) if name == "LSTM" else states[0]
    with torch.no_grad():
        expected, actual = ref(x, hx), ours(x, hx)
    assert type(actual) is tuple and len(actual) == 2
    if name == "LSTM":
        assert isinstance(actual[1], tuple) and len(actual[1]) == 2
        pairs = [(actual[0], expected[0]), (actual[1][0], expected[1][0]),
                 (actual[1][1], expected[1][1])]
    else:
        assert isinstance(actual[1], torch.Tensor)
        pairs = [(actual[0], expected[0]), (actual[1], expected[1])]
    for a, e in pairs:
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_default_hx_is_zeros_of_input_dtype(name):
    ref, ours = _small_pair(name)
    x = random_input(ref, 3, 2)
    zeros = [torch.zeros_like(s) for s in random_states(ref, 2)]
    with torch.no_grad():
        expected = call(ours, x, *zeros)
        actual = call(ours, x)
    for a, e in zip(flatten(actual), flatten(expected), strict=True):
        assert a.dtype == torch.float64 and torch.equal(a, e)


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_bidirectional_layout(name):
    """output[..., :H_out] is the forward direction, output[..., H_out:] the reverse one, and
    h_n[-1] equals output[0, :, H_out:] (PARITY.md item 19)."""
    _, ours = _small_pair(name)
    width = ours.proj_size or ours.hidden_size
    x = random_input(ours, 5, 3)
    with torch.no_grad():
        output, hidden = ours(x)
    h_n = hidden[0] if name == "LSTM" else hidden
    assert output.shape == (5, 3, 2 * width)
    assert h_n.shape == (4, 3, width)
    torch.testing.assert_close(h_n[-1], output[0, :, width:], rtol=0, atol=0)
    torch.testing.assert_close(h_n[-2], output[-1, :, :width], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_sequence_length_zero_raises_like_torch(name):
    ref, ours = _small_pair(name)
    x = random_input(ref, 0, 2)
    with pytest.raises(RuntimeError) as expected:
        ref(x)
    with pytest.raises(RuntimeError) as actual:
        ours(x)
    assert str(actual.value) == str(expected.value)
    assert str(actual.value) == "Expected sequence length to be larger than 0 in RNN"


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_one_layer_sequence_length_zero_raises_like_torch(name):
    # One layer, one direction: the module calls its op directly (RNNBase._compute).
    ref, ours = make_pair(name, 3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="^Expected sequence length to be larger than 0 in RNN$"):
        ours(random_input(ref, 0, 2))


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("name, extra", [("RNN", dict(nonlinearity="relu")), ("GRU", {}),
                                         ("LSTM", {}), ("LSTM", dict(proj_size=2)),
                                         ("LSTM", dict(bias=False))])
def test_one_layer_module_calls_its_op_directly(name, extra, grad, monkeypatch):
    # A one-layer, one-direction module (a stream's T = 1 step) calls its layer op with no
    # Python between; its results and final states are what the stack's path gives.
    taken = []
    direct = rnnkit.ops.direct

    def spy(op, device_type):
        taken.append(direct(op, device_type))
        return taken[-1]

    monkeypatch.setattr(rnnkit.ops, "direct", spy)
    ref, ours = make_pair(name, 3, 4, dtype=torch.float64, **extra)
    steps = int(torch.randint(1, 4, ()))
    leaves = [random_input(ref, steps, 2)] + random_states(ref, 2)
    with torch.set_grad_enabled(grad):
        expected_output, expected = call(ref, *leaves)
        output, hidden = call(ours, *leaves)
    assert taken and all(op is not None for op in taken)
    torch.testing.assert_close(output, expected_output, rtol=1e-9, atol=1e-9)
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    for state, torch_state in zip(states, flatten(expected)):
        torch.testing.assert_close(state, torch_state, rtol=1e-9, atol=1e-9)
        assert state._base is None and state.requires_grad == grad
        before = state.clone()
        output.detach().zero_()  # the final states are tensors of their own
        torch.testing.assert_close(state, before, rtol=0, atol=0)
        state.detach_()  # truncated backpropagation through time, as with torch.nn
        assert not state.requires_grad


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_functional_api_with_torch_flat_weights_matches_torch(name):
    """rnnkit.functional runs torch.nn's own flat weight list (time-major input)."""
    ref, _ = _small_pair(name)
    x = random_input(ref, 4, 3)
    states = random_states(ref, 3)
    kwargs = dict(num_layers=ref.num_layers, bias=ref.bias, bidirectional=ref.bidirectional)
    fn = getattr(rnnkit.functional, name.lower())
    if name == "LSTM":
        actual = fn(x, tuple(states), ref._flat_weights, proj_size=ref.proj_size, **kwargs)
        actual = (actual[0], *actual[1])
    else:
        actual = fn(x, states[0], ref._flat_weights, **kwargs)
    with torch.no_grad():
        expected = ref(x, tuple(states) if name == "LSTM" else states[0])
    expected = (expected[0], *expected[1]) if name == "LSTM" else expected
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)
