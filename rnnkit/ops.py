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

__all__ = ["rnn_layer", "gru_layer", "lstm_layer", "rnn_cell", "gru_cell", "lstm_cell",
           "kernel_policy", "enable_cuda_kernels", "record_paths"]

# ---------------------------------------------------------------------------
# Choosing a path

# CUDA kernels are used by default only once they have passed the GPU protocol;
# RNNKIT_CUDA_KERNELS=1 turns them on before that (the GPU test run does).
_CUDA_KERNELS_VALIDATED = False

# The environment is read once, here, at import (README, "Variables"): a call pays for
# a dictionary look-up of its path, not for reading variables and the op registry.
_FORCE_REFERENCE = os.environ.get("RNNKIT_KERNELS", "").lower() == "reference"
_cuda_kernels_on = _CUDA_KERNELS_VALIDATED or os.environ.get("RNNKIT_CUDA_KERNELS") == "1"


def enable_cuda_kernels(enabled: bool = True) -> None:
    """Turns rnnkit's CUDA kernels on (or off) from now on, as RNNKIT_CUDA_KERNELS=1 at
    import does: they are off by default until they have passed validation on a GPU."""
    global _cuda_kernels_on
    _cuda_kernels_on = enabled
    _reasons.clear()


def kernel_policy(device_type: str) -> str:
    """'compiled' or 'reference': what the ops will try for this device type.

    RNNKIT_KERNELS=reference (at import) forces the reference everywhere.
    """
    if _FORCE_REFERENCE:
        return "reference"
    if device_type == "cuda" and not _cuda_kernels_on:
        return "reference"
    return "compiled"


_warned: set[tuple[str, str]] = set()  # (device_type, reason)
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
        if _FORCE_REFERENCE:
            return "RNNKIT_KERNELS=reference is set"
        return ("rnnkit's CUDA kernels have not yet passed validation on a GPU "
                "(set RNNKIT_CUDA_KERNELS=1 or call rnnkit.ops.enable_cuda_kernels() to use "
                "them anyway)")
    if not _extension.loaded():
        return f"the compiled extension rnnkit._C could not be loaded ({_extension.LOAD_ERROR})"
    if not _extension.has_kernel(op, device_type):
        return f"rnnkit._C has no {device_type} kernel for {op}"
    return None


# (op, device type) -> _fallback_reason: the path is decided once per op and device.
_reasons: dict[tuple[str, str], str | None] = {}


def _cached_reason(op: str, device_type: str) -> str | None:
    key = (op, device_type)
    try:
        return _reasons[key]
    except KeyError:
        reason = _reasons[key] = _fallback_reason(op, device_type)
        return reason


@torch._dynamo.assume_constant_result
def _fallback_reason_when_compiling(op: str, device_type: str) -> str:
    # Under torch.compile the choice is made once, at trace time, and baked into the
    # graph ('' = compiled); the registry look-ups inside cannot be traced.
    return _cached_reason(op, device_type) or ""


def _use_compiled(op: str, device_type: str) -> bool:
    if torch.compiler.is_compiling():
        return _fallback_reason_when_compiling(op, device_type) == ""
    reason = _cached_reason(op, device_type)
    if _recorder is not None:
        _recorder.append((op, device_type, "reference" if reason else "compiled"))
    if reason is None:
        return True
    # One warning per device and reason (a missing extension warns once, not per op);
    # none when the user asked for the reference.
    if (device_type, reason) not in _warned and "RNNKIT_KERNELS" not in reason:
        _warned.add((device_type, reason))
        warnings.warn(f"rnnkit: running {op} on {device_type} with the PyTorch reference "
                      f"implementation (slow): {reason}", stacklevel=3)
    return False


# ---------------------------------------------------------------------------
# The ops as the stack calls them


def _no_autocast(device_type: str):
    """The ops compute in the dtypes they are given: under autocast, the modules cast
    as torch.nn does before calling them, and a kernel's own matmuls must not be cast
    again (nor the reference's)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool, relu: bool):
    """One RNN layer in one direction -> (output, h_n)."""
    args = (input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu)
    with _no_autocast(input.device.type):
        if _use_compiled("rnn_layer", input.device.type):
            out = torch.ops.rnnkit.rnn_layer(*args)
        else:
            out = reference.rnn_layer(*args)
    return out[0], out[1]


@torch._dynamo.assume_constant_result
def _has_kernel_constant(op: str, device_type: str) -> bool:
    """_extension.has_kernel, which torch.compile takes as a constant of the graph
    (the registry look-up cannot be traced)."""
    return _extension.has_kernel(op, device_type)


def _skip_reserve(op: str, device_type: str, tensors) -> bool:
    """Whether to run op's reserve_optional overload without a reserve: no backward
    can follow and the overload has a kernel for the device (csrc/overloads.cpp)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return _has_kernel_constant(f"{op}.reserve_optional", device_type)


def gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool):
    """One GRU layer in one direction -> (output, h_n)."""
    args = (input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse)
    with _no_autocast(input.device.type):
        if not _use_compiled("gru_layer", input.device.type):
            out = reference.gru_layer(*args)
        elif _skip_reserve("gru_layer", input.device.type, (input, h0, w_ih, w_hh, b_ih, b_hh)):
            out = torch.ops.rnnkit.gru_layer.reserve_optional(*args, False)
        else:
            out = torch.ops.rnnkit.gru_layer(*args)
    return out[0], out[1]


def lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse: bool):
    """One LSTM layer in one direction -> (output, h_n, c_n)."""
    args = (input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    with _no_autocast(input.device.type):
        if not _use_compiled("lstm_layer", input.device.type):
            out = reference.lstm_layer(*args)
        elif _skip_reserve("lstm_layer", input.device.type,
                           (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)):
            out = torch.ops.rnnkit.lstm_layer.reserve_optional(*args, False)
        else:
            out = torch.ops.rnnkit.lstm_layer(*args)
    return out[0], out[1], out[2]


# The cell ops: one step, one dispatch. Their autograd is in C++ (csrc/cell_autograd.cpp)
# and their kernels leave autocast out themselves, so the compiled path calls the op and
# nothing else.


def _check_cell(input: Tensor, states, w_ih: Tensor, w_hh: Tensor) -> None:
    """The compiled cell ops' first checks, with torch's messages (ATen's
    check_rnn_cell_forward_input / _hidden), for the reference."""
    if input.size(1) != w_ih.size(1):
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} "
                           f"expected {w_ih.size(1)}")
    for i, hx in enumerate(states):
        if input.size(0) != hx.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{i} batch "
                               f"size {hx.size(0)}")
        if hx.size(1) != w_hh.size(1):
            raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {hx.size(1)}, "
                               f"expected {w_hh.size(1)}")


def rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, relu: bool) -> Tensor:
    """One RNNCell step: input [B, I], hx [B, H] -> h' [B, H]."""
    if _use_compiled("rnn_cell", input.device.type):
        return torch.ops.rnnkit.rnn_cell.default(input, hx, w_ih, w_hh, b_ih, b_hh, relu)
    _check_cell(input, (hx,), w_ih, w_hh)
    with _no_autocast(input.device.type):
        return reference.rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, relu)


def gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh) -> Tensor:
    """One GRUCell step: input [B, I], hx [B, H] -> h' [B, H]."""
    if _use_compiled("gru_cell", input.device.type):
        return torch.ops.rnnkit.gru_cell.default(input, hx, w_ih, w_hh, b_ih, b_hh)
    _check_cell(input, (hx,), w_ih, w_hh)
    with _no_autocast(input.device.type):
        return reference.gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor]:
    """One LSTMCell step: input [B, I], hx and cx [B, H] -> (h' [B, H], c' [B, H])."""
    if _use_compiled("lstm_cell", input.device.type):
        return torch.ops.rnnkit.lstm_cell.default(input, hx, cx, w_ih, w_hh, b_ih, b_hh)
    _check_cell(input, (hx, cx), w_ih, w_hh)
    with _no_autocast(input.device.type):
        return reference.lstm_cell(input, hx, cx, w_ih, w_hh, b_ih, b_hh)


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


def _fake_gru(input, h0, w_hh):
    """(output, h_n, reserve) of one GRU direction."""
    output, h_n, reserve, _ = _fake_forward("gru", input, h0, w_hh)
    return output, h_n, reserve


def _fake_lstm(input, h0, c0, w_hh):
    """(output, h_n, c_n, reserve) of one LSTM direction."""
    output, h_n, reserve, _ = _fake_forward("lstm", input, h0, w_hh)
    return output, h_n, c0.new_empty(c0.shape), reserve


def _like_or_empty(t, like):
    return like.new_empty((0,)) if t is None else t.new_empty(t.shape)


