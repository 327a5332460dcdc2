"""rnnkit.convert: swapping torch.nn's recurrent modules for rnnkit's inside a model, and back."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

import rnnkit

PAIRS = [(nn.RNN, rnnkit.RNN), (nn.LSTM, rnnkit.LSTM), (nn.GRU, rnnkit.GRU),
         (nn.RNNCell, rnnkit.RNNCell), (nn.LSTMCell, rnnkit.LSTMCell),
         (nn.GRUCell, rnnkit.GRUCell)]

# (torch class, arguments) covering every constructor option that must survive.
CONFIGS = [
    (nn.RNN, (3, 5), {}),
    (nn.RNN, (3, 5), dict(nonlinearity="relu", num_layers=2, bias=False, bidirectional=True)),
    (nn.GRU, (3, 5), dict(num_layers=2, batch_first=True, dropout=0.25)),
    (nn.LSTM, (3, 5), {}),
    (nn.LSTM, (3, 5), dict(proj_size=2, num_layers=2, bidirectional=True, batch_first=True)),
    (nn.RNNCell, (3, 5), dict(nonlinearity="relu", bias=False)),
    (nn.GRUCell, (3, 5), {}),
    (nn.LSTMCell, (3, 5), dict(bias=False)),
]
CONFIG_IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(CONFIGS)]

TO_RNNKIT = dict(PAIRS)


def _input_for(module, batch=2, steps=4):
    if isinstance(module, nn.RNNCellBase):
        return torch.randn(batch, module.input_size)
    if module.batch_first:
        return torch.randn(batch, steps, module.input_size)
    return torch.randn(steps, batch, module.input_size)


def _flat(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output for t in _flat(item)]


def _config_of(module):
    names = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
             "bidirectional", "proj_size", "nonlinearity", "mode")
    return {n: getattr(module, n) for n in names if hasattr(module, n)}


@pytest.mark.parametrize("cls,args,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_root_module_round_trip(cls, args, kwargs):
    original = cls(*args, **kwargs)
    params = list(original.parameters())
    converted = rnnkit.convert(original)
    assert type(converted) is TO_RNNKIT[cls]
    assert _config_of(converted) == _config_of(original)
    # The very same Parameter objects, in the same order, under the same names.
    assert all(a is b for a, b in zip(params, converted.parameters(), strict=True))
    assert list(converted.state_dict()) == list(original.state_dict())
    back = rnnkit.convert(converted, to="torch")
    assert type(back) is cls
    assert _config_of(back) == _config_of(original)
    assert all(a is b for a, b in zip(params, back.parameters(), strict=True))


@pytest.mark.parametrize("cls,args,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_converted_module_computes_the_same(cls, args, kwargs):
    original = cls(*args, **kwargs).eval()  # eval: no dropout
    x = _input_for(original)
    expected = _flat(original(x))
    converted = rnnkit.convert(copy.deepcopy(original))
    for got, want in zip(_flat(converted(x)), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_training_flag_dtype_and_requires_grad_are_kept():
    model = nn.Sequential(nn.LSTM(3, 4), nn.GRU(4, 4)).double()
    model[0].eval()
    model[1].weight_hh_l0.requires_grad_(False)
    rnnkit.convert(model)
    assert not model[0].training and model[1].training
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert not model[1].weight_hh_l0.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_device_is_kept_and_torch_weights_are_flattened_again():
    model = nn.Sequential(nn.LSTM(3, 4, num_layers=2)).cuda()
    rnnkit.convert(model)
    assert all(p.is_cuda for p in model.parameters())
    rnnkit.convert(model, to="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "weights are not part of single contiguous chunk"
        model(torch.randn(5, 2, 3, device="cuda"))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.rnn = nn.LSTM(4, 6, batch_first=True)
        self.heads = nn.ModuleList([nn.Linear(6, 2), nn.GRUCell(6, 6)])
        self.extra = nn.ModuleDict({"cell": nn.RNNCell(6, 6), "norm": nn.LayerNorm(6)})
        self.stack = nn.Sequential(nn.GRU(6, 6), nn.Tanh())
        self.again = self.rnn  # the same module reachable twice

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        out, _ = self.again(self.embed(tokens))
        last = self.heads[1](out[:, -1])
        last = self.extra["cell"](self.extra["norm"](last))
        seq, _ = self.stack[0](out.transpose(0, 1))
        return self.heads[0](last + seq[-1])


def test_nested_containers_and_shared_modules():
    model = Encoder()
    reference = copy.deepcopy(model)
    tokens = torch.randint(0, 10, (3, 5))
    params = list(model.parameters())
    assert rnnkit.convert(model) is model
    assert type(model.rnn) is rnnkit.LSTM
    assert model.again is model.rnn  # still one module
    assert type(model.heads[1]) is rnnkit.GRUCell and type(model.heads[0]) is nn.Linear
    assert type(model.extra["cell"]) is rnnkit.RNNCell
    assert type(model.extra["norm"]) is nn.LayerNorm
    assert type(model.stack[0]) is rnnkit.GRU and type(model.stack[1]) is nn.Tanh
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    torch.testing.assert_close(model(tokens), reference(tokens))

    rnnkit.convert(model, to="torch")
    assert type(model.rnn) is nn.LSTM and model.again is model.rnn
    assert type(model.stack[0]) is nn.GRU
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))


def test_tied_parameters_stay_tied():
    model = nn.ModuleList([nn.GRU(4, 4), nn.GRU(4, 4)])
    model[1].weight_hh_l0 = model[0].weight_hh_l0
    rnnkit.convert(model)
    assert model[1].weight_hh_l0 is model[0].weight_hh_l0
    assert model[1]._flat_weights[1] is model[0].weight_hh_l0


def test_optimizer_built_before_conversion_trains_the_converted_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4))
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    rnnkit.convert(model)
    x = torch.randn(5, 2, 3)
    for m, o in ((model, opt), (reference, ref_opt)):
        for _ in range(2):
            o.zero_grad()
            m(x)[0].square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_model_without_recurrent_modules_is_unchanged():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ModuleList([nn.Conv1d(2, 2, 3)]))
    before = [(name, m) for name, m in model.named_modules()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rnnkit.convert(model) is model
        assert rnnkit.convert(model, to="torch") is model
    assert [(name, m) for name, m in model.named_modules()] == before


def test_already_converted_modules_are_left_quietly():
    model = nn.Sequential(rnnkit.LSTM(3, 4), nn.GRU(4, 4))
    first = model[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rnnkit.convert(model)
    assert model[0] is first and type(model[1]) is rnnkit.GRU


def test_forward_hooks_move_with_the_module():
    lstm = nn.LSTM(3, 4)
    seen = []
    handle = lstm.register_forward_hook(lambda module, args, output: seen.append(module))
    converted = rnnkit.convert(lstm)
    converted(torch.randn(2, 1, 3))
    assert seen == [converted]
    handle.remove()
    converted(torch.randn(2, 1, 3))
    assert len(seen) == 1


def test_user_attributes_move_with_the_module():
    gru = nn.GRU(3, 4)
    gru.tag = "encoder"
    assert rnnkit.convert(gru).tag == "encoder"


class CustomLSTM(nn.LSTM):
    def forward(self, input, hx=None):
        output, state = super().forward(input, hx)
        return output * 2, state


def test_subclass_is_left_with_a_warning_naming_it():
    model = nn.Sequential(nn.Linear(3, 3), CustomLSTM(3, 4), nn.GRU(4, 4))
    custom = model[1]
    with pytest.warns(UserWarning, match=r"rnnkit.convert: left 1 \(CustomLSTM\) unconverted"):
        rnnkit.convert(model)
    assert model[1] is custom
    assert type(model[2]) is rnnkit.GRU  # the rest is still converted


def test_root_subclass_is_returned_as_is():
    custom = CustomLSTM(3, 4)
    with pytest.warns(UserWarning, match=r"left the model \(CustomLSTM\)"):
        assert rnnkit.convert(custom) is custom


def test_parametrized_module_is_left_with_a_warning():
    class Symmetric(nn.Module):
        def forward(self, w):
            return w.triu() + w.triu(1).transpose(0, 1)

    model = nn.Sequential(nn.RNNCell(4, 4))
    parametrize.register_parametrization(model[0], "weight_hh", Symmetric())
    cell = model[0]
    with pytest.warns(UserWarning, match="parametrizations"):
        rnnkit.convert(model)
    assert model[0] is cell


def test_old_style_weight_norm_is_left_with_a_warning():
    model = nn.Sequential(nn.LSTM(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the old weight_norm
        nn.utils.weight_norm(model[0], "weight_hh_l0")
    lstm = model[0]
    with pytest.warns(UserWarning, match="parameters are not the standard ones"):
        rnnkit.convert(model)
    assert model[0] is lstm


def test_pruned_module_is_left_with_a_warning():
    model = nn.Sequential(nn.GRU(3, 4))
    prune.l1_unstructured(model[0], "weight_ih_l0", amount=0.5)
    gru = model[0]
    with pytest.warns(UserWarning, match="unconverted"):
        rnnkit.convert(model)
    assert model[0] is gru


def test_bad_target_and_non_module():
    with pytest.raises(ValueError, match="to must be 'rnnkit' or 'torch'"):
        rnnkit.convert(nn.LSTM(3, 4), to="cudnn")
    with pytest.raises(TypeError, match="expects an nn.Module"):
        rnnkit.convert([nn.LSTM(3, 4)])


def test_dropout_with_one_layer_does_not_warn_again():
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        gru = nn.GRU(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = rnnkit.convert(gru)
    assert converted.dropout == 0.5


def test_converted_state_dict_loads_into_torch_and_back():
    model = nn.Sequential(nn.LSTM(3, 4, num_layers=2), nn.GRUCell(4, 4))
    state = copy.deepcopy(model.state_dict())
    rnnkit.convert(model)
    fresh = nn.Sequential(nn.LSTM(3, 4, num_layers=2), nn.GRUCell(4, 4))
    fresh.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(state, strict=True)
