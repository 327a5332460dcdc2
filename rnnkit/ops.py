"""The operator boundary: one Python function per layer op and per cell op.

Each function runs the compiled operator `torch.ops.rnnkit.<op>` when one is
registered for the input's device (and allowed, see `kernel_policy`), and the
plain-PyTorch reference otherwise, warning once with the reason. The compiled ops
carry their own autograd (in C++: csrc/layer_autograd.cpp, csrc/cell_autograd.cpp);
this module gives them their fake kernels (for torch.compile and torch.export), and
rnnkit/batching.py their vmap rules.
"""

from __future__ import annotations

import contextlib
import os
import types
import warnings

import torch
from torch import Tensor

from rnnkit import _extension, batching, onnx_export, reference

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


def _functorch_allows_kernels() -> bool:
    """Under torch.func, whether the compiled ops may run: under vmap alone they do (their
    batching rules fold the mapped dimension into the batch, rnnkit/batching.py); under
    grad, vjp, jacrev or jvp the reference runs, whose ATen ops compose with every
    transform (the ops' C++ autograd does not)."""
    stack = torch._C._functorch.get_interpreter_stack() or ()
    return all(level.key() == torch._C._functorch.TransformType.Vmap for level in stack)


def _use_compiled(op: str, device_type: str) -> bool:
    if onnx_export.exporting():
        # The reference's standard ops are what ONNX gets (the layers do not come here:
        # rnnkit.functional gives them to rnnkit/onnx_export.py, as ONNX's own nodes).
        return False
    if torch.compiler.is_compiling():
        return _fallback_reason_when_compiling(op, device_type) == ""
    reason = _cached_reason(op, device_type)
    if reason is None and torch._C._are_functorch_transforms_active():
        if not _functorch_allows_kernels():
            reason = "torch.func's autograd transforms run the reference"
    if _recorder is not None:
        _recorder.append((op, device_type, "reference" if reason else "compiled"))
    if reason is None:
        return True
    # One warning per device and reason (a missing extension warns once, not per op);
    # none when the user asked for the reference, nor under torch.func.
    if ((device_type, reason) not in _warned and "RNNKIT_KERNELS" not in reason
            and "torch.func" not in reason):
        _warned.add((device_type, reason))
        warnings.warn(f"rnnkit: running {op} on {device_type} with the PyTorch reference "
                      f"implementation (slow): {reason}", stacklevel=3)
    return False


def direct(op: str, device_type: str):
    """The compiled op `op` itself, for a caller that has made its checks and calls it with
    nothing around it (a one-layer module: each step of a stream pays for the Python
    between its call and the kernel), or None where the way through the functions below
    is needed: no compiled op for this device, torch.compile, torch.export, an ONNX
    export, a jit trace, torch.func or record_paths."""
    if torch.compiler.is_compiling():  # first: dynamo answers it as a constant
        return None
    if (_recorder is None and _cached_reason(op, device_type) is None
            and torch._C._get_tracing_state() is None
            and not torch._C._are_functorch_transforms_active()
            and not onnx_export.exporting() and not onnx_export.torch_exporting()):
        return getattr(_OPS, op)
    return None


# ---------------------------------------------------------------------------
# The ops as the stack calls them


