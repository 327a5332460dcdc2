// Registers the CPU kernels of the layer ops.

#include <torch/library.h>

#include "layer_ops_cpu.h"

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("rnn_layer", &rnnkit::cpu::rnn_layer);
  m.impl("rnn_layer_backward", &rnnkit::cpu::rnn_layer_backward);
  m.impl("gru_layer", &rnnkit::cpu::gru_layer);
  m.impl("gru_layer_backward", &rnnkit::cpu::gru_layer_backward);
  m.impl("lstm_layer", &rnnkit::cpu::lstm_layer);
  m.impl("lstm_layer_backward", &rnnkit::cpu::lstm_layer_backward);
}