def _register_fakes():
    lib = torch.library

    @lib.register_fake("rnnkit::rnn_layer")
    def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu):
        output, h_n, reserve, _ = _fake_forward("rnn", input, h0, w_hh)
        return output, h_n, reserve

    def fake_gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        return _fake_gru(input, h0, w_hh)

    def fake_lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
        return _fake_lstm(input, h0, c0, w_hh)

    # The persistent forward ops (csrc/persistent_ops.cpp) take the layer ops'
    # arguments and return their outputs. Their schemas are declared in every build,
    # their kernels only in CUDA builds.
    for op, fake in (("gru_layer", fake_gru_layer), ("lstm_layer", fake_lstm_layer),
                     ("gru_layer_persistent", fake_gru_layer),
                     ("lstm_layer_persistent", fake_lstm_layer)):
        lib.register_fake(f"rnnkit::{op}", fake)

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

    # The cell ops (csrc/rnnkit.cpp): the reserve is [B, 4H] (GRU) or [B, 5H] (LSTM); a
    # gradient the output mask does not ask for, or of an absent bias, comes back empty.
    def _cell_grads(input, hx, w_ih, w_hh, has_bias, mask, states=1):
        def pick(wanted, like):
            return like.new_empty(like.shape) if wanted else input.new_empty((0,))
        bias = w_ih.new_empty((w_ih.shape[0],)) if has_bias else input.new_empty((0,))
        return (pick(mask[0], input), *(pick(mask[1], hx) for _ in range(states)),
                pick(mask[2], w_ih), pick(mask[2], w_hh),
                pick(mask[2], bias), pick(mask[2], bias))

    @lib.register_fake("rnnkit::rnn_cell")
    def _(input, hx, w_ih, w_hh, b_ih, b_hh, relu):
        return hx.new_empty(hx.shape)

    @lib.register_fake("rnnkit::rnn_cell_backward")
    def _(grad_h, input, hx, w_ih, w_hh, has_bias, relu, h, output_mask):
        return _cell_grads(input, hx, w_ih, w_hh, has_bias, output_mask)

    @lib.register_fake("rnnkit::gru_cell")
    def _(input, hx, w_ih, w_hh, b_ih, b_hh):
        return hx.new_empty(hx.shape)

    @lib.register_fake("rnnkit::gru_cell_forward")
    def _(input, hx, w_ih, w_hh, b_ih, b_hh):
        return hx.new_empty(hx.shape), hx.new_empty((hx.shape[0], 4 * hx.shape[1]))

    @lib.register_fake("rnnkit::gru_cell_backward")
    def _(grad_h, input, hx, w_ih, w_hh, has_bias, reserve, output_mask):
        return _cell_grads(input, hx, w_ih, w_hh, has_bias, output_mask)

    @lib.register_fake("rnnkit::lstm_cell")
    def _(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
        return hx.new_empty(hx.shape), cx.new_empty(cx.shape)

    @lib.register_fake("rnnkit::lstm_cell_forward")
    def _(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
        return (hx.new_empty(hx.shape), cx.new_empty(cx.shape),
                hx.new_empty((hx.shape[0], 5 * hx.shape[1])))

    @lib.register_fake("rnnkit::lstm_cell_backward")
    def _(grad_h, grad_c, input, hx, cx, w_ih, w_hh, has_bias, reserve, output_mask):
        return _cell_grads(input, hx, w_ih, w_hh, has_bias, output_mask, states=2)

    # Both directions in one persistent launch: each direction's layer outputs.

    @lib.register_fake("rnnkit::lstm_bidirectional_layer_persistent")
    def _(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, h0_reverse, c0_reverse, w_ih_reverse,
          w_hh_reverse, b_ih_reverse, b_hh_reverse):
        return (*_fake_lstm(input, h0, c0, w_hh),
                *_fake_lstm(input, h0_reverse, c0_reverse, w_hh_reverse))

    @lib.register_fake("rnnkit::gru_bidirectional_layer_persistent")
    def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, h0_reverse, w_ih_reverse, w_hh_reverse,
          b_ih_reverse, b_hh_reverse):
        return (*_fake_gru(input, h0, w_hh), *_fake_gru(input, h0_reverse, w_hh_reverse))

    # The overloads that skip work nobody needs (csrc/overloads.cpp).
    if _extension.has_overload("lstm_layer.reserve_optional"):
        @lib.register_fake("rnnkit::gru_layer.reserve_optional")
        def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, keep_reserve):
            output, h_n, reserve, _ = _fake_forward("gru", input, h0, w_hh)
            return output, h_n, reserve if keep_reserve else input.new_empty((0,))

        @lib.register_fake("rnnkit::lstm_layer.reserve_optional")
        def _(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, keep_reserve):
            output, h_n, reserve, _ = _fake_forward("lstm", input, h0, w_hh)
            return (output, h_n, c0.new_empty(c0.shape),
                    reserve if keep_reserve else input.new_empty((0,)))

    def _input_grad(input, input_grad):
        return input.new_empty(input.shape) if input_grad else input.new_empty((0,))

    if _extension.has_overload("rnn_layer_backward.input_optional"):
        @lib.register_fake("rnnkit::rnn_layer_backward.input_optional")
        def _(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu,
              output, reserve, input_grad):
            return (_input_grad(input, input_grad), h0.new_empty(h0.shape),
                    *_weight_grads(input, w_ih, w_hh, b_ih, b_hh))

        @lib.register_fake("rnnkit::gru_layer_backward.input_optional")
        def _(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse,
              output, reserve, input_grad):
            return (_input_grad(input, input_grad), h0.new_empty(h0.shape),
                    *_weight_grads(input, w_ih, w_hh, b_ih, b_hh))

        @lib.register_fake("rnnkit::lstm_layer_backward.input_optional")
        def _(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh,
              w_hr, reverse, output, reserve, input_grad):
            return (_input_grad(input, input_grad), h0.new_empty(h0.shape),
                    c0.new_empty(c0.shape), *_weight_grads(input, w_ih, w_hh, b_ih, b_hh, w_hr))


