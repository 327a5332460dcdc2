"""The modules: torch.nn.RNN, LSTM, GRU and their cells, run by rnnkit's kernels.

Construction, parameters, initialisation, state_dict, repr and the shape checks
come from torch.nn.RNNBase / RNNCellBase, so they are torch's own, for whichever
torch is installed. (We subclass the bases rather than nn.LSTM itself because
torch.compile refuses to trace nn.RNN/GRU/LSTM instances.) What this file adds is
the forward: argument validation with torch's messages, then normalisation of the
input into time-major padded form with per-sequence lengths, one call into
rnnkit.functional, and the way back into the caller's form. No math here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnkit import functional, onnx_export, ops

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


# ---------------------------------------------------------------------------
# PackedSequence <-> time-major padded


def _unpack(data: Tensor, batch_sizes: Tensor):
    """Packed rows [sum(lengths), I] -> (padded [T, B, I], lengths [B] on the CPU).

    Packed data lists step 0 of every sequence, then step 1 of those still running,
    and so on, sequences sorted longest first. torch's own (C++) unpacking, which is
    what torch.nn.utils.rnn.pad_packed_sequence runs, and differentiable.
    """
    return torch._pad_packed_sequence(data, batch_sizes, False, 0.0, batch_sizes.numel())


def _repack(padded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of _unpack: (the packed rows of padded [T, B, ...], batch sizes), lengths
    on the CPU."""
    return torch._pack_padded_sequence(padded, lengths, False)


def _check_devices(input: Tensor, weights, states) -> None:
    device = input.device
    for w in weights:
        if w is not None and w.device != device:
            raise RuntimeError("Input and parameter tensors are not at the same device, found "
                               f"input tensor at {device} and parameter tensor at {w.device}")
    for s in states:
        if s.device != device:
            raise RuntimeError("Input and hidden tensors are not at the same device, found "
                               f"input tensor at {device} and hidden tensor at {s.device}")


# On CPU, autocast reaches torch.nn's recurrent kernels only through their matmuls: RNN and
# RNNCell (gates from matmuls alone) and LSTM (oneDNN) come out in the low dtype, but GRU,
# GRUCell and LSTMCell mix the low-precision gates with the state in an elementwise update,
# where type promotion makes the state's dtype win.
_CPU_AUTOCAST_KEEPS_STATE_DTYPE = ("GRU", "GRUCell", "LSTMCell")


def _autocast_dtype(device_type: str, kind: str, state_dtype: torch.dtype):
    """The dtype torch.nn's `kind` (a mode or a cell's name) computes in under autocast, or
    None outside autocast. `state_dtype` is h's dtype (the input's when no hx is given)."""
    if not torch.is_autocast_enabled(device_type):
        return None
    low = torch.get_autocast_dtype(device_type)
    if device_type == "cpu" and kind in _CPU_AUTOCAST_KEEPS_STATE_DTYPE:
        return torch.promote_types(low, state_dtype)
    return low


def _refuse_scripting(self):
    # torch.jit.script calls this first: a clear message instead of the scripting
    # compiler's failure on rnnkit's Python forward. (Tracing works.)
    raise RuntimeError(f"rnnkit.{type(self).__name__} cannot be scripted with torch.jit.script "
                       "(which torch deprecates): use torch.compile or torch.export, or "
                       "torch.jit.trace")


_NOT_A_PARAMETER = object()


