"""Which cuDNN RNN algorithm torch.nn runs for a call, so that each GPU benchmark row can say
what rnnkit raced.

torch does not report the algorithm; it picks one per call from the sizes, the dtype and the
device (`get_algo` in aten/src/ATen/native/cudnn/RNN.cpp, torch 2.x). This module restates
that rule:

- PERSIST_STATIC_SMALL_H (the recurrence on chip, small hidden sizes): unpacked input, not
  float64, compute capability 6.0 or newer, and H <= 192 (LSTM, GRU) or H <= 384 (Elman RNN)
  in the forward call, H <= 128 or H <= 256 in the backward call;
- PERSIST_STATIC: unpacked float16 only, one layer, one direction, H <= 1024, H and I
  multiples of 128, on a device the persistent kernels are trusted on (compute capability
  7.x other than 7.5 with its own batch rules; 8.x or newer other than 8.6 with at least 98
  SMs, LSTM and Elman RNN only, B a multiple of 8 up to 128, Elman RNN not at B >= 96 with
  H >= 896);
- STANDARD otherwise, and always with a projection.

A forward + backward row runs the forward call's algorithm, then the backward call's.
"""

from __future__ import annotations

import torch

STANDARD = "STANDARD"
PERSIST_STATIC = "PERSIST_STATIC"
PERSIST_STATIC_SMALL_H = "PERSIST_STATIC_SMALL_H"


def _small_h(mode: str, hidden: int, forward: bool, capability: tuple[int, int]) -> bool:
    if capability[0] < 6:
        return False
    gated = mode in ("LSTM", "GRU")
    if forward:
        return hidden <= (192 if gated else 384)
    return hidden <= (128 if gated else 256)


def _persistent_device(mode: str, batch: int, steps: int, hidden: int,
                       capability: tuple[int, int], sm_count: int) -> bool:
    major, minor = capability
    if major == 7:
        if minor == 5:
            return False
        return (((batch % 16 == 0 and batch not in (80, 112)) or batch == 8)
                and ((steps >= 40 and batch <= 128) or (steps >= 20 and batch <= 96)
                     or (steps >= 10 and batch <= 32)))
    if major >= 8 and sm_count >= 98:
        if minor == 6 or mode == "GRU":
            return False
        fits = batch % 8 == 0 and batch <= 128
        if mode == "LSTM":
            return fits
        return fits and (batch < 96 or hidden < 896)
    return False


def cudnn_rnn_algorithm(mode: str, dtype: torch.dtype, *, input_size: int, hidden_size: int,
                        batch: int, steps: int, num_layers: int = 1, bidirectional: bool = False,
                        proj_size: int = 0, packed: bool = False, forward: bool = True,
                        capability: tuple[int, int] = (9, 0), sm_count: int = 132) -> str:
    """The algorithm of one cuDNN call: mode "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"; the
    forward call (forward=True) or the backward one."""
    if proj_size != 0 or packed:
        return STANDARD
    if dtype != torch.float64 and _small_h(mode, hidden_size, forward, capability):
        return PERSIST_STATIC_SMALL_H
    if (dtype == torch.float16 and num_layers == 1 and not bidirectional
            and hidden_size <= 1024 and hidden_size % 128 == 0 and input_size % 128 == 0
            and _persistent_device(mode, batch, steps, hidden_size, capability, sm_count)):
        return PERSIST_STATIC
    return STANDARD


def describe(mode: str, dtype: torch.dtype, train: bool, **sizes) -> str:
    """The forward call's algorithm, and with train the backward call's after a slash."""
    device = {}
    if torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(torch.cuda.current_device())
        device = dict(capability=(prop.major, prop.minor), sm_count=prop.multi_processor_count)
    forward = cudnn_rnn_algorithm(mode, dtype, forward=True, **sizes, **device)
    if not train:
        return forward
    return forward + " / " + cudnn_rnn_algorithm(mode, dtype, forward=False, **sizes, **device)
