"""Inference modules with int8 weights: QuantizedRNN, QuantizedLSTM, QuantizedGRU and
their cells, for the CPU (rnnkit.quantize builds them from a model's float modules).

They take torch.nn's forward arguments and give its outputs (PackedSequence,
batch_first, unbatched input, hx in and out, layers, bidirectional, proj_size),
through the same forward machinery as rnnkit's float modules; only the weights
differ. Each weight `weight_*` of the float module is an int8 buffer of the same
name and shape beside a float32 buffer `weight_*_scale` of its per-row scales; the
biases are float32 buffers. Buffers, not parameters: there is nothing to train,
and a forward that would need gradients raises.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit import functional, modules, onnx_export, ops, quantized

__all__ = ["QuantizedRNN", "QuantizedLSTM", "QuantizedGRU", "QuantizedRNNCell",
           "QuantizedLSTMCell", "QuantizedGRUCell"]


def _refuse_gradients(module: nn.Module, tensors) -> None:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"rnnkit.{type(module).__name__} is for inference: its int8 weights have no "
            "gradients and its kernels no backward. Train the float module (and quantize it "
            "after training), or run this one under torch.no_grad() with inputs that do not "
            "require grad")


def _check_cpu_float(module: nn.Module, input: Tensor) -> None:
    if input.device.type != "cpu":
        raise RuntimeError(f"rnnkit.{type(module).__name__} runs on the CPU only; got input "
                           f"on {input.device}")
    if input.dtype != torch.float32:
        raise ValueError(f"input must have the type torch.float32, got type {input.dtype}")


def _quantize_into(module: nn.Module, name: str, weight: Tensor | None,
                   scale: Tensor | None = None) -> None:
    """Registers weight `name` as int8 (quantizing a float one; taking an int8 one with
    its scales as it is) and its scales as `name`_scale."""
    if weight.dtype == torch.int8:
        q, s = weight.contiguous(), scale.float().contiguous()
    else:
        q, s = quantized.quantize_weight(weight)
    module.register_buffer(name, q)
    module.register_buffer(name + "_scale", s)


class _QuantizedStack(modules.RNNBase):
    """The float module's configuration and forward machinery with int8 weights."""

    def _become_quantized(self, float_weights: dict[str, Tensor],
                          scales: dict[str, Tensor] | None = None) -> None:
        """Replaces the parameters that RNNBase made by buffers: the int8 weights (from
        `float_weights`, or int8 ones with `scales`) and float32 biases."""
        for name in self._flat_weights_names:
            self._parameters.pop(name, None)
        for name in self._flat_weights_names:
            value = float_weights[name]
            if name.startswith("bias"):
                self.register_buffer(name, value.detach().float().clone().contiguous())
            else:
                _quantize_into(self, name, value, None if scales is None else scales[name])
        self._init_flat_weights()

    def check_input(self, input: Tensor, batch_sizes: Tensor | None) -> None:
        # torch.nn compares the input's dtype with the first weight's: here it is int8.
        _check_cpu_float(self, input)
        expected = 2 if batch_sizes is not None else 3
        if input.dim() != expected:
            raise RuntimeError(f"input must have {expected} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.size(-1)}")

    def _layer_weights(self) -> list[Tensor | None]:
        """Per layer direction: w_ih, s_ih, w_hh, s_hh, b_ih, b_hh, w_hr, s_hr (None where
        absent), flat."""
        buffers = self._buffers
        flat: list[Tensor | None] = []
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:2 if self.bidirectional else 1]:
                s = f"_l{layer}{suffix}"
                for name in ("weight_ih", "weight_hh"):
                    flat += [buffers[name + s], buffers[name + s + "_scale"]]
                flat += ([buffers["bias_ih" + s], buffers["bias_hh" + s]] if self.bias
                         else [None, None])
                flat += ([buffers["weight_hr" + s], buffers["weight_hr" + s + "_scale"]]
                         if self.proj_size > 0 else [None, None])
        return flat

    def _compute(self, input, states, lengths):
        _check_cpu_float(self, input)
        _refuse_gradients(self, (input,) + tuple(states))
        if onnx_export.exporting():
            raise RuntimeError(f"rnnkit.{type(self).__name__} cannot be exported to ONNX: "
                               "export the float module (ONNX Runtime quantizes on its own)")
        states = tuple(s.float() for s in states)
        mode = self.mode

        def run_layer(x, layer_states, w, reverse):
            c0 = layer_states[1] if mode == "LSTM" else None
            out, h_n, c_n = quantized.layer(mode, x, lengths, layer_states[0], c0, *w, reverse)
            return (out, h_n, c_n) if mode == "LSTM" else (out, h_n)

        # Inference: no dropout between layers (training=False).
        output, final = functional._run_stack(
            run_layer, input, states, self._layer_weights(), self.num_layers, 8,
            self.bidirectional, 0.0, False, None)
        return output, tuple(final)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dtype=torch.int8"


