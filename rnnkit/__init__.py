"""rnnkit: fused C++/CUDA kernels for recurrent networks, a drop-in for torch.nn.

    import rnnkit
    lstm = rnnkit.LSTM(128, 256, num_layers=2)   # same arguments as torch.nn.LSTM
    lstm.load_state_dict(torch_lstm.state_dict())  # same parameters
    output, (h_n, c_n) = lstm(x)                   # same outputs
    model = rnnkit.convert(model)                  # swap every torch.nn RNN/LSTM/GRU in a model
    model = rnnkit.quantize(model)                 # int8 weights for CPU inference
"""

import warnings as _warnings

import torch as _torch

from rnnkit import functional, ops
from rnnkit.modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell
# The function takes the name of its module: rnnkit.convert is the function.
from rnnkit.convert import convert
from rnnkit.quantize import quantize
from rnnkit.quantized_modules import (QuantizedGRU, QuantizedGRUCell, QuantizedLSTM,
                                      QuantizedLSTMCell, QuantizedRNN, QuantizedRNNCell)

# The argument checks compare sizes, which torch.jit.trace (and so torch.onnx.export with
# dynamo=False) records as tensors, warning that the trace may not generalise. They check
# the traced example and have no place in the graph: as torch does for its own modules,
# rnnkit's tracer warnings are not shown.
_warnings.filterwarnings("ignore", category=_torch.jit.TracerWarning, module="rnnkit")

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "RNNBase", "convert",
           "functional", "ops", "quantize", "QuantizedRNN", "QuantizedLSTM", "QuantizedGRU",
           "QuantizedRNNCell", "QuantizedLSTMCell", "QuantizedGRUCell"]
