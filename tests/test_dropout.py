"""Inter-layer dropout (PARITY.md item 24): train vs eval, changes of .dropout between calls,
p=0 and p=1, compared with torch.nn where the result is deterministic."""

import pytest
import torch

from helpers import assert_matches_torch, call, make_pair, random_input, random_states

KINDS = {
    "RNN": ("RNN", {}),
    "GRU": ("GRU", {}),
    "LSTM": ("LSTM", {}),
    "LSTM-proj": ("LSTM", dict(proj_size=2)),
}


def _pair(kind, dropout=0.5, layers=3, bidirectional=True):
    name, extra = KINDS[kind]
    return make_pair(name, 3, 4, num_layers=layers, dropout=dropout,
                     bidirectional=bidirectional, **extra, dtype=torch.float64)


def _output(module, x, *states):
    with torch.no_grad():
        return call(module, x, *states)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_eval_is_deterministic_and_equals_torch_eval(kind):
    ref, ours = _pair(kind)
    ref.eval(), ours.eval()
    x = random_input(ref, 5, 3)
    assert_matches_torch(ref, ours, [x] + random_states(ref, 3))
    assert torch.equal(_output(ours, x), _output(ours, x))


@pytest.mark.parametrize("kind", KINDS)
def test_train_is_random_and_differs_from_eval(kind):
    _, ours = _pair(kind)
    x = random_input(ours, 5, 3)
    first, second = _output(ours, x), _output(ours, x)
    assert not torch.equal(first, second)
    ours.eval()
    assert not torch.equal(first, _output(ours, x))


@pytest.mark.parametrize("kind", KINDS)
def test_train_with_same_seed_equals_torch(kind):
    """Same RNG stream as torch: dropout is applied where torch applies it (after every layer
    but the last, on both directions' concatenated output) with torch's 1/(1-p) scaling."""
    ref, ours = _pair(kind)
    x = random_input(ref, 5, 3)
    seed = torch.randint(0, 2**31, ()).item()

    def seeded(module, *leaves):
        torch.manual_seed(seed)
        return call(module, *leaves)

    assert_matches_torch(ref, ours, [x] + random_states(ref, 3), fn=seeded)


@pytest.mark.parametrize("kind", KINDS)
def test_changing_dropout_between_calls_takes_effect(kind):
    ref, ours = _pair(kind)
    x = random_input(ref, 5, 3)
    ours.dropout = 0.0
    ref.eval()
    torch.testing.assert_close(_output(ours, x), _output(ref, x), rtol=1e-9, atol=1e-9)
    ours.dropout = 0.5
    assert not torch.allclose(_output(ours, x), _output(ref, x))
    ours.dropout = 0.0
    torch.testing.assert_close(_output(ours, x), _output(ref, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_zero_in_train_equals_torch_eval_with_gradients(kind):
    ref, ours = _pair(kind, dropout=0.0)
    ref.eval()  # ours stays in training mode
    assert ours.training
    assert_matches_torch(ref, ours, [random_input(ref, 4, 2)] + random_states(ref, 2))


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_one_zeroes_what_later_layers_see(kind):
    """p=1: every layer after the first sees zeros. Deterministic, so equal to torch in train
    mode, gradients included; and the last layer equals a one-layer module on zeros."""
    ref, ours = _pair(kind, dropout=1.0, layers=2)
    x = random_input(ref, 4, 2)
    states = random_states(ref, 2)
    assert_matches_torch(ref, ours, [x] + states)

    name, extra = KINDS[kind]
    _, last = make_pair(name, ours.weight_ih_l1.shape[1], 4, bidirectional=True,
                        **extra, dtype=torch.float64)
    last.load_state_dict({k.replace("_l1", "_l0"): v for k, v in ours.state_dict().items()
                          if "_l1" in k})
    zeros = torch.zeros(4, 2, ours.weight_ih_l1.shape[1], dtype=torch.float64)
    torch.testing.assert_close(_output(ours, x, *states),
                               _output(last, zeros, *[s[2:] for s in states]), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_single_layer_has_no_dropout(kind):
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        ref, ours = _pair(kind, layers=1)
    x = random_input(ref, 4, 2)
    ref.eval()
    torch.testing.assert_close(_output(ours, x), _output(ref, x), rtol=1e-9, atol=1e-9)
