"""Every error of PARITY.md (construction items 2-8, forward items 23, 28-34): rnnkit raises
what torch.nn raises for the same bad call, same exception type, same message."""

import warnings

import pytest
import torch
from torch import nn

import rnnkit
from helpers import assert_same_error, make_pair

# ---------------------------------------------------------------------------
# Construction

BAD_CONSTRUCTIONS = [
    # item 2: dropout
    ("LSTM", (3, 5), dict(dropout="0.5")),
    ("GRU", (3, 5), dict(dropout=True)),
    ("RNN", (3, 5), dict(dropout=-0.1)),
    ("LSTM", (3, 5), dict(dropout=1.5)),
    ("GRU", (3, 5, 2, True, False, 2)),  # positional dropout=2
    # item 4: bias, batch_first
    ("LSTM", (3, 5), dict(bias=1)),
    ("RNN", (3, 5), dict(batch_first=0)),
    ("GRU", (3, 5), dict(bias="yes")),
    # item 5: sizes
    ("LSTM", (3.0, 5), {}),
    ("GRU", (3, 5.0), {}),
    ("RNN", (0, 5), {}),
    ("LSTM", (3, 0), {}),
    ("GRU", (3, -2), {}),
    ("RNN", (3, 5), dict(num_layers=0)),
    ("LSTM", (3, 5, 0), {}),
    # item 6: proj_size
    ("LSTM", (3, 5), dict(proj_size=-1)),
    ("LSTM", (3, 5), dict(proj_size=5)),
    ("LSTM", (3, 5), dict(proj_size=6)),
    # item 7: proj_size on RNN/GRU
    ("RNN", (3, 5), dict(proj_size=0)),
    ("GRU", (3, 5), dict(proj_size=2)),
    # item 8: nonlinearity
    ("RNN", (3, 5), dict(nonlinearity="sigmoid")),
    ("RNN", (3, 5, 1, "gelu"), {}),
    # cells
    ("RNNCell", (3.0, 5), {}),
    ("LSTMCell", (3, "5"), {}),
]


@pytest.mark.parametrize("name, args, kwargs", [
    pytest.param(name, args, kwargs, id=f"{name}{args}{kwargs}")
    for name, args, kwargs in [(c[0], c[1], c[2] if len(c) > 2 else {}) for c in BAD_CONSTRUCTIONS]
])
def test_bad_construction_raises_like_torch(name, args, kwargs):
    assert_same_error(lambda: getattr(nn, name)(*args, **kwargs),
                      lambda: getattr(rnnkit, name)(*args, **kwargs))


