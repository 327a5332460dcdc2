"""Construction parity (PARITY.md items 1, 9-11, 13-15, 17): signatures, attributes, parameters,
initialisation, repr, device/dtype and conversions, compared with torch.nn built the same way."""

import inspect
import itertools
import warnings

import pytest
import torch
from torch import nn

import rnnkit
from helpers import CELLS, MODULES, assert_matches_torch, call, make_pair, random_input

ATTRIBUTES = ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
              "dropout", "bidirectional", "proj_size")

CONFIGS = [
    ("RNN", (3, 5), {}),
    ("RNN", (3, 5, 2, "relu", False, True, 0.5, True), {}),
    ("RNN", (2, 4), dict(num_layers=3, nonlinearity="relu", bidirectional=True)),
    ("GRU", (3, 5), {}),
    ("GRU", (3, 5, 3, False, True, 0.25, True), {}),
    ("LSTM", (3, 5), {}),
    ("LSTM", (3, 5, 2, False, True, 0.5, True, 2), {}),
    ("LSTM", (4, 6), dict(num_layers=3, proj_size=3, bias=False)),
    ("LSTM", (4, 6), dict(proj_size=1, bidirectional=True)),
]


def _config_id(config):
    name, args, kwargs = config
    return f"{name}{args}{kwargs or ''}"


def _both(name, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dropout with one layer
        return getattr(nn, name)(*args, **kwargs), getattr(rnnkit, name)(*args, **kwargs)


def _parameters(fn):
    """(name, kind, default) of each parameter: annotations aside (rnnkit's are strings)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_signature_matches_torch(name):
    """torch's module constructors take (*args, **kwargs) and their positional order is
    checked by the positional CONFIGS below; the cells' signatures are explicit."""
    ours, ref = getattr(rnnkit, name), getattr(nn, name)
    assert _parameters(ours) == _parameters(ref)
    assert [p[0] for p in _parameters(ours.forward)] == [p[0] for p in _parameters(ref.forward)]
    assert _parameters(ours.forward)[-1][2] is None  # hx=None


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_is_a_torch_base_class(name):
    base = nn.RNNCellBase if name in CELLS else nn.RNNBase
    assert issubclass(getattr(rnnkit, name), base)
    assert getattr(rnnkit, name).__name__ == name


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_attributes_match_torch(config):
    ref, ours = _both(*config)
    for attribute in ATTRIBUTES + (("nonlinearity",) if config[0] == "RNN" else ()):
        assert getattr(ours, attribute) == getattr(ref, attribute), attribute
        assert type(getattr(ours, attribute)) is type(getattr(ref, attribute)), attribute
    assert ours.training and ref.training


@pytest.mark.parametrize("name", ["RNN", "GRU"])
def test_proj_size_attribute_exists_and_is_zero(name):
    assert getattr(rnnkit, name)(3, 5).proj_size == 0


@pytest.mark.parametrize("name, kwargs", [
    ("RNNCell", {}), ("RNNCell", dict(bias=False, nonlinearity="relu")), ("GRUCell", {}),
    ("GRUCell", dict(bias=False)), ("LSTMCell", {}), ("LSTMCell", dict(bias=False)),
])
def test_cell_attributes_and_parameters_match_torch(name, kwargs):
    ref, ours = _both(name, (3, 5), kwargs)
    for attribute in ("input_size", "hidden_size", "bias") + (
            ("nonlinearity",) if name == "RNNCell" else ()):
        assert getattr(ours, attribute) == getattr(ref, attribute)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in ref.named_parameters()]
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_parameter_names_order_and_shapes_match_torch(config):
    ref, ours = _both(*config)
    expected = [(n, p.shape) for n, p in ref.named_parameters()]
    assert [(n, p.shape) for n, p in ours.named_parameters()] == expected
    assert list(ours.state_dict()) == [n for n, _ in expected]
    assert ours._flat_weights_names == ref._flat_weights_names == [n for n, _ in expected]
    assert list(ours.buffers()) == []
    assert [[w.shape for w in layer] for layer in ours.all_weights] == [
        [w.shape for w in layer] for layer in ref.all_weights]
    assert ours._all_weights == ref._all_weights
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters()))


def test_parameter_names_spelled_out_for_a_bidirectional_projected_lstm():
    """Item 10-11 written down, independent of torch."""
    lstm = rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    names = []
    for layer, suffix in itertools.product(range(2), ("", "_reverse")):
        names += [f"{w}_l{layer}{suffix}" for w in ("weight_ih", "weight_hh", "bias_ih",
                                                    "bias_hh", "weight_hr")]
    assert [n for n, _ in lstm.named_parameters()] == names
    assert lstm.weight_ih_l0.shape == (20, 3)
    assert lstm.weight_ih_l1_reverse.shape == (20, 4)
    assert lstm.weight_hh_l1.shape == (20, 2)
    assert lstm.bias_hh_l0_reverse.shape == (20,)
    assert lstm.weight_hr_l1_reverse.shape == (2, 5)


