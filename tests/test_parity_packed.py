"""PackedSequence input against torch.nn and against the per-sequence oracle
(PARITY.md items 35-37)."""

import itertools
import random

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import assert_matches_torch, assert_same_error, make_pair, random_states

PAIRS = {  # name -> extra constructor arguments
    "RNN-tanh": ("RNN", dict(nonlinearity="tanh")),
    "RNN-relu": ("RNN", dict(nonlinearity="relu")),
    "GRU": ("GRU", {}),
    "LSTM": ("LSTM", {}),
    "LSTM-proj": ("LSTM", dict(proj_size=2)),
}


def _pair(kind, dtype=torch.float64, **kwargs):
    name, extra = PAIRS[kind]
    return make_pair(name, 3, 4, **extra, **kwargs, dtype=dtype)


def _random_lengths(batch, steps, sorted_):
    lengths = [steps] + [random.randint(1, steps) for _ in range(batch - 1)]
    if sorted_:
        lengths.sort(reverse=True)
    else:
        random.shuffle(lengths)
    return lengths


def packed_call(lengths, enforce_sorted, batch_first=False):
    """fn for assert_matches_torch: packs the padded input, runs the module, and returns the
    packed output, the output padded again (so that gradients flow through pack and pad) and
    the final states."""
    def fn(module, padded, *states):
        packed = pack_padded_sequence(padded, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=enforce_sorted)
        hx = None if not states else states[0] if len(states) == 1 else tuple(states)
        out, hidden = module(packed, hx)
        repadded, out_lengths = pad_packed_sequence(out, batch_first=batch_first)
        return out, repadded, out_lengths, hidden
    return fn


@pytest.mark.parametrize("kind, layers, bidirectional, order, with_hx", [
    (kind, layers, bidirectional, order, with_hx)
    for kind, layers, bidirectional, order, with_hx in itertools.product(
        PAIRS, (1, 2), (False, True), ("sorted", "unsorted", "unsorted-enforce-false"),
        (False, True))
    if layers == 2 or bidirectional  # keep the grid small: 1-layer unidirectional adds nothing
])
def test_packed_matches_torch(kind, layers, bidirectional, order, with_hx):
    ref, ours = _pair(kind, num_layers=layers, bidirectional=bidirectional)
    batch, steps = 4, 5
    lengths = _random_lengths(batch, steps, sorted_=order == "sorted")
    leaves = [torch.randn(steps, batch, 3, dtype=torch.float64)]
    if with_hx:
        leaves += random_states(ref, batch)
    outputs, _ = assert_matches_torch(ref, ours, leaves,
                                      fn=packed_call(lengths, enforce_sorted=order == "sorted"))
    # batch_sizes, sorted_indices and unsorted_indices are part of the comparison above.
    if order != "sorted":
        assert outputs[2] is not None and outputs[3] is not None


@pytest.mark.parametrize("kind", PAIRS)
def test_packed_ignores_batch_first(kind):
    ref, ours = _pair(kind, num_layers=2, bidirectional=True, batch_first=True)
    lengths = _random_lengths(3, 4, sorted_=False)
    leaves = [torch.randn(3, 4, 3, dtype=torch.float64)] + random_states(ref, 3)
    assert_matches_torch(ref, ours, leaves,
                         fn=packed_call(lengths, enforce_sorted=False, batch_first=True))


@pytest.mark.parametrize("kind", PAIRS)
def test_packed_float32_matches_torch(kind):
    ref, ours = _pair(kind, dtype=torch.float32, num_layers=2, bidirectional=True)
    lengths = _random_lengths(4, 6, sorted_=False)
    leaves = [torch.randn(6, 4, 3)] + random_states(ref, 4)
    assert_matches_torch(ref, ours, leaves, fn=packed_call(lengths, enforce_sorted=False))


