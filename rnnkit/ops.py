"""The operator boundary: one Python function per layer op.

Each function runs the compiled operator `torch.ops.rnnkit.<op>` when one is
registered for the input's device (and allowed, see `kernel_policy`), and the
plain-PyTorch reference otherwise, warning once with the reason. This module also
gives the compiled operators their fake kernels (for torch.compile) and their
autograd formulas (forward op -> backward op).
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch
from torch import Tensor

from rnnkit import _extension, reference

__all__ = ["rnn_layer", "gru_layer", "lstm_layer", "kernel_policy", "record_paths"]

# ---------------------------------------------------------------------------
# Choosing a path

# CUDA kernels are used by default only once they have passed the GPU protocol;
# RNNKIT_CUDA_KERNELS=1 turns them on before that (the GPU test run does).
_CUDA_KERNELS_VALIDATED = False


def kernel_policy(device_type: str) -> str:
    """'compiled' or 'reference': what the ops will try for this device type.

    RNNKIT_KERNELS=reference forces the reference everywhere.
    """
    if os.environ.get("RNNKIT_KERNELS", "").lower() == "reference":
        return "reference"
    if device_type == "cuda" and not (
        _CUDA_KERNELS_VALIDATED or os.environ.get("RNNKIT_CUDA_KERNELS") == "1"
    ):
        return "reference"
    return "compiled"


_warned: set[tuple[str, str]] = set()
_recorder: list | None = None


@contextlib.contextmanager
def record_paths():
    """Collects (op, device_type, 'compiled' | 'reference') for every op call inside."""
    global _recorder
    previous, _recorder = _recorder, []
    try:
        yield _recorder
    finally:
        _recorder = previous


def _fallback_reason(op: str, device_type: str) -> str | None:
    """None if the compiled op runs here, else why not."""
    if kernel_policy(device_type) == "reference":
        if os.environ.get("RNNKIT_KERNELS", "").lower() == "reference":
            return "RNNKIT_KERNELS=reference is set"
        return ("rnnkit's CUDA kernels have not yet passed validation on a GPU "
                "(set RNNKIT_CUDA_KERNELS=1 to use them anyway)")
    if not _extension.loaded():
        return f"the compiled extension rnnkit._C could not be loaded ({_extension.LOAD_ERROR})"
    if not _extension.has_kernel(op, device_type):
        return f"rnnkit._C has no {device_type} kernel for {op}"
    return None


def _use_compiled(op: str, device_type: str) -> bool:
    reason = _fallback_reason(op, device_type)
    if _recorder is not None:
        _recorder.append((op, device_type, "reference" if reason else "compiled"))
    if reason is None:
        return True
    if (op, device_type) not in _warned and reason and "RNNKIT_KERNELS" not in reason:
        _warned.add((op, device_type))
        warnings.warn(f"rnnkit: running {op} on {device_type} with the PyTorch reference "
                      f"implementation (slow): {reason}", stacklevel=3)
    return False


# ---------------------------------------------------------------------------
# The ops as the stack calls them


def rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool, relu: bool):
    """One RNN layer in one direction -> (output, h_n)."""
    if _use_compiled("rnn_layer", input.device.type):
        out = torch.ops.rnnkit.rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu)
    else:
        out = reference.rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu)
    return out[0], out[1]


def gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool):
    """One GRU layer in one direction -> (output, h_n)."""
    if _use_compiled("gru_layer", input.device.type):
        out = torch.ops.rnnkit.gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse)
    else:
        out = reference.gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse)
    return out[0], out[1]


def lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse: bool):
    """One LSTM layer in one direction -> (output, h_n, c_n)."""
    if _use_compiled("lstm_layer", input.device.type):
        out = torch.ops.rnnkit.lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                          reverse)
    else:
        out = reference.lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    return out[0], out[1], out[2]


# ---------------------------------------------------------------------------
# Fake kernels: output shapes from the contract (layer_contract.h).

_RESERVE_WIDTH = {"rnn": 0, "gru": 4, "lstm": 5}


def _fake_forward(cell, input, h0, w_hh):
    T, B = input.shape[0], input.shape[1]
    H = w_hh.shape[0] // {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    output = input.new_empty((T, B, h0.shape[1]))
    width = _RESERVE_WIDTH[cell]
    reserve = input.new_empty((T, B, width * H)) if width else input.new_empty((0,))
    return output, h0.new_empty(h0.shape), reserve, H


def _like_or_empty(t, like):
    return like.new_empty((0,)) if t is None else t.new_empty(t.shape)


def _register_fakes():
    lib = torch.library

    @lib.register_fake("rnnkit::rnn_layer")
    def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu):
        output, h_n, reserve, _ = _fake_forward("rnn", input, h0, w_hh)
        return output, h_n, reserve

    @lib.register_fake("rnnkit::gru_layer")
    def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        output, h_n, reserve, _ = _fake_forward("gru", input, h0, w_hh)
        return output, h_n, reserve

    @lib.register_fake("rnnkit::lstm_layer")
    def _(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
        output, h_n, reserve, _ = _fake_forward("lstm", input, h0, w_hh)
        return output, h_n, c0.new_empty(c0.shape), reserve

    def _weight_grads(input, *weights):
        return tuple(_like_or_empty(w, input) for w in weights)

    @lib.register_fake("rnnkit::rnn_layer_backward")
    def _(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu,
          output, reserve):
        return (input.new_empty(input.shape), h0.new_empty(h0.shape),
                *_weight_grads(input, w_ih, w_hh, b_ih, b_hh))

    @lib.register_fake("rnnkit::gru_layer_backward")
    def _(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse,
          output, reserve):
        return (input.new_empty(input.shape), h0.new_empty(h0.shape),
                *_weight_grads(input, w_ih, w_hh, b_ih, b_hh))

    @lib.register_fake("rnnkit::lstm_layer_backward")
    def _(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
          reverse, output, reserve):
        return (input.new_empty(input.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
                *_weight_grads(input, w_ih, w_hh, b_ih, b_hh, w_hr))


# ---------------------------------------------------------------------------
# Autograd: forward op -> backward op. Double backward (create_graph=True)
# differentiates the reference instead, since the backward kernels are not
# themselves differentiable.


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad


def _none_if_absent(grads, inputs):
    return tuple(None if x is None else g for g, x in zip(grads, inputs))


def _double_backward_grads(ref_forward, state_inputs, forward_args, n_outputs, grads):
    """Gradients of the reference forward, keeping the graph for a further backward."""
    outputs = ref_forward(*forward_args)[:n_outputs]
    wanted = [x for x in state_inputs if x is not None and x.requires_grad]
    found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True, allow_unused=True))
    return tuple(next(found) if (x is not None and x.requires_grad) else None
                 for x in state_inputs)


def _setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*[x if isinstance(x, Tensor) else None for x in inputs], *output)
    ctx.flags = tuple(x for x in inputs if isinstance(x, bool))  # reverse (and relu)


def _register_autograd():
    lib = torch.library

    def rnn_backward(ctx, grad_output, grad_h_n, _grad_reserve):
        (input, lengths, h0, w_ih, w_hh, b_ih, b_hh, output, h_n, reserve) = ctx.saved_tensors
        reverse, relu = ctx.flags
        grad_output = _zeros_if_none(grad_output, output)
        grad_h_n = _zeros_if_none(grad_h_n, h_n)
        differentiable = (input, h0, w_ih, w_hh, b_ih, b_hh)
        if torch.is_grad_enabled():
            grads = _double_backward_grads(
                reference.rnn_layer, differentiable,
                (input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu),
                2, (grad_output, grad_h_n))
        else:
            grads = _none_if_absent(torch.ops.rnnkit.rnn_layer_backward(
                grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse,
                relu, output, reserve), differentiable)
        dx, dh0, dwi, dwh, dbi, dbh = grads
        return dx, None, dh0, dwi, dwh, dbi, dbh, None, None

    def gru_backward(ctx, grad_output, grad_h_n, _grad_reserve):
        (input, lengths, h0, w_ih, w_hh, b_ih, b_hh, output, h_n, reserve) = ctx.saved_tensors
        (reverse,) = ctx.flags
        grad_output = _zeros_if_none(grad_output, output)
        grad_h_n = _zeros_if_none(grad_h_n, h_n)
        differentiable = (input, h0, w_ih, w_hh, b_ih, b_hh)
        if torch.is_grad_enabled():
            grads = _double_backward_grads(
                reference.gru_layer, differentiable,
                (input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse),
                2, (grad_output, grad_h_n))
        else:
            grads = _none_if_absent(torch.ops.rnnkit.gru_layer_backward(
                grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse,
                output, reserve), differentiable)
        dx, dh0, dwi, dwh, dbi, dbh = grads
        return dx, None, dh0, dwi, dwh, dbi, dbh, None

    def lstm_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_reserve):
        (input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
         output, h_n, c_n, reserve) = ctx.saved_tensors
        (reverse,) = ctx.flags
        grad_output = _zeros_if_none(grad_output, output)
        grad_h_n = _zeros_if_none(grad_h_n, h_n)
        grad_c_n = _zeros_if_none(grad_c_n, c_n)
        differentiable = (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        if torch.is_grad_enabled():
            grads = _double_backward_grads(
                reference.lstm_layer, differentiable,
                (input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse),
                3, (grad_output, grad_h_n, grad_c_n))
        else:
            grads = _none_if_absent(torch.ops.rnnkit.lstm_layer_backward(
                grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh, b_ih,
                b_hh, w_hr, reverse, output, reserve), differentiable)
        dx, dh0, dc0, dwi, dwh, dbi, dbh, dwr = grads
        return dx, None, dh0, dc0, dwi, dwh, dbi, dbh, dwr, None

    lib.register_autograd("rnnkit::rnn_layer", rnn_backward, setup_context=_setup)
    lib.register_autograd("rnnkit::gru_layer", gru_backward, setup_context=_setup)
    lib.register_autograd("rnnkit::lstm_layer", lstm_backward, setup_context=_setup)


if _extension.loaded():
    _register_fakes()
    _register_autograd()