@pytest.mark.parametrize("name, kwargs, message", [
    ("LSTM", dict(dropout="0.5"),
     "dropout should be a number in range [0, 1] representing the probability of an element "
     "being zeroed"),
    ("LSTM", dict(bias=1), "bias should be of type bool, got: int"),
    ("LSTM", dict(batch_first=0), "batch_first should be of type bool, got: int"),
    ("LSTM", dict(proj_size=-1),
     "proj_size should be a positive integer or zero to disable projections"),
    ("LSTM", dict(proj_size=5), "proj_size has to be smaller than hidden_size"),
    ("GRU", dict(proj_size=0), "proj_size argument is only supported for LSTM, not RNN or GRU"),
    ("RNN", dict(nonlinearity="gelu"),
     "Unknown nonlinearity 'gelu'. Select from 'tanh' or 'relu'."),
    ("RNN", dict(num_layers=0), "num_layers must be greater than zero"),
])
def test_construction_messages_are_the_documented_ones(name, kwargs, message):
    """The texts of PARITY.md, so a torch upgrade that changes them is noticed."""
    with pytest.raises((ValueError, TypeError)) as info:
        getattr(rnnkit, name)(3, 5, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("dropout", [0, 1, 0.0, 1.0, 0.25])
def test_dropout_bounds_allowed_and_stored_as_float(dropout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref, ours = nn.GRU(3, 5, 2, dropout=dropout), rnnkit.GRU(3, 5, 2, dropout=dropout)
    assert type(ours.dropout) is float and ours.dropout == ref.dropout


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_bidirectional_is_not_type_checked(name):
    ours = getattr(rnnkit, name)(3, 5, bidirectional=1)
    assert ours.bidirectional == getattr(nn, name)(3, 5, bidirectional=1).bidirectional


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_dropout_with_one_layer_warns_like_torch(name):
    expected = _warnings_of(lambda: getattr(nn, name)(3, 5, dropout=0.3))
    actual = _warnings_of(lambda: getattr(rnnkit, name)(3, 5, dropout=0.3))
    assert actual == expected
    assert expected == [(UserWarning,
                         "dropout option adds dropout after all but last recurrent layer, so "
                         "non-zero dropout expects num_layers greater than 1, but got "
                         "dropout=0.3 and num_layers=1")]
    assert _warnings_of(lambda: getattr(rnnkit, name)(3, 5, num_layers=2, dropout=0.3)) == []


def test_rnn_cell_nonlinearity_checked_only_in_forward():
    ref, ours = nn.RNNCell(3, 5, nonlinearity="gelu"), rnnkit.RNNCell(3, 5, nonlinearity="gelu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3)
    error = assert_same_error(lambda: ref(x), lambda: ours(x))
    assert isinstance(error, RuntimeError) and str(error) == "Unknown nonlinearity: gelu"


# ---------------------------------------------------------------------------
# Forward. Each case: module name, constructor kwargs, input shape, hx shapes (None: no hx).
# Shapes use input_size 3, hidden_size 5.

def _f64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


BAD_FORWARDS = [
    # item 28: input ndim
    ("RNN", {}, (4,), None),
    ("GRU", {}, (2, 4, 3, 1), None),
    ("LSTM", {}, (2, 2, 4, 3, 1), None),
    # item 29: hx ndim (checked before the input's features)
    ("RNN", {}, (4, 2, 3), [(2, 5)]),
    ("GRU", {}, (4, 2, 7), [(1, 1, 2, 5)]),
    ("RNN", {}, (4, 3), [(1, 1, 5)]),
    ("GRU", {}, (4, 3), [(5,)]),
    ("LSTM", {}, (4, 2, 3), [(1, 2, 5), (2, 5)]),
    ("LSTM", {}, (4, 2, 3), [(2, 5), (1, 2, 5)]),
    ("LSTM", {}, (4, 3), [(1, 1, 5), (1, 5)]),
    # item 31: features
    ("RNN", {}, (4, 2, 4), None),
    ("GRU", dict(batch_first=True), (2, 4, 2), [(1, 2, 5)]),
    ("LSTM", {}, (4, 7), None),
    # item 32: hx shape
    ("RNN", dict(num_layers=2), (4, 2, 3), [(2, 3, 5)]),
    ("GRU", dict(bidirectional=True), (4, 2, 3), [(1, 2, 5)]),
    ("GRU", dict(batch_first=True), (2, 4, 3), [(1, 4, 5)]),
    ("RNN", {}, (4, 3), [(2, 5)]),
    ("LSTM", {}, (4, 2, 3), [(1, 3, 5), (1, 2, 5)]),
    ("LSTM", {}, (4, 2, 3), [(1, 2, 5), (1, 2, 4)]),
    ("LSTM", dict(proj_size=2), (4, 2, 3), [(1, 2, 5), (1, 2, 5)]),
    ("LSTM", dict(proj_size=2), (4, 2, 3), [(1, 2, 2), (1, 2, 2)]),
    ("LSTM", dict(num_layers=2), (4, 3), [(1, 5), (2, 5)]),
    # items 33: cells, ndim (ValueError from Python) and sizes (RuntimeError from ATen)
    ("RNNCell", {}, (1, 2, 3), None),
    ("RNNCell", {}, (2, 3), [(1, 2, 5)]),
    ("GRUCell", {}, (2, 2, 3), None),
    ("GRUCell", {}, (2, 3), [(1, 1, 5)]),
    ("LSTMCell", {}, (3, 3, 3), None),
    ("LSTMCell", {}, (2, 3), [(1, 2, 5), (2, 5)]),
    ("LSTMCell", {}, (2, 3), [(2, 5), (1, 2, 5)]),
    ("RNNCell", {}, (2, 4), None),
    ("GRUCell", {}, (2, 3), [(3, 5)]),
    ("LSTMCell", {}, (2, 3), [(2, 6), (2, 5)]),
    ("LSTMCell", {}, (2, 3), [(2, 5), (2, 6)]),
    ("LSTMCell", {}, (2, 3), [(2, 5), (3, 5)]),
    ("RNNCell", {}, (3,), [(4,)]),
    ("LSTMCell", {}, (5,), None),
]


def _run_bad_forward(module, input_shape, hx_shapes):
    x = _f64(*input_shape)
    if hx_shapes is None:
        return module(x)
    states = [_f64(*s) for s in hx_shapes]
    return module(x, states[0] if len(states) == 1 else tuple(states))


@pytest.mark.parametrize("name, kwargs, input_shape, hx_shapes", [
    pytest.param(*case, id=f"{case[0]}{case[1] or ''}-x{case[2]}-hx{case[3]}")
    for case in BAD_FORWARDS
])
def test_bad_forward_raises_like_torch(name, kwargs, input_shape, hx_shapes):
    ref, ours = make_pair(name, 3, 5, **kwargs, dtype=torch.float64)
    assert_same_error(lambda: _run_bad_forward(ref, input_shape, hx_shapes),
                      lambda: _run_bad_forward(ours, input_shape, hx_shapes))


@pytest.mark.parametrize("name, input_shape, hx_shapes, error, message", [
    ("RNN", (2, 2, 3, 1), None, ValueError,
     "RNN: Expected input to be 2D or 3D, got 4D tensor instead"),
    ("GRU", (3,), None, ValueError, "GRU: Expected input to be 2D or 3D, got 1D instead"),
    ("RNN", (4, 2, 3), [(2, 5)], RuntimeError,
     "For batched 3-D input, hx should also be 3-D but got 2-D tensor"),
    ("GRU", (4, 3), [(1, 1, 5)], RuntimeError,
     "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"),
    ("LSTM", (4, 2, 3), [(1, 2, 5), (2, 5)], RuntimeError,
     "For batched 3-D input, hx and cx should also be 3-D but got (3-D, 2-D) tensors"),
    ("LSTM", (4, 2, 4), None, RuntimeError,
     "input.size(-1) must be equal to input_size. Expected 3, got 4"),
    ("RNN", (4, 3, 3), [(1, 2, 5)], RuntimeError, "Expected hidden size (1, 3, 5), got [1, 2, 5]"),
    ("RNN", (4, 3), [(2, 5)], RuntimeError, "Expected hidden size (1, 1, 5), got [2, 1, 5]"),
    ("LSTM", (4, 2, 3), [(1, 2, 5), (1, 2, 6)], RuntimeError,
     "Expected hidden[1] size (1, 2, 5), got [1, 2, 6]"),
    ("GRUCell", (2, 2, 3), None, ValueError,
     "GRUCell: Expected input to be 1D or 2D, got 3D instead"),
    ("RNNCell", (2, 3), [(1, 2, 5)], ValueError,
     "RNNCell: Expected hidden to be 1D or 2D, got 3D instead"),
    ("LSTMCell", (2, 3), [(2, 5), (1, 2, 5)], ValueError,
     "LSTMCell: Expected hx[1] to be 1D or 2D, got 3D instead"),
    ("GRUCell", (2, 4), None, RuntimeError, "input has inconsistent input_size: got 4 expected 3"),
    ("RNNCell", (2, 3), [(3, 5)], RuntimeError,
     "Input batch size 2 doesn't match hidden0 batch size 3"),
    ("LSTMCell", (2, 3), [(2, 5), (2, 4)], RuntimeError,
     "hidden1 has inconsistent hidden_size: got 4, expected 5"),
])
def test_forward_messages_are_the_documented_ones(name, input_shape, hx_shapes, error, message):
    ours = getattr(rnnkit, name)(3, 5, dtype=torch.float64)
    with pytest.raises(error) as info:
        _run_bad_forward(ours, input_shape, hx_shapes)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float16])
def test_input_dtype_must_match_weight_dtype(name, input_dtype):
    """Item 30: ValueError naming "RNN" for all three modules."""
    ref, ours = make_pair(name, 3, 5, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=input_dtype)
    error = assert_same_error(lambda: ref(x), lambda: ours(x))
    assert isinstance(error, ValueError)
    assert str(error) == (f"RNN input dtype ({input_dtype}) does not match weight dtype "
                          f"(torch.float64). Convert input: input.to(torch.float64), or convert "
                          f"model: model.to({input_dtype})")


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell"])
def test_device_mismatch_raises_like_torch(name):
    """Item 34, with the meta device standing in for a second device. The modules raise
    torch's Python messages; torch's cells fail in ATen ("Tensor on device cpu is not on the
    expected device meta!"), where rnnkit raises the same type with the modules' message."""
    ref, ours = make_pair(name, 3, 5)
    is_cell = name.endswith("Cell")
    shape, h_shape = ((2, 3), (2, 5)) if is_cell else ((4, 2, 3), (1, 2, 5))

    def run(module, x_device, h_device):
        h = torch.zeros(h_shape, device=h_device)
        return module(torch.randn(shape, device=x_device), (h, h) if "LSTM" in name else h)

    for devices, message in [(("meta", "meta"), "Input and parameter tensors are not at the "
                                                "same device, found input tensor at meta and "
                                                "parameter tensor at cpu"),
                             (("cpu", "meta"), "Input and hidden tensors are not at the same "
                                               "device, found input tensor at cpu and hidden "
                                               "tensor at meta")]:
        if is_cell:
            with pytest.raises(RuntimeError):
                run(ref, *devices)
            with pytest.raises(RuntimeError) as info:
                run(ours, *devices)
            error = info.value
        else:
            error = assert_same_error(lambda: run(ref, *devices), lambda: run(ours, *devices))
        assert str(error) == message


@pytest.mark.parametrize("name, input_shape, hx_shapes, message", [
    ("RNNCell", (2, 3), [(5,)], "hidden0 must be 2-D for 2-D input, got 1-D"),
    ("GRUCell", (3,), [(2, 5)], "hidden0 must be 1-D for 1-D input, got 2-D"),
    ("LSTMCell", (3,), [(5,), (1, 5)], "hidden1 must be 1-D for 1-D input, got 2-D"),
])
def test_cell_state_ndim_must_follow_input_ndim(name, input_shape, hx_shapes, message):
    """torch lets ATen trip over the shapes ("Input batch size 2 doesn't match hidden0 batch
    size 5", "hidden0 has inconsistent hidden_size: got 2, expected 5"): same type here, and a
    message about what the caller actually passed."""
    ref, ours = make_pair(name, 3, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        _run_bad_forward(ref, input_shape, hx_shapes)
    with pytest.raises(RuntimeError) as info:
        _run_bad_forward(ours, input_shape, hx_shapes)
    assert str(info.value) == message


@pytest.mark.parametrize("name, input_shape", [("LSTM", (4, 2, 3)), ("LSTM", (4, 3)),
                                               ("LSTMCell", (2, 3))])
def test_lstm_with_a_single_state_raises_like_torch(name, input_shape):
    ref, ours = make_pair(name, 3, 5, dtype=torch.float64)
    h_shape = {(4, 2, 3): (1, 2, 5), (4, 3): (1, 5), (2, 3): (2, 5)}[input_shape]
    x, h = _f64(*input_shape), _f64(*h_shape)
    assert_same_error(lambda: ref(x, (h,)), lambda: ours(x, (h,)))


@pytest.mark.parametrize("P", [0, 5, 7])
def test_direct_lstm_op_rejects_a_projection_not_narrower_than_hidden(P):
    """torch.nn.LSTM's proj_size rule holds for direct callers of the op too: the kernels
    rely on it (P = H would leave part of the CUDA backward's dh unwritten)."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    T, B, I, H = 3, 2, 4, 5

    def r(*shape):
        return torch.randn(*shape, generator=g)

    args = (r(T, B, I), None, r(B, P), r(B, H), r(4 * H, I), r(4 * H, P), None, None, r(P, H),
            False)
    with pytest.raises(RuntimeError, match="proj_size has to be a positive integer smaller "
                                           "than hidden_size"):
        torch.ops.rnnkit.lstm_layer(*args)
    with pytest.raises(RuntimeError, match="proj_size has to be a positive integer smaller "
                                           "than hidden_size"):
        torch.ops.rnnkit.lstm_layer_forward(*args)
