"""int8 weights for the recurrent modules of a model, for CPU inference.

    model = rnnkit.quantize(model)   # every RNN/LSTM/GRU and cell -> rnnkit's int8 module

Replaces, in place like rnnkit.convert, torch.nn's and rnnkit's float RNN, LSTM, GRU,
RNNCell, LSTMCell and GRUCell by rnnkit.quantized_modules' (per-row int8 weights,
float32 biases), and the modules of torch's dynamic quantization
(torch.ao.nn.quantized.dynamic.LSTM, GRU and the cells) by the same, taking their
int8 weights as they are. Modules that cannot be quantized faithfully are left
alone with a warning naming them; a module on another device than the CPU is an
error.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from rnnkit import modules as rk
from rnnkit import quantized_modules as qm
# (rnnkit.convert is the function: the module's names come from its path.)
from rnnkit.convert import (_constructor_args, _expected_parameter_names, _unsupported_reason,
                            carry_over, replace_modules)

__all__ = ["quantize"]

_FLOAT = {nn.RNN: qm.QuantizedRNN, rk.RNN: qm.QuantizedRNN, nn.LSTM: qm.QuantizedLSTM,
          rk.LSTM: qm.QuantizedLSTM, nn.GRU: qm.QuantizedGRU, rk.GRU: qm.QuantizedGRU,
          nn.RNNCell: qm.QuantizedRNNCell, rk.RNNCell: qm.QuantizedRNNCell,
          nn.LSTMCell: qm.QuantizedLSTMCell, rk.LSTMCell: qm.QuantizedLSTMCell,
          nn.GRUCell: qm.QuantizedGRUCell, rk.GRUCell: qm.QuantizedGRUCell}


_QUANTIZED = (qm._QuantizedStack, qm._QuantizedCell)


def _torch_dynamic() -> dict:
    """torch's dynamically quantized modules -> ours (none if torch.ao is gone)."""
    try:
        from torch.ao.nn.quantized import dynamic as tq
    except ImportError:
        return {}
    return {tq.LSTM: qm.QuantizedLSTM, tq.GRU: qm.QuantizedGRU,
            tq.RNNCell: qm.QuantizedRNNCell, tq.LSTMCell: qm.QuantizedLSTMCell,
            tq.GRUCell: qm.QuantizedGRUCell}


def _check_device(module: nn.Module, tensors) -> None:
    for t in tensors:
        if t is not None and t.device.type != "cpu":
            raise RuntimeError(
                f"rnnkit.quantize: {type(module).__name__} is on {t.device}; the int8 modules "
                "run on the CPU: move the model there first (model.cpu())")


def _build(target: type, args: tuple, kwargs: dict, weights: dict,
           scales: dict | None) -> nn.Module:
    """A `target` of this configuration holding `weights` (float, or int8 with `scales`)."""
    if issubclass(target, qm._QuantizedCell):
        new = target(*args, **kwargs)
        new._load_weights(weights, scales)
    else:
        with warnings.catch_warnings():
            # The original's constructor already warned about dropout with one layer.
            warnings.filterwarnings("ignore", message="dropout option adds dropout")
            new = target(*args, **kwargs, device="meta")
        new._become_quantized(weights, scales)
    return new


def _from_float(module: nn.Module, target: type):
    reason = _unsupported_reason(module)
    if reason is not None:
        return reason
    names = _expected_parameter_names(module)
    weights = {n: getattr(module, n) for n in names if getattr(module, n, None) is not None}
    _check_device(module, weights.values())
    bad = [n for n, w in weights.items() if not torch.isfinite(w).all()]
    if bad:
        return f"its weights {bad} hold NaN or infinity"
    new = _build(target, *_constructor_args(module), weights, None)
    carry_over(module, new)
    new.eval()
    return new


def _int8_of(name: str, w: torch.Tensor):
    """(int8 values, per-row scales) of one of torch's quantized weights, or the reason
    it has no faithful equivalent."""
    if w.dtype != torch.qint8:
        return f"{name} is {w.dtype}, not qint8"
    rows = w.size(0)
    if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        if w.q_zero_point() != 0:
            return f"{name} has a zero point ({w.q_zero_point()})"
        scales = torch.full((rows,), w.q_scale(), dtype=torch.float32)
    elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if w.q_per_channel_axis() != 0 or bool((w.q_per_channel_zero_points() != 0).any()):
            return f"{name} is not quantized per output row with zero points 0"
        scales = w.q_per_channel_scales().float()
    else:
        return f"{name} has the quantization scheme {w.qscheme()}"
    return w.int_repr().contiguous(), scales.contiguous()


def _from_torch_dynamic(module: nn.Module, target: type):
    """Ours from one of torch's dynamic quantized modules, or the reason it cannot be."""
    weight_values = module.get_weight()
    bias_values = module.get_bias()
    weights, scales = {}, {}
    for name, w in weight_values.items():
        found = _int8_of(name, w)
        if isinstance(found, str):
            return found
        weights[name], scales[name] = found
    for name, b in bias_values.items():
        if b is not None:
            weights[name] = b
    if getattr(module, "proj_size", 0):
        return "it has a projection"
    if not hasattr(module, "num_layers"):  # a cell
        kwargs = dict(bias=module.bias)
        if target is qm.QuantizedRNNCell:
            kwargs["nonlinearity"] = module.nonlinearity
    else:
        kwargs = dict(num_layers=module.num_layers, bias=module.bias,
                      batch_first=module.batch_first, dropout=float(module.dropout),
                      bidirectional=module.bidirectional)
    new = _build(target, (module.input_size, module.hidden_size), kwargs, weights, scales)
    new.train(module.training)
    return new


def quantize(model: nn.Module, dtype: torch.dtype = torch.int8) -> nn.Module:
    """Replaces every recurrent module of `model` by its int8 inference module (see the
    module docstring). `model` is modified in place and returned (a new object only if
    `model` is itself a recurrent module)."""
    if dtype not in (torch.int8, torch.qint8):
        raise ValueError(f"rnnkit.quantize supports dtype=torch.int8, got {dtype}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize expects an nn.Module, got {type(model).__name__}")
    dynamic = _torch_dynamic()
    table = {**_FLOAT, **dynamic}

    def replace(module: nn.Module):
        if isinstance(module, _QUANTIZED):  # ours (they subclass rnnkit's float modules)
            return module
        target = table.get(type(module))
        if target is None:
            return (f"{type(module).__qualname__} is a subclass of a recurrent module; its own "
                    "methods would be lost")
        if type(module) in dynamic:
            return _from_torch_dynamic(module, target)
        return _from_float(module, target)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensors.*deprecated")
        result, refused = replace_modules(model, tuple(table), replace, "quantize",
                                          "unquantized")
    for message in refused:
        warnings.warn(message, stacklevel=2)  # pointing at the caller of quantize
    return result

