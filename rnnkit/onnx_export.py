"""The recurrent stack as ONNX's own LSTM, GRU and RNN operators, for torch.onnx.export.

While torch.onnx.export runs (either exporter: the default one, through torch.export,
or the TorchScript one, dynamo=False), rnnkit.functional hands each layer to `layer`
here instead of the layer ops. Each layer becomes one ONNX node (both directions in
one, as torch.nn's export gives), fed with torch.nn's weights rearranged into ONNX's
layout by ordinary tensor ops:

- gate order: torch.nn's LSTM gates are (i, f, g, o), ONNX's (i, o, f, c); GRU's are
  (r, z, n) in torch.nn and (z, r, h) in ONNX;
- GRU: torch.nn applies the reset gate after the recurrent matmul, which is ONNX's
  linear_before_reset=1 (0, ONNX's default, would be a different model);
- biases: ONNX's B is [W_b, R_b] concatenated; absent biases are zeros;
- packed input: the per-sequence lengths become the node's sequence_lens.

An LSTM with proj_size has no ONNX operator, but it is one: with h_t = W_hr m_t
(m_t = o_t * tanh(c_t), the unprojected output), the recurrent term W_hh h_t is
(W_hh W_hr) m_t. So the node runs an LSTM of hidden size H with the recurrent matrix
W_hh W_hr, and its outputs are projected afterwards. The initial state h_0 cannot be
unprojected; its term W_hh h_0 enters the first step through the input instead: the
input gets h_0 as extra features at each sequence's first step (zeros elsewhere), with
W_hh as their input weights, and the node starts from m = 0. Dynamic length, batch and
sequence_lens all work as for the other nodes.

The node itself is made by `torch.onnx.ops.symbolic_multi_out` under the default
exporter; under the TorchScript one by `rnnkit::onnx_recurrence`, an op that only
carries the node into the traced graph (it computes nothing: its outputs are zeros)
and whose symbolic writes the node.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["exporting", "torch_exporting", "layer"]

# ONNX's gate order as indices into torch.nn's.
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}
_OPSET = 9  # the lowest opset the TorchScript symbolic serves (what the stack around it uses)

try:
    from torch.onnx import ops as _onnx_ops  # torch >= 2.8: ONNX nodes in torch.export graphs
except ImportError:
    _onnx_ops = None

# Whether torch.export is tracing (torch.onnx.export's default exporter runs it).
torch_exporting = getattr(torch.compiler, "is_exporting", None) or (lambda: False)

try:
    # Read directly: torch.onnx.is_in_onnx_export() costs a microsecond, and this is
    # asked on every call of every op.
    from torch.onnx._internal.exporter import _flags as _dynamo_flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _script_globals

    def _exporting() -> bool:
        # The TorchScript exporter's flag is process-wide, its trace this thread's: another
        # thread running a model meanwhile is not exporting. (The default exporter's flag
        # has no such per-thread companion: README, "Deploying".)
        return ((_script_globals.in_onnx_export and torch._C._get_tracing_state() is not None)
                or _dynamo_flags._is_onnx_exporting)
except ImportError:  # another torch's layout: the public function
    def _exporting() -> bool:
        return torch.onnx.is_in_onnx_export()

# Whether torch.onnx.export is running (either exporter). Under torch.compile the answer
# is taken once, at trace time (dynamo does not trace into torch.onnx).
exporting = torch._dynamo.assume_constant_result(_exporting)


# ---------------------------------------------------------------------------
# The node


@torch.library.custom_op("rnnkit::onnx_recurrence", mutates_args=())
def _recurrence(x: Tensor, w: Tensor, r: Tensor, b: Tensor, sequence_lens: Tensor | None,
                initial_h: Tensor, initial_c: Tensor | None, op_type: str, direction: str,
                hidden_size: int, activation: str) -> tuple[Tensor, Tensor, Tensor]:
    """(Y [T, D, B, H], Y_h [D, B, H], Y_c [D, B, H]) of ONNX's op_type, as zeros."""
    T, B = x.shape[0], x.shape[1]
    D = initial_h.shape[0]
    state = x.new_zeros((D, B, hidden_size))
    return x.new_zeros((T, D, B, hidden_size)), state, state.clone()


@_recurrence.register_fake
def _(x, w, r, b, sequence_lens, initial_h, initial_c, op_type, direction, hidden_size,
      activation):
    T, B = x.shape[0], x.shape[1]
    D = initial_h.shape[0]
    return (x.new_empty((T, D, B, hidden_size)), x.new_empty((D, B, hidden_size)),
            x.new_empty((D, B, hidden_size)))


def _recurrence_symbolic(g, x, w, r, b, sequence_lens, initial_h, initial_c, op_type, direction,
                         hidden_size, activation):
    from torch.onnx import symbolic_helper as sh

    op_type = sh._maybe_get_const(op_type, "s")
    direction = sh._maybe_get_const(direction, "s")
    attrs = _attributes(op_type, direction, sh._maybe_get_const(hidden_size, "i"),
                        sh._maybe_get_const(activation, "s"))
    attrs = {f"{k}_{'s' if isinstance(v, (str, list)) else 'i'}": v for k, v in attrs.items()}
    inputs = [x, w, r, b, sequence_lens, initial_h]
    if op_type == "LSTM":
        inputs.append(initial_c)
    none = g.op("prim::Constant").setType(torch._C.OptionalType.ofTensor())
    inputs = [none if sh._is_none(v) else v for v in inputs]
    outputs = g.op(op_type, *inputs, outputs=3 if op_type == "LSTM" else 2, **attrs)
    return outputs if op_type == "LSTM" else (*outputs, outputs[1])


torch.onnx.register_custom_op_symbolic("rnnkit::onnx_recurrence", _recurrence_symbolic, _OPSET)