@pytest.mark.parametrize("config", CONFIGS + [("RNNCell", (3, 5), {}), ("GRUCell", (4, 2), {}),
                                              ("LSTMCell", (2, 6), dict(bias=False))],
                         ids=_config_id)
def test_same_seed_gives_bit_identical_init(config):
    name, args, kwargs = config
    seed = torch.randint(0, 2**31, ()).item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(seed)
        ref = getattr(nn, name)(*args, **kwargs)
        torch.manual_seed(seed)
        ours = getattr(rnnkit, name)(*args, **kwargs)
    for (name_r, p_r), (name_o, p_o) in zip(ref.named_parameters(), ours.named_parameters(),
                                            strict=True):
        assert name_r == name_o
        assert torch.equal(p_r, p_o), name_o
    bound = 1 / ref.hidden_size ** 0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_repr_matches_torch(config):
    ref, ours = _both(*config)
    assert repr(ours) == repr(ref)


def test_repr_strings_spelled_out():
    assert repr(rnnkit.LSTM(3, 5, proj_size=2, num_layers=2, bias=False, batch_first=True,
                            dropout=0.5, bidirectional=True)) == (
        "LSTM(3, 5, proj_size=2, num_layers=2, bias=False, batch_first=True, dropout=0.5, "
        "bidirectional=True)")
    assert repr(rnnkit.RNN(3, 5, nonlinearity="relu")) == "RNN(3, 5)"
    assert repr(rnnkit.GRU(3, 5)) == "GRU(3, 5)"
    assert repr(rnnkit.RNNCell(3, 5, bias=False, nonlinearity="relu")) == (
        "RNNCell(3, 5, bias=False, nonlinearity=relu)")
    assert repr(rnnkit.LSTMCell(3, 5, bias=False)) == "LSTMCell(3, 5, bias=False)"
    assert repr(rnnkit.GRUCell(3, 5)) == "GRUCell(3, 5)"


@pytest.mark.parametrize("name", MODULES + CELLS)
def test_device_and_dtype_keywords_are_honoured(name):
    ours = getattr(rnnkit, name)(3, 5, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in ours.parameters())
    meta = getattr(rnnkit, name)(3, 5, device="meta", dtype=torch.float16)
    assert all(p.device.type == "meta" and p.dtype == torch.float16 for p in meta.parameters())


@pytest.mark.parametrize("name", MODULES)
def test_flatten_parameters_exists_and_changes_nothing(name):
    ref, ours = make_pair(name, 3, 5, num_layers=2, dtype=torch.float64)
    before = [p.clone() for p in ours.parameters()]
    assert ours.flatten_parameters() is None
    assert all(torch.equal(a, b) for a, b in zip(before, ours.parameters()))
    assert_matches_torch(ref, ours, [random_input(ref, 3, 2)])


def _convert(module, how):
    if how == "double":
        return module.double()
    if how == "to-float64":
        return module.to(torch.float64)
    if how == "to-cpu-float64":
        return module.to("cpu", torch.float64)
    if how == "half-then-float":
        return module.half().float()
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["double", "to-float64", "to-cpu-float64", "half-then-float"])
@pytest.mark.parametrize("name", MODULES + CELLS)
def test_conversions_take_effect_in_forward(name, how):
    ref, ours = make_pair(name, 3, 5)  # float32
    ref, ours = _convert(ref, how), _convert(ours, how)
    dtype = next(ref.parameters()).dtype
    assert all(p.dtype == dtype for p in ours.parameters())
    if name in MODULES:
        assert all(w.dtype == dtype for w in ours._flat_weights)
        x = random_input(ref, 3, 2)
    else:
        x = torch.randn(2, 3, dtype=dtype)
    assert_matches_torch(ref, ours, [x])


@pytest.mark.parametrize("name", MODULES)
def test_half_module_runs_half_input_like_torch(name):
    ref, ours = make_pair(name, 3, 5)
    ref, ours = ref.half(), ours.half()
    x = random_input(ref, 3, 2)
    assert x.dtype == torch.float16
    with torch.no_grad():
        expected, actual = call(ref, x), call(ours, x)
    assert actual[0].dtype == torch.float16
    torch.testing.assert_close(actual[0], expected[0], rtol=2e-2, atol=2e-2)