# ---------------------------------------------------------------------------
# Autograd: forward op -> backward op. Double backward (create_graph=True)
# differentiates the reference instead, since the backward kernels are not
# themselves differentiable.


def _setup(ctx, inputs, output):
    # The forward's arguments are its tensors (input, lengths, states, weights, some
    # of them None) followed by its flags (reverse, and relu for RNN); the backward op
    # takes the output gradients, the same arguments, then output and reserve.
    n_tensors = next(i for i, x in enumerate(inputs) if isinstance(x, bool))
    ctx.n_tensors = n_tensors
    ctx.flags = tuple(inputs[n_tensors:])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:n_tensors], *output)


def _make_backward(cell: str):
    ref_forward = getattr(reference, f"{cell}_layer")

    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        args, results = saved[:ctx.n_tensors], saved[ctx.n_tensors:]
        # Every output but the reserve is differentiable; absent gradients are zeros.
        grads = [torch.zeros_like(r) if g is None else g for g, r in zip(grads, results[:-1])]
        differentiable = (args[0],) + args[2:]  # all but lengths
        if torch.is_grad_enabled():
            # create_graph=True: the backward kernels are not differentiable
            # themselves, so differentiate the reference, keeping the graph.
            with _no_autocast(args[0].device.type):
                outputs = ref_forward(*args, *ctx.flags)[:len(grads)]
            wanted = [x for x in differentiable if x is not None and x.requires_grad]
            found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True,
                                             allow_unused=True))
            found_grads = [next(found) if x is not None and x.requires_grad else None
                           for x in differentiable]
        else:
            backward_op = getattr(torch.ops.rnnkit, f"{cell}_layer_backward")
            op_args = (*grads, *args, *ctx.flags, results[0], results[-1])
            with _no_autocast(args[0].device.type):
                if not ctx.needs_input_grad[0] and _has_kernel_constant(
                        f"{cell}_layer_backward.input_optional", args[0].device.type):
                    # The input does not need a gradient (e.g. a network's first layer):
                    # the overload that skips it.
                    found_grads = backward_op.input_optional(*op_args, False)
                else:
                    found_grads = backward_op(*op_args)
            # The gradient of an absent optional argument comes back empty.
            found_grads = [None if x is None else g for g, x in zip(found_grads, differentiable)]
            dx = found_grads[0]
            if (dx is not None and args[0].is_leaf
                    and dx.untyped_storage().nbytes() > 2 * dx.nbytes):
                # The CPU kernels write dx over their larger gate-gradient buffer; as a
                # leaf's .grad it would keep all of that alive.
                found_grads[0] = dx.clone()
        return (found_grads[0], None, *found_grads[1:]) + (None,) * len(ctx.flags)

    return backward


def _register_autograd():
    for cell in ("rnn", "gru", "lstm"):
        torch.library.register_autograd(f"rnnkit::{cell}_layer", _make_backward(cell),
                                        setup_context=_setup)


if _extension.loaded():
    _register_fakes()
    _register_autograd()