class RNNBase(nn.RNNBase):
    """Shared forward machinery of RNN, GRU and LSTM."""

    __prepare_scriptable__ = _refuse_scripting

    # ---- hooks the subclasses fill in
    _LAYER_OP = ""  # the name of the layer op (rnnkit.ops)

    def _run_layer(self, op, input, states, weights):  # one layer, one direction, by op
        raise NotImplementedError

    def _states(self, hx):  # -> tuple of [L*D, B, *] tensors
        raise NotImplementedError

    def _run(self, input, states, weights, lengths):  # -> (output, tuple of states)
        raise NotImplementedError

    def _pack_states(self, states):  # tuple -> what forward returns as hidden
        raise NotImplementedError

    # ---- common pieces
    def _current_weights(self) -> list:
        """The flat weights for this forward: torch.nn's _flat_weights, brought up to date
        (once per forward, at its start, as torch.nn does) if a weight has been replaced
        since the last one, as torch.func.functional_call and torch.export do."""
        # torch.nn's check through getattr costs about 8 us per call, most of a short
        # call's overhead; the registered parameters answer it directly.
        params = self._parameters
        for name, weight in zip(self._flat_weights_names, self._flat_weights):
            current = params.get(name, _NOT_A_PARAMETER)
            if current is _NOT_A_PARAMETER:
                # A parametrization or a plain attribute: torch.nn's own check.
                super()._update_flat_weights()
                return self._flat_weights
            if current is not weight:
                if onnx_export.torch_exporting():
                    # The tensors torch.export traces with, not kept: it warns of tensor
                    # attributes assigned during export.
                    return [getattr(self, n) if hasattr(self, n) else None
                            for n in self._flat_weights_names]
                self._init_flat_weights()
                return self._flat_weights
        return self._flat_weights

    def _update_flat_weights(self) -> None:
        self._current_weights()

    def _default_hx(self, input: Tensor, batch: int):
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h = input.new_zeros((layers, batch, self.proj_size or self.hidden_size))
        if self.mode != "LSTM":
            return h
        return (h, input.new_zeros((layers, batch, self.hidden_size)))

    def _compute(self, input, states, lengths):
        """Runs the stack on time-major input; handles devices and autocast."""
        weights = self._current_weights()
        _check_devices(input, weights, states)
        device_type = input.device.type
        cast = _autocast_dtype(device_type, self.mode, states[0].dtype)
        if cast is None:
            if lengths is None and self.num_layers == 1 and not self.bidirectional:
                # One layer op and nothing else to do: called directly, not through
                # rnnkit.functional and rnnkit.ops, whose Python costs more than the op at
                # small sizes (streaming, T = 1).
                op = ops.direct(self._LAYER_OP, device_type)
                if op is not None:
                    functional._check_sequence(input)
                    return self._run_layer(op, input, states, weights)
            return self._run(input, states, weights, lengths)
        # The ops themselves never autocast (rnnkit/ops.py): they get these dtypes.
        state_dtypes = [s.dtype for s in states]
        input = input.to(cast)
        states = tuple(s.to(cast) for s in states)
        weights = [w.to(cast) for w in weights]
        output, states = self._run(input, states, weights, lengths)
        if input.device.type == "cpu" and self.proj_size > 0:
            # torch's CPU projected LSTM (no oneDNN) keeps c in its own dtype.
            states = (states[0], states[1].to(state_dtypes[1]))
        return output, states

    def _forward_packed(self, packed: PackedSequence, hx):
        if onnx_export.torch_exporting():
            raise RuntimeError(
                f"rnnkit.{type(self).__name__}: a PackedSequence input cannot be exported "
                "with torch.export (nor torch.onnx.export's default exporter, which runs it): "
                "packing has data-dependent shapes, for torch.nn's modules too. Give padded "
                "input and the lengths to rnnkit.functional (lengths=...), or use "
                "torch.onnx.export(..., dynamo=False), which turns packing into the ONNX "
                "node's sequence_lens")
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        padded, lengths = _unpack(data, batch_sizes)
        if hx is None:
            # The batch from the padded input (batch_sizes[0]): a size that a trace
            # records as one, where int(batch_sizes[0]) would be a constant.
            hx = self._default_hx(data, padded.size(1))
            self.check_forward_args(data, hx, batch_sizes)
        else:
            # Checked before the permutation, which would otherwise fail first on a
            # wrong batch size with a less helpful message.
            self.check_forward_args(data, hx, batch_sizes)
            hx = self.permute_hidden(hx, sorted_indices)
        output, states = self._compute(padded, self._states(hx), lengths.to(data.device))
        out_data, out_batch_sizes = _repack(output, lengths)
        if not onnx_export.exporting():
            out_batch_sizes = batch_sizes  # the same tensor, as torch.nn returns
        # (Under torch.onnx.export, the repacking's own batch sizes let the exporter pair
        # each unpacking with its packing and drop both: the ONNX node takes the lengths.)
        out = PackedSequence(out_data, out_batch_sizes, sorted_indices, unsorted_indices)
        return out, self.permute_hidden(self._pack_states(states), unsorted_indices)

    def _forward_tensor(self, input: Tensor, hx, is_batched: bool):
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        if hx is None:
            hx = self._default_hx(input, input.size(batch_dim))
        self.check_forward_args(input, hx, None)
        time_major = input.transpose(0, 1) if self.batch_first else input
        output, states = self._compute(time_major, self._states(hx), None)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            states = tuple(s.squeeze(1) for s in states)
        return output, self._pack_states(states)