def _attributes(op_type: str, direction: str, hidden_size: int, activation: str) -> dict:
    attrs = {"direction": direction, "hidden_size": hidden_size}
    if op_type == "RNN":
        attrs["activations"] = [activation] * (2 if direction == "bidirectional" else 1)
    if op_type == "GRU":
        attrs["linear_before_reset"] = 1  # torch.nn's GRU (module docstring)
    return attrs


def _node(op_type: str, x: Tensor, w: Tensor, r: Tensor, b: Tensor, lengths: Tensor | None,
          h0: Tensor, c0: Tensor | None, hidden_size: int, direction: str,
          activation: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """One ONNX recurrence node -> (Y [T, D, B, H], Y_h [D, B, H], Y_c or None)."""
    sequence_lens = None if lengths is None else lengths.to(torch.int32)
    if not torch_exporting():  # the TorchScript exporter
        y, y_h, y_c = _recurrence(x, w, r, b, sequence_lens, h0, c0, op_type, direction,
                                  hidden_size, activation)
        return y, y_h, (y_c if op_type == "LSTM" else None)
    attrs = _attributes(op_type, direction, hidden_size, activation)
    D, T, B = h0.shape[0], x.shape[0], x.shape[1]
    shapes = [(T, D, B, hidden_size), (D, B, hidden_size)]
    inputs = [x, w, r, b, sequence_lens, h0]
    if op_type == "LSTM":
        shapes.append((D, B, hidden_size))
        inputs.append(c0)
    if _onnx_ops is None:
        raise RuntimeError(f"rnnkit: exporting an {op_type} with torch.onnx.export's default "
                           f"exporter needs torch >= 2.8 (torch {torch.__version__} is "
                           "installed); export with dynamo=False")
    outs = _onnx_ops.symbolic_multi_out(op_type, inputs, attrs, dtypes=[x.dtype] * len(shapes),
                                        shapes=shapes)
    return outs[0], outs[1], (outs[2] if op_type == "LSTM" else None)


# ---------------------------------------------------------------------------
# torch.nn's weights in ONNX's layout


def _gates(t: Tensor, op_type: str) -> Tensor:
    """t [G*H, ...] with its gate blocks in ONNX's order."""
    order = _GATE_ORDER[op_type]
    if len(order) == 1:
        return t
    # Slices rather than chunk(): ONNX's constant folding skips the multi-output Split.
    size = t.shape[0] // len(order)
    return torch.cat([t[i * size:(i + 1) * size] for i in order], 0)


def _first_step_mask(input: Tensor, lengths: Tensor | None, reverse: bool) -> Tensor:
    """[T, B, 1]: 1 at each sequence's first step in this direction, else 0."""
    T, B = input.shape[0], input.shape[1]
    steps = torch.arange(T, device=input.device).unsqueeze(1)  # [T, 1]
    if not reverse:
        first = steps == 0
    elif lengths is None:
        first = steps == T - 1
    else:
        first = steps == (lengths.to(steps.dtype) - 1).unsqueeze(0)  # [T, B]
    return first.expand(T, B).unsqueeze(2).to(input.dtype)


def layer(onnx_node, x: Tensor, states: list[Tensor], weights: list[list[Tensor]]):
    """One layer, one or both directions (`weights` per direction), as one node ->
    (output [T, B, D*P], [h_n [D, B, P], (c_n [D, B, H])]). `onnx_node` is what
    rnnkit.functional knows of the layer: (ONNX op type, bias, proj, activation, lengths)."""
    op_type, bias, proj, activation, lengths = onnx_node
    hidden_size = weights[0][1].shape[0] // len(_GATE_ORDER[op_type])
    D = len(weights)
    direction = "bidirectional" if D == 2 else "forward"
    W, R, Bs = [], [], []
    for w in weights:
        w_ih, w_hh = w[0], w[1]
        W.append(_gates(w_ih, op_type))
        R.append(_gates(w_hh @ w[-1] if proj else w_hh, op_type))
        if bias:
            Bs.append(torch.cat((_gates(w[2], op_type), _gates(w[3], op_type))))
        else:
            Bs.append(w_ih.new_zeros((2 * w_ih.shape[0],)))
    h0 = states[0]  # [D, B, P]
    c0 = states[1] if op_type == "LSTM" else None
    if proj:
        # h_0 enters through the input at each direction's first step (module docstring).
        masks = [_first_step_mask(x, lengths, reverse=d == 1) for d in range(D)]
        T = x.shape[0]
        extra = [m * h0[d].unsqueeze(0).expand(T, -1, -1) for d, m in enumerate(masks)]
        x = torch.cat([x, *extra], 2)
        for d, w in enumerate(weights):
            blocks = [W[d]] + [_gates(w[1], op_type) if e == d else W[d].new_zeros(
                (W[d].shape[0], w[1].shape[1])) for e in range(D)]
            W[d] = torch.cat(blocks, 1)
        h0 = h0.new_zeros((D, h0.shape[1], hidden_size))
    y, y_h, y_c = _node(op_type, x, torch.stack(W), torch.stack(R), torch.stack(Bs), lengths,
                        h0, c0, hidden_size, direction, activation)
    if proj:
        w_hr = torch.stack([w[-1] for w in weights]).transpose(1, 2)  # [D, H, P]
        y = torch.matmul(y.unsqueeze(3), w_hr.unsqueeze(1)).squeeze(3)  # [T, D, B, P]
        y_h = torch.matmul(y_h, w_hr)
    T, B = y.shape[0], y.shape[2]
    output = y.permute(0, 2, 1, 3).reshape(T, B, D * y.shape[3])
    return output, [y_h] if y_c is None else [y_h, y_c]

