"""The executable spec of the layer ops, in plain PyTorch, one step at a time.

Each function has the contract of the op of the same name (see
csrc/include/rnnkit/layer_contract.h): one layer, one direction, a whole
time-major sequence, optional per-sequence lengths. It returns the same outputs,
the reserve included, so that a compiled kernel can be checked against it op by op.
It is differentiable by autograd (twice, too), which makes it both the tests'
ground truth beside torch.nn and the fallback wherever no compiled kernel runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _steps(T: int, reverse: bool):
    return range(T - 1, -1, -1) if reverse else range(T)


def _step_mask(lengths: Tensor | None, t: int) -> Tensor | None:
    """[B, 1] bool: which sequences have a real step t."""
    if lengths is None:
        return None
    return (lengths > t).unsqueeze(1)


def _keep(mask: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if mask is None else torch.where(mask, new, old)


def _zero_padded(mask: Tensor | None, value: Tensor) -> Tensor:
    return value if mask is None else torch.where(mask, value, torch.zeros_like(value))


def _input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None) -> Tensor:
    """x · W_ihᵀ + b_ih for all steps at once: [T, B, G*H]."""
    return F.linear(x, w_ih, b_ih)


def rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool, relu: bool):
    """-> (output [T, B, H], h_n [B, H], reserve [0])"""
    act = torch.relu if relu else torch.tanh
    xs = _input_projection(input, w_ih, b_ih)
    h = h0
    outputs: list[Tensor | None] = [None] * input.size(0)
    for t in _steps(input.size(0), reverse):
        mask = _step_mask(lengths, t)
        h_new = act(xs[t] + F.linear(h, w_hh, b_hh))
        outputs[t] = _zero_padded(mask, h_new)
        h = _keep(mask, h_new, h)
    return torch.stack(outputs), h, input.new_empty(0)


def gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool):
    """-> (output [T, B, H], h_n [B, H], reserve [T, B, 4H] = r, z, n, hn)"""
    xs = _input_projection(input, w_ih, b_ih)
    h = h0
    T = input.size(0)
    outputs: list[Tensor | None] = [None] * T
    reserve: list[Tensor | None] = [None] * T
    for t in _steps(T, reverse):
        mask = _step_mask(lengths, t)
        xr, xz, xn = xs[t].chunk(3, dim=1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        outputs[t] = _zero_padded(mask, h_new)
        reserve[t] = _zero_padded(mask, torch.cat([r, z, n, hn], dim=1))
        h = _keep(mask, h_new, h)
    return torch.stack(outputs), h, torch.stack(reserve)


def lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse: bool):
    """-> (output [T, B, P], h_n [B, P], c_n [B, H], reserve [T, B, 5H] = i, f, g, o, c)"""
    xs = _input_projection(input, w_ih, b_ih)
    h, c = h0, c0
    T = input.size(0)
    outputs: list[Tensor | None] = [None] * T
    reserve: list[Tensor | None] = [None] * T
    for t in _steps(T, reverse):
        mask = _step_mask(lengths, t)
        gates = xs[t] + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        if w_hr is not None:
            h_new = F.linear(h_new, w_hr)
        outputs[t] = _zero_padded(mask, h_new)
        reserve[t] = _zero_padded(mask, torch.cat([i, f, g, o, c_new], dim=1))
        h = _keep(mask, h_new, h)
        c = _keep(mask, c_new, c)
    return torch.stack(outputs), h, c, torch.stack(reserve)


# ---------------------------------------------------------------------------
# Backward ops: the gradients autograd finds through the forward above, with the
# backward ops' arguments (output and reserve are not needed here). The compiled
# backward kernels must agree with these.


def _grads(outputs, grad_outputs, inputs, input_grad, state_grad, states=1):
    wanted = [x for x in inputs if x is not None]
    found = iter(torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True))
    result = []
    for x in inputs:
        if x is None:
            result.append(wanted[0].new_empty(0))
            continue
        g = next(found)
        result.append(torch.zeros_like(x) if g is None else g)
    if not input_grad:  # the op's contract: the input's gradient comes back empty
        result[0] = result[0].new_empty(0)
    if not state_grad:  # and so do the initial state's
        for i in range(1, 1 + states):
            result[i] = result[i].new_empty(0)
    return tuple(result)


def _detached(*tensors):
    return [None if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in tensors]


def rnn_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                       reverse, relu, output, input_grad=True, state_grad=True):
    x, h, wi, wh, bi, bh = _detached(input, h0, w_ih, w_hh, b_ih, b_hh)
    with torch.enable_grad():
        y, hn, _ = rnn_layer(x, lengths, h, wi, wh, bi, bh, reverse, relu)
        return _grads([y, hn], [grad_output, grad_h_n], [x, h, wi, wh, bi, bh], input_grad,
                      state_grad)


def gru_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                       reverse, output, reserve, input_grad=True, state_grad=True):
    x, h, wi, wh, bi, bh = _detached(input, h0, w_ih, w_hh, b_ih, b_hh)
    with torch.enable_grad():
        y, hn, _ = gru_layer(x, lengths, h, wi, wh, bi, bh, reverse)
        return _grads([y, hn], [grad_output, grad_h_n], [x, h, wi, wh, bi, bh], input_grad,
                      state_grad)


def lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh,
                        b_ih, b_hh, w_hr, reverse, output, reserve, input_grad=True,
                        state_grad=True):
    x, h, c, wi, wh, bi, bh, wr = _detached(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    with torch.enable_grad():
        y, hn, cn, _ = lstm_layer(x, lengths, h, c, wi, wh, bi, bh, wr, reverse)
        return _grads([y, hn, cn], [grad_output, grad_h_n, grad_c_n],
                      [x, h, c, wi, wh, bi, bh, wr], input_grad, state_grad, states=2)


# ---------------------------------------------------------------------------
# One step of each cell: the contract of the cell ops (csrc/rnnkit.cpp), what RNNCell,
# GRUCell and LSTMCell compute. input [B, I], hx and cx [B, H].


def rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, relu: bool) -> Tensor:
    """-> h' [B, H]"""
    pre = F.linear(input, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)
    return torch.relu(pre) if relu else torch.tanh(pre)


def gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh) -> Tensor:
    """-> h' [B, H]"""
    xr, xz, xn = F.linear(input, w_ih, b_ih).chunk(3, 1)
    hr, hz, hn = F.linear(hx, w_hh, b_hh).chunk(3, 1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * hx


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor]:
    """-> (h' [B, H], c' [B, H])"""
    i, f, g, o = (F.linear(input, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)).chunk(4, 1)
    c = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c
