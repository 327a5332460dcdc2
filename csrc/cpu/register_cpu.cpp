// Registers the CPU kernels of the layer ops.

#include <torch/library.h>

#include "fast_path.h"
#include "layer_ops_cpu.h"

#include <string>

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("rnn_layer", &rnnkit::cpu::rnn_layer);
  m.impl("rnn_layer_backward", &rnnkit::cpu::rnn_layer_backward);
  m.impl("gru_layer", &rnnkit::cpu::gru_layer);
  m.impl("gru_layer_backward", &rnnkit::cpu::gru_layer_backward);
  m.impl("lstm_layer", &rnnkit::cpu::lstm_layer);
  m.impl("lstm_layer_backward", &rnnkit::cpu::lstm_layer_backward);
}

TORCH_LIBRARY_FRAGMENT(rnnkit, m) {
  // The instruction set of the float32 CPU kernels a layer call would use now
  // ("avx512", "avx2" or "generic"; see csrc/cpu/fast_path.h): for tests.
  m.def("_cpu_isa() -> str", [] { return std::string(rnnkit::cpu::fast::selected_name()); });
}