def _stacked(state: Tensor) -> Tensor:
    """A final state [B, *] as the [1, B, *] of a one-layer stack: a tensor of its own, not
    a view (h_n.detach_() must work, as on torch.nn's); made so in place where no graph
    records it, a cheaper call than a copy."""
    if state.requires_grad:
        return torch.stack((state,))
    return state.unsqueeze_(0)


class _SingleStateRNN(RNNBase):
    """RNN and GRU: one state tensor h."""

    def _states(self, hx):
        return (hx,)

    def _pack_states(self, states):
        return states[0]

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(self._input_dim_message(input.dim()))
        is_batched = input.dim() == 3
        if hx is not None:
            if is_batched and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            if not is_batched:
                if hx.dim() != 2:
                    raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got "
                                       f"{hx.dim()}-D tensor")
                hx = hx.unsqueeze(1)
        return self._forward_tensor(input, hx, is_batched)


class RNN(_SingleStateRNN):
    """Drop-in for torch.nn.RNN (same arguments, parameters and outputs)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. "
                             "Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    @staticmethod
    def _input_dim_message(ndim):
        return f"RNN: Expected input to be 2D or 3D, got {ndim}D tensor instead"

    _LAYER_OP = "rnn_layer"

    def _run_layer(self, op, input, states, weights):
        w_ih, w_hh, b_ih, b_hh, _ = functional._split(weights, self.bias, False)
        output, h_n = op(input, None, states[0][0], w_ih, w_hh, b_ih, b_hh, False,
                         self.mode == "RNN_RELU")
        return output, (_stacked(h_n),)

    def _run(self, input, states, weights, lengths):
        output, h_n = functional.rnn(
            input, states[0], weights, num_layers=self.num_layers, bias=self.bias,
            nonlinearity="relu" if self.mode == "RNN_RELU" else "tanh",
            bidirectional=self.bidirectional, dropout=self.dropout, training=self.training,
            lengths=lengths)
        return output, (h_n,)


class GRU(_SingleStateRNN):
    """Drop-in for torch.nn.GRU (same arguments, parameters and outputs)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    @staticmethod
    def _input_dim_message(ndim):
        return f"GRU: Expected input to be 2D or 3D, got {ndim}D instead"

    _LAYER_OP = "gru_layer"

    def _run_layer(self, op, input, states, weights):
        w_ih, w_hh, b_ih, b_hh, _ = functional._split(weights, self.bias, False)
        output, h_n = op(input, None, states[0][0], w_ih, w_hh, b_ih, b_hh, False)
        return output, (_stacked(h_n),)

    def _run(self, input, states, weights, lengths):
        output, h_n = functional.gru(
            input, states[0], weights, num_layers=self.num_layers, bias=self.bias,
            bidirectional=self.bidirectional, dropout=self.dropout, training=self.training,
            lengths=lengths)
        return output, (h_n,)


