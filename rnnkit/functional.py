"""The stack: layers, directions, inter-layer dropout and final states.

`rnn`, `gru` and `lstm` take time-major input and torch.nn's flat weight list
(the order of `module._flat_weights`) and run one layer op per layer and
direction. They do no argument validation beyond what the ops need; the modules
do that. Usable on their own by code that keeps its own weights:

    output, h_n = rnnkit.functional.gru(x, h0, weights, num_layers=2)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit import onnx_export, ops

__all__ = ["rnn", "gru", "lstm"]


def _check_sequence(input: Tensor) -> None:
    if input.dim() != 3:
        raise ValueError(f"expected time-major input [T, B, I], got {input.dim()}D")
    if input.size(0) == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")


def _check_lengths(lengths: Tensor | None, input: Tensor) -> Tensor | None:
    if lengths is None:
        return None
    if lengths.dim() != 1 or lengths.size(0) != input.size(1):
        raise ValueError(f"lengths must have shape [{input.size(1)}], got {list(lengths.shape)}")
    return lengths.to(device=input.device, dtype=torch.int64)


def _run_stack(layer_fn, input, states, weights, num_layers, per_layer, bidirectional,
               dropout, training, onnx_node):
    """Shared loop. `layer_fn(x, states_of_this_layer_direction, weights, reverse)` returns
    (output, *final_states); `states` is a tuple of [L*D, B, *] tensors. Under
    torch.onnx.export each layer becomes one ONNX node instead, both directions in it:
    `onnx_node` is (ONNX op type, bias, proj, activation, lengths), see
    rnnkit/onnx_export.py."""
    num_directions = 2 if bidirectional else 1
    expected = num_layers * num_directions * per_layer
    if len(weights) != expected:
        raise ValueError(f"expected {expected} weight tensors, got {len(weights)}")
    exporting = onnx_export.exporting()
    if num_layers == 1 and num_directions == 1 and not exporting:
        # The common case, and the one streaming (T=1) calls pay per step: no loop.
        out, *final = layer_fn(input, [s[0] for s in states], weights, False)
        # Copies, not views (as torch.stack gives a stack): h_n.detach_() must work.
        return out, [torch.stack((f,)) for f in final]
    x = input
    # Per state, each layer's final states: one [B, *] per direction, or when exporting
    # one [D, B, *] per layer.
    finals: list[list[Tensor]] = [[] for _ in states]
    for layer in range(num_layers):
        first = layer * num_directions
        w = [weights[(first + d) * per_layer:(first + d + 1) * per_layer]
             for d in range(num_directions)]
        if exporting:
            x, final = onnx_export.layer(onnx_node, x,
                                         [s[first:first + num_directions] for s in states], w)
            for collected, state in zip(finals, final):
                collected.append(state)
        else:
            outputs = []
            for d in range(num_directions):
                out, *final = layer_fn(x, [s[first + d] for s in states], w[d], d == 1)
                outputs.append(out)
                for collected, state in zip(finals, final):
                    collected.append(state)
            x = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    join = torch.cat if exporting else torch.stack
    return x, [join(collected) for collected in finals]


def _split(w: Sequence[Tensor], bias: bool, proj: bool):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) from one layer-direction's weights."""
    w_ih, w_hh = w[0], w[1]
    b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
    w_hr = w[-1] if proj else None
    return w_ih, w_hh, b_ih, b_hh, w_hr


def rnn(input: Tensor, hx: Tensor, weights: Sequence[Tensor], *, num_layers: int = 1,
        bias: bool = True, nonlinearity: str = "tanh", bidirectional: bool = False,
        dropout: float = 0.0, training: bool = False,
        lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Elman RNN over time-major `input` [T, B, I] from `hx` [L*D, B, H] -> (output, h_n)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    _check_sequence(input)
    lengths = _check_lengths(lengths, input)
    relu = nonlinearity == "relu"

    def layer(x, states, w, reverse):
        w_ih, w_hh, b_ih, b_hh, _ = _split(w, bias, False)
        return ops.rnn_layer(x, lengths, states[0], w_ih, w_hh, b_ih, b_hh, reverse, relu)

    output, (h_n,) = _run_stack(layer, input, (hx,), weights, num_layers, 2 + 2 * bias,
                                bidirectional, dropout, training,
                                ("RNN", bias, False, "Relu" if relu else "Tanh", lengths))
    return output, h_n


def gru(input: Tensor, hx: Tensor, weights: Sequence[Tensor], *, num_layers: int = 1,
        bias: bool = True, bidirectional: bool = False, dropout: float = 0.0,
        training: bool = False, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """GRU over time-major `input` [T, B, I] from `hx` [L*D, B, H] -> (output, h_n)."""
    _check_sequence(input)
    lengths = _check_lengths(lengths, input)

    def layer(x, states, w, reverse):
        w_ih, w_hh, b_ih, b_hh, _ = _split(w, bias, False)
        return ops.gru_layer(x, lengths, states[0], w_ih, w_hh, b_ih, b_hh, reverse)

    output, (h_n,) = _run_stack(layer, input, (hx,), weights, num_layers, 2 + 2 * bias,
                                bidirectional, dropout, training,
                                ("GRU", bias, False, "Tanh", lengths))
    return output, h_n


def lstm(input: Tensor, hx: tuple[Tensor, Tensor], weights: Sequence[Tensor], *,
         num_layers: int = 1, bias: bool = True, proj_size: int = 0,
         bidirectional: bool = False, dropout: float = 0.0, training: bool = False,
         lengths: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """LSTM over time-major `input` [T, B, I] from `hx` = (h0 [L*D, B, P], c0 [L*D, B, H])
    -> (output, (h_n, c_n))."""
    _check_sequence(input)
    lengths = _check_lengths(lengths, input)
    proj = proj_size > 0

    def layer(x, states, w, reverse):
        w_ih, w_hh, b_ih, b_hh, w_hr = _split(w, bias, proj)
        return ops.lstm_layer(x, lengths, states[0], states[1], w_ih, w_hh, b_ih, b_hh, w_hr,
                              reverse)

    output, (h_n, c_n) = _run_stack(layer, input, tuple(hx), weights, num_layers,
                                    2 + 2 * bias + proj, bidirectional, dropout, training,
                                    ("LSTM", bias, proj, "Tanh", lengths))
    return output, (h_n, c_n)
