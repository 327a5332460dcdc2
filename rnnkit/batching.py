"""vmap for the compiled ops: batching rules that fold the mapped dimension into the batch.

A recurrent op is already batched: under `torch.func.vmap` over N, a call on inputs of
batch B is one call on a batch of N*B, with the weights shared. So each rule moves the
mapped dimension next to the batch dimension, merges the two, calls the op once, and
splits the results again. Only when the weights themselves are mapped (an ensemble of
models) does the rule loop, one call per model.

Which path runs under torch.func is rnnkit/ops.py's choice: the compiled ops (and so these
rules) under vmap alone, the reference under grad, vjp, jacrev and jvp.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []


def _merge(x: Tensor | None, bdim: int | None, n: int, dim: int) -> Tensor | None:
    """x with the mapped dimension (or n copies, when x is not mapped) merged into its
    batch dimension `dim`: [..., n*B, ...], the copies of one sample n-major."""
    if x is None:
        return None
    if bdim is None:
        x = x.unsqueeze(dim).expand(*x.shape[:dim], n, *x.shape[dim:])
    else:
        x = x.movedim(bdim, dim)
    return x.reshape(*x.shape[:dim], -1, *x.shape[dim + 2:])


def _split(x: Tensor, n: int, dim: int) -> Tensor:
    """The inverse of _merge for an output: [..., n*B, ...] -> [..., n, B, ...]."""
    return x.reshape(*x.shape[:dim], n, -1, *x.shape[dim + 1:])


def _per_model(op, info, in_dims, args):
    """Mapped weights: one call per model, the results stacked along dim 0."""
    results = []
    for i in range(info.batch_size):
        sample = [a if d is None or not isinstance(a, Tensor) else a.select(d, i)
                  for a, d in zip(args, in_dims)]
        results.append(op(*sample))
    if isinstance(results[0], Tensor):
        return torch.stack(results), 0
    outs = tuple(torch.stack(r) for r in zip(*results))
    return outs, (0,) * len(outs)


def _rule(op, batch_dims: dict[int, int], first_weight: int,
          out_batch_dims: tuple[int, ...]):
    """A batching rule for op: `batch_dims` maps the position of each batched argument to
    its batch dimension; arguments from `first_weight` on (weights and flags) are shared
    unless mapped; `out_batch_dims` is each output's batch dimension."""

    def rule(info, in_dims, *args):
        n = info.batch_size
        if any(d is not None for d in in_dims[first_weight:]):
            return _per_model(op, info, in_dims, args)
        args = list(args)
        for pos, dim in batch_dims.items():
            args[pos] = _merge(args[pos], in_dims[pos], n, dim)
        out = op(*args)
        if isinstance(out, Tensor):
            return _split(out, n, out_batch_dims[0]), out_batch_dims[0]
        return (tuple(_split(o, n, d) for o, d in zip(out, out_batch_dims)),
                out_batch_dims)

    return rule


def register() -> None:
    ops = torch.ops.rnnkit
    lib = torch.library
    # Cells: input, hx[, cx] of [B, *] first, then weights and flags.
    lib.register_vmap("rnnkit::rnn_cell", _rule(ops.rnn_cell.default, {0: 0, 1: 0}, 2, (0,)))
    lib.register_vmap("rnnkit::gru_cell", _rule(ops.gru_cell.default, {0: 0, 1: 0}, 2, (0,)))
    lib.register_vmap("rnnkit::lstm_cell",
                      _rule(ops.lstm_cell.default, {0: 0, 1: 0, 2: 0}, 3, (0, 0)))
    # Layers: input [T, B, I], lengths [B], h0[, c0] [B, *], then weights and flags; the
    # output [T, B, *] has its batch at dim 1.
    lib.register_vmap("rnnkit::rnn_layer",
                      _rule(ops.rnn_layer.default, {0: 1, 1: 0, 2: 0}, 3, (1, 0)))
    lib.register_vmap("rnnkit::gru_layer",
                      _rule(ops.gru_layer.default, {0: 1, 1: 0, 2: 0}, 3, (1, 0)))
    lib.register_vmap("rnnkit::lstm_layer",
                      _rule(ops.lstm_layer.default, {0: 1, 1: 0, 2: 0, 3: 0}, 4, (1, 0, 0)))