def _no_autocast(device_type: str):
    """The ops compute in the dtypes they are given: under autocast, the modules cast
    as torch.nn does before calling them, and a kernel's own matmuls must not be cast
    again (nor the reference's)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


# The layer and cell ops, bound once (torch.ops' attribute chain costs a microsecond or
# two per call); None without the extension, where the reference runs.
_OPS = None


def _bind_ops():
    global _OPS
    names = ("rnn_layer", "gru_layer", "lstm_layer", "rnn_cell", "gru_cell", "lstm_cell")
    _OPS = types.SimpleNamespace(**{n: getattr(torch.ops.rnnkit, n).default for n in names})


def rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool, relu: bool):
    """One RNN layer in one direction -> (output, h_n)."""
    if _use_compiled("rnn_layer", input.device.type):
        return _OPS.rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu)
    with _no_autocast(input.device.type):
        out = reference.rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu)
    return out[0], out[1]


def gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool):
    """One GRU layer in one direction -> (output, h_n)."""
    if _use_compiled("gru_layer", input.device.type):
        return _OPS.gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse)
    with _no_autocast(input.device.type):
        out = reference.gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse)
    return out[0], out[1]


def lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse: bool):
    """One LSTM layer in one direction -> (output, h_n, c_n)."""
    if _use_compiled("lstm_layer", input.device.type):
        return _OPS.lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    with _no_autocast(input.device.type):
        out = reference.lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    return out[0], out[1], out[2]


# The compiled ops leave autocast out themselves, so the compiled path calls the op and
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
        return _OPS.rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, relu)
    _check_cell(input, (hx,), w_ih, w_hh)
    with _no_autocast(input.device.type):
        return reference.rnn_cell(input, hx, w_ih, w_hh, b_ih, b_hh, relu)


def gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh) -> Tensor:
    """One GRUCell step: input [B, I], hx [B, H] -> h' [B, H]."""
    if _use_compiled("gru_cell", input.device.type):
        return _OPS.gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh)
    _check_cell(input, (hx,), w_ih, w_hh)
    with _no_autocast(input.device.type):
        return reference.gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor]:
    """One LSTMCell step: input [B, I], hx and cx [B, H] -> (h' [B, H], c' [B, H])."""
    if _use_compiled("lstm_cell", input.device.type):
        return _OPS.lstm_cell(input, hx, cx, w_ih, w_hh, b_ih, b_hh)
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

    # The public layer ops return no reserve; the *_layer_forward ones, which their
    # autograd runs, do. The persistent forward ops (csrc/persistent_ops.cpp, kernels in
    # CUDA builds only) take the layer ops' arguments and return what *_layer_forward does.
    @lib.register_fake("rnnkit::rnn_layer")
    def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu):
        output, h_n, _, _ = _fake_forward("rnn", input, h0, w_hh)
        return output, h_n

    @lib.register_fake("rnnkit::gru_layer")
    def _(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        return _fake_gru(input, h0, w_hh)[:2]

    @lib.register_fake("rnnkit::lstm_layer")
    def _(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
        return _fake_lstm(input, h0, c0, w_hh)[:3]

    def fake_gru_forward(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        return _fake_gru(input, h0, w_hh)

    def fake_lstm_forward(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
        return _fake_lstm(input, h0, c0, w_hh)

    for op, fake in (("gru_layer_forward", fake_gru_forward),
                     ("lstm_layer_forward", fake_lstm_forward),
                     ("gru_layer_persistent", fake_gru_forward),
                     ("lstm_layer_persistent", fake_lstm_forward)):
        lib.register_fake(f"rnnkit::{op}", fake)

    def _weight_grads(input, *weights):
        return tuple(_like_or_empty(w, input) for w in weights)

    def _input_grad(input, input_grad):
        return input.new_empty(input.shape) if input_grad else input.new_empty((0,))

    def _state_grad(state, state_grad):
        return state.new_empty(state.shape) if state_grad else state.new_empty((0,))

    @lib.register_fake("rnnkit::rnn_layer_backward")
    def _(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu,
          output, input_grad, state_grad=True):
        return (_input_grad(input, input_grad), _state_grad(h0, state_grad),
                *_weight_grads(input, w_ih, w_hh, b_ih, b_hh))

    @lib.register_fake("rnnkit::gru_layer_backward")
    def _(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse,
          output, reserve, input_grad, state_grad=True):
        return (_input_grad(input, input_grad), _state_grad(h0, state_grad),
                *_weight_grads(input, w_ih, w_hh, b_ih, b_hh))

    @lib.register_fake("rnnkit::lstm_layer_backward")
    def _(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
          reverse, output, reserve, input_grad, state_grad=True):
        return (_input_grad(input, input_grad), _state_grad(h0, state_grad),
                _state_grad(c0, state_grad),
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


if _extension.loaded():
    _bind_ops()
    _register_fakes()
    batching.register()
