// Registers the CUDA layer ops (csrc/cuda/{rnn,gru,lstm}.cu) for the CUDA
// dispatch key of the schemas in csrc/rnnkit.cpp.
//
// A .cpp file rather than a .cu one: it has no device code, and torch/library.h
// costs about 15 s through the host compiler but about 75 s through nvcc (which
// parses it once per target architecture as well). setup.py compiles every .cpp
// in every build, so the CPU-only build sees an empty file.

#ifdef RNNKIT_WITH_CUDA

#include <torch/library.h>

#include "layer_cuda.h"

TORCH_LIBRARY_IMPL(rnnkit, CUDA, m) {
  m.impl("rnn_layer", &rnnkit::cuda::rnn_layer);
  m.impl("rnn_layer_backward", &rnnkit::cuda::rnn_layer_backward);
  m.impl("gru_layer", &rnnkit::cuda::gru_layer);
  m.impl("gru_layer_backward", &rnnkit::cuda::gru_layer_backward);
  m.impl("lstm_layer", &rnnkit::cuda::lstm_layer);
  m.impl("lstm_layer_backward", &rnnkit::cuda::lstm_layer_backward);
}

#endif  // RNNKIT_WITH_CUDA