def _states_of(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


@pytest.mark.parametrize("kind", PAIRS)
def test_each_sequence_alone_equals_its_slice(kind):
    """The oracle of PARITY.md item 36, for outputs, final states and all gradients."""
    _, ours = _pair(kind, num_layers=2, bidirectional=True)
    batch, steps = 4, 6
    lengths = _random_lengths(batch, steps, sorted_=False)
    x = torch.randn(steps, batch, 3, dtype=torch.float64, requires_grad=True)
    states = [s.requires_grad_() for s in random_states(ours, batch)]
    upstream = torch.randn(steps, batch, 2 * (ours.proj_size or ours.hidden_size),
                           dtype=torch.float64)
    state_upstream = [torch.randn_like(s) for s in states]

    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, hidden = ours(packed, states[0] if len(states) == 1 else tuple(states))
    padded, _ = pad_packed_sequence(out, total_length=steps)
    loss = (padded * upstream).sum() + sum((h * g).sum()
                                           for h, g in zip(_states_of(hidden), state_upstream))
    params = list(ours.parameters())
    grads = torch.autograd.grad(loss, [x, *states, *params])
    grad_x, grad_states, grad_params = grads[0], grads[1:1 + len(states)], grads[1 + len(states):]

    summed_param_grads = [torch.zeros_like(p) for p in params]
    for b, length in enumerate(lengths):
        xb = x[:length, b:b + 1].detach().requires_grad_()
        sb = [s[:, b:b + 1].detach().requires_grad_() for s in states]
        out_b, hidden_b = ours(xb, sb[0] if len(sb) == 1 else tuple(sb))
        torch.testing.assert_close(padded[:length, b:b + 1], out_b, rtol=1e-9, atol=1e-9)
        assert not padded[length:, b].any(), "padded positions must be zero"
        for h_all, h_b in zip(_states_of(hidden), _states_of(hidden_b)):
            torch.testing.assert_close(h_all[:, b:b + 1], h_b, rtol=1e-9, atol=1e-9)

        loss_b = (out_b * upstream[:length, b:b + 1]).sum() + sum(
            (h * g[:, b:b + 1]).sum() for h, g in zip(_states_of(hidden_b), state_upstream))
        grads_b = torch.autograd.grad(loss_b, [xb, *sb, *params])
        torch.testing.assert_close(grad_x[:length, b:b + 1], grads_b[0], rtol=1e-9, atol=1e-9)
        assert not grad_x[length:, b].any()
        for g_all, g_b in zip(grad_states, grads_b[1:1 + len(sb)]):
            torch.testing.assert_close(g_all[:, b:b + 1], g_b, rtol=1e-9, atol=1e-9)
        for total, g_b in zip(summed_param_grads, grads_b[1 + len(sb):]):
            total += g_b
    for g, expected in zip(grad_params, summed_param_grads):
        torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", PAIRS)
def test_packed_output_keeps_batch_sizes_and_indices(kind):
    _, ours = _pair(kind, bidirectional=True)
    lengths = _random_lengths(4, 5, sorted_=False)
    packed = pack_padded_sequence(torch.randn(5, 4, 3, dtype=torch.float64),
                                  torch.tensor(lengths), enforce_sorted=False)
    with torch.no_grad():
        out, _ = ours(packed)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.sorted_indices, packed.sorted_indices)
    assert torch.equal(out.unsorted_indices, packed.unsorted_indices)
    assert out.data.shape == (packed.data.shape[0], 2 * (ours.proj_size or ours.hidden_size))


@pytest.mark.parametrize("kind", PAIRS)
def test_packed_default_hx_has_batch_of_first_step(kind):
    _, ours = _pair(kind, num_layers=2)
    lengths = [3, 2, 2]
    packed = pack_padded_sequence(torch.randn(3, 3, 3, dtype=torch.float64),
                                  torch.tensor(lengths))
    with torch.no_grad():
        _, hidden = ours(packed)
    for state, width in zip(_states_of(hidden), (ours.proj_size or 4, 4)):
        assert state.shape == (2, 3, width)


@pytest.mark.parametrize("kind", PAIRS)
def test_packed_hx_batch_checked_against_first_batch_size(kind):
    """PARITY.md item 37: wrong hx batch for packed input. RNN and GRU raise torch's own
    Python message; torch's LSTM leaves it to C++ ("The size of tensor a ..."), where rnnkit
    raises the same type with the clearer message of its batched check."""
    ref, ours = _pair(kind)
    packed = pack_padded_sequence(torch.randn(4, 3, 3, dtype=torch.float64),
                                  torch.tensor([4, 3, 1]))
    states = random_states(ref, 2)
    hx = states[0] if len(states) == 1 else tuple(states)
    width = ref.proj_size or 4
    if kind.startswith("LSTM"):
        with pytest.raises(RuntimeError):
            ref(packed, hx)
        with pytest.raises(RuntimeError) as info:
            ours(packed, hx)
        assert str(info.value) == f"Expected hidden[0] size (1, 3, {width}), got [1, 2, {width}]"
    else:
        error = assert_same_error(lambda: ref(packed, hx), lambda: ours(packed, hx))
        assert isinstance(error, RuntimeError)
        assert str(error) == f"Expected hidden size (1, 3, {width}), got [1, 2, {width}]"


@pytest.mark.parametrize("kind", PAIRS)
def test_unsorted_packed_hx_batch_checked_with_torch_message(kind):
    """With enforce_sorted=False torch permutes hx before checking it (and fails inside
    index_select); rnnkit checks first and gives the message of item 37."""
    _, ours = _pair(kind)
    packed = pack_padded_sequence(torch.randn(4, 3, 3, dtype=torch.float64),
                                  torch.tensor([1, 4, 3]), enforce_sorted=False)
    states = random_states(ours, 2)
    width = ours.proj_size or 4
    expected = "Expected hidden[0] size" if kind.startswith("LSTM") else "Expected hidden size"
    with pytest.raises(RuntimeError) as info:
        ours(packed, states[0] if len(states) == 1 else tuple(states))
    assert str(info.value) == f"{expected} (1, 3, {width}), got [1, 2, {width}]"