class LSTM(RNNBase):
    """Drop-in for torch.nn.LSTM (same arguments, parameters and outputs)."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    # torch.nn.LSTM's own checks and permutation of the (h, c) pair.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def _states(self, hx):
        return (hx[0], hx[1])

    def _pack_states(self, states):
        return (states[0], states[1])

    _LAYER_OP = "lstm_layer"

    def _run_layer(self, op, input, states, weights):
        w_ih, w_hh, b_ih, b_hh, w_hr = functional._split(weights, self.bias, self.proj_size > 0)
        output, h_n, c_n = op(input, None, states[0][0], states[1][0], w_ih, w_hh, b_ih, b_hh,
                              w_hr, False)
        return output, (_stacked(h_n), _stacked(c_n))

    def _run(self, input, states, weights, lengths):
        output, (h_n, c_n) = functional.lstm(
            input, states, weights, num_layers=self.num_layers, bias=self.bias,
            proj_size=self.proj_size, bidirectional=self.bidirectional, dropout=self.dropout,
            training=self.training, lengths=lengths)
        return output, (h_n, c_n)

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        if hx is not None:
            h, c = hx[0], hx[1]  # like torch: IndexError for a 1-tuple
            if is_batched and (h.dim() != 3 or c.dim() != 3):
                raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                   f"({h.dim()}-D, {c.dim()}-D) tensors")
            if not is_batched:
                if h.dim() != 2 or c.dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D "
                                       f"but got ({h.dim()}-D, {c.dim()}-D) tensors")
                h, c = h.unsqueeze(1), c.unsqueeze(1)
            hx = (h, c)
        return self._forward_tensor(input, hx, is_batched)


# ---------------------------------------------------------------------------
# Cells: one step, one cell op (rnnkit.ops.rnn_cell / gru_cell / lstm_cell). A cell is
# often stepped in a Python loop, so its forward does what torch.nn's does and no more:
# the checks (with torch's messages), the batch dimension, and one call.


def _cell_weights(cell):
    """[w_ih, w_hh, b_ih, b_hh] (None biases when bias=False), from the registered
    parameters when they are there (getattr through nn.Module costs more than the step's
    own dispatch at small sizes), else through getattr (a parametrization)."""
    params = cell._parameters
    try:
        return [params["weight_ih"], params["weight_hh"], params["bias_ih"], params["bias_hh"]]
    except KeyError:
        return [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]


def _cell_prepare(cell, name, input, hx, n_states):
    """Checks a cell's arguments as torch.nn does -> (input [B, I], states of [B, H],
    [w_ih, w_hh, b_ih, b_hh] with None biases when bias=False, whether input was batched),
    cast as torch.nn's cell computes under autocast."""
    input_dim = input.dim()
    if input_dim != 2 and input_dim != 1:
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input_dim}D instead")
    is_batched = input_dim == 2
    if hx is None:
        zeros = input.new_zeros((input.size(0) if is_batched else 1, cell.hidden_size))
        states = (zeros,) * n_states
    else:
        if n_states == 1:
            if hx.dim() not in (1, 2):
                raise ValueError(f"{name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
            states = (hx,)
        else:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"{name}: Expected hx[{idx}] to be 1D or 2D, got "
                                     f"{value.dim()}D instead")
            states = tuple(hx)
            if len(states) != n_states:
                raise RuntimeError("lstm_cell expects two hidden states")
        for i, s in enumerate(states):  # as the user gave them, before any unsqueeze
            if s.dim() != input_dim:
                raise RuntimeError(f"hidden{i} must be {input_dim}-D for {input_dim}-D input, "
                                   f"got {s.dim()}-D")
        if not is_batched:
            states = tuple(s.unsqueeze(0) for s in states)
    if not is_batched:
        input = input.unsqueeze(0)
    # The sizes are checked by the cell op, with torch's messages (rnnkit/ops.py).
    weights = _cell_weights(cell)
    _check_devices(input, weights, states)
    cast = _autocast_dtype(input.device.type, name, states[0].dtype)
    if cast is not None:
        input, states = input.to(cast), tuple(s.to(cast) for s in states)
        weights = [None if w is None else w.to(cast) for w in weights]
    return input, states, weights, is_batched


class RNNCell(nn.RNNCellBase):
    """Drop-in for torch.nn.RNNCell."""

    __prepare_scriptable__ = _refuse_scripting

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), weights, is_batched = _cell_prepare(self, "RNNCell", input, hx, 1)
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        h = ops.rnn_cell(x, h, *weights, self.nonlinearity == "relu")
        return h if is_batched else h.squeeze(0)


class GRUCell(nn.RNNCellBase):
    """Drop-in for torch.nn.GRUCell."""

    __prepare_scriptable__ = _refuse_scripting

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), weights, is_batched = _cell_prepare(self, "GRUCell", input, hx, 1)
        h = ops.gru_cell(x, h, *weights)
        return h if is_batched else h.squeeze(0)


class LSTMCell(nn.RNNCellBase):
    """Drop-in for torch.nn.LSTMCell."""

    __prepare_scriptable__ = _refuse_scripting

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        x, (h, c), weights, is_batched = _cell_prepare(self, "LSTMCell", input, hx, 2)
        h, c = ops.lstm_cell(x, h, c, *weights)
        if not is_batched:
            return h.squeeze(0), c.squeeze(0)
        return h, c