def _float_weights(module: nn.Module) -> dict[str, Tensor]:
    return {name: getattr(module, name) for name in module._flat_weights_names}


class QuantizedRNN(_QuantizedStack, modules.RNN):
    """torch.nn.RNN with int8 weights, for inference on the CPU."""

    def __init__(self, *args, **kwargs):
        modules.RNN.__init__(self, *args, **kwargs)
        self._become_quantized(_float_weights(self))


class QuantizedGRU(_QuantizedStack, modules.GRU):
    """torch.nn.GRU with int8 weights, for inference on the CPU."""

    def __init__(self, *args, **kwargs):
        modules.GRU.__init__(self, *args, **kwargs)
        self._become_quantized(_float_weights(self))


class QuantizedLSTM(_QuantizedStack, modules.LSTM):
    """torch.nn.LSTM with int8 weights, for inference on the CPU."""

    def __init__(self, *args, **kwargs):
        modules.LSTM.__init__(self, *args, **kwargs)
        self._become_quantized(_float_weights(self))


# ---------------------------------------------------------------------------
# Cells: one step of the layer op (T = 1).


class _QuantizedCell(nn.Module):
    _mode: str
    _chunks: int

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        rows = self._chunks * hidden_size
        _quantize_into(self, "weight_ih", torch.zeros(rows, input_size))
        _quantize_into(self, "weight_hh", torch.zeros(rows, hidden_size))
        self.register_buffer("bias_ih", torch.zeros(rows) if bias else None)
        self.register_buffer("bias_hh", torch.zeros(rows) if bias else None)

    def _load_weights(self, weights: dict[str, Tensor], scales: dict[str, Tensor] | None):
        for name in ("weight_ih", "weight_hh"):
            _quantize_into(self, name, weights[name], None if scales is None else scales[name])
        if self.bias:
            for name in ("bias_ih", "bias_hh"):
                self.register_buffer(name, weights[name].detach().float().clone())

    def _step(self, name: str, input: Tensor, hx, n_states: int):
        _check_cpu_float(self, input)
        x, states, _, is_batched = modules._cell_prepare(self, name, input, hx, n_states)
        _refuse_gradients(self, (x,) + tuple(states))
        b = self._buffers
        ops._check_cell(x, states, b["weight_ih"], b["weight_hh"])  # torch's messages
        states = [s.float() for s in states]
        c0 = states[1] if n_states == 2 else None
        _, h, c = quantized.layer(self._mode, x.unsqueeze(0), None, states[0], c0,
                                  b["weight_ih"], b["weight_ih_scale"], b["weight_hh"],
                                  b["weight_hh_scale"], b["bias_ih"], b["bias_hh"], None, None,
                                  False)
        if n_states == 1:
            return h if is_batched else h.squeeze(0)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s + ", dtype=torch.int8"


class QuantizedRNNCell(_QuantizedCell):
    """torch.nn.RNNCell with int8 weights, for inference on the CPU."""

    _chunks = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    @property
    def _mode(self) -> str:
        return "RNN_RELU" if self.nonlinearity == "relu" else "RNN_TANH"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._step("RNNCell", input, hx, 1)


class QuantizedGRUCell(_QuantizedCell):
    """torch.nn.GRUCell with int8 weights, for inference on the CPU."""

    _mode, _chunks = "GRU", 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._step("GRUCell", input, hx, 1)


class QuantizedLSTMCell(_QuantizedCell):
    """torch.nn.LSTMCell with int8 weights, for inference on the CPU."""

    _mode, _chunks = "LSTM", 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        return self._step("LSTMCell", input, hx, 2)
