// The rnnkit operator library: the schemas of the ops, and the Python module that
// loading `rnnkit._C` initialises. Kernels register themselves per backend
// (csrc/cpu/register_cpu.cpp, csrc/cuda/register_cuda.cpp), autograd in C++
// (csrc/layer_autograd.cpp, csrc/cell_autograd.cpp), fake kernels and vmap rules in
// Python (rnnkit/ops.py, rnnkit/batching.py).
//
// The layer ops run one layer in one direction over a whole sequence (see
// csrc/include/rnnkit/layer_contract.h):
//   {rnn,gru,lstm}_layer: the public, differentiable op -> (output, h_n[, c_n]). Its
//     autograd runs {gru,lstm}_layer_forward, which also returns the reserve, only when
//     a backward can follow (RNN: rnn_layer itself; its backward reads the output).
//   {rnn,gru,lstm}_layer_backward: the gradients of a layer from those of its outputs;
//     with input_grad=false the input's comes back empty, uncomputed (e.g. a network's
//     first layer), and with state_grad=false so do those of h0 (and c0). Absent
//     optional arguments get empty gradients.
//
// And one step of each cell, what RNNCell, GRUCell and LSTMCell run:
//   {rnn,gru,lstm}_cell: input [B, I], hx [B, H] (cx [B, H]), w_ih [G*H, I],
//     w_hh [G*H, H], biases [G*H] or absent -> the new state. Differentiable: its
//     autograd (csrc/cell_autograd.cpp) runs {gru,lstm}_cell_forward, which also
//     returns the reserve (GRU [B, 4H]: r, z, n, hn; LSTM [B, 5H]: i, f, g, o, c,
//     in input's dtype), only when a backward can follow; RNN needs none (h' is
//     enough).
//   {rnn,gru,lstm}_cell_backward: the gradients of the step from those of the new
//     state. output_mask = (input, states, weights) says which to compute; the
//     others come back empty, as do bias gradients without biases.

#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import rnnkit._C` only has to load this library so that the static
// TORCH_LIBRARY initialisers run; the module itself is empty.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

#ifdef RNNKIT_WITH_CUDA
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif

TORCH_LIBRARY(rnnkit, m) {
  // Whether this build compiled the CUDA kernels (setup.py defines RNNKIT_WITH_CUDA
  // for CUDA builds): lets tests on machines without a GPU check their registration.
  m.def("_built_with_cuda() -> bool", [] { return kBuiltWithCuda; });

  m.def(
      "rnn_layer(Tensor input, Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse, bool relu) -> (Tensor output, Tensor h_n)");
  m.def(
      "rnn_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor? lengths, "
      "Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, bool reverse, bool relu, "
      "Tensor output, bool input_grad, bool state_grad=True) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");

  m.def(
      "gru_layer(Tensor input, Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse) -> (Tensor output, Tensor h_n)");
  m.def(
      "gru_layer_forward(Tensor input, Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor reserve)");
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor? lengths, "
      "Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, bool reverse, "
      "Tensor output, Tensor reserve, bool input_grad, bool state_grad=True) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");

  m.def(
      "lstm_layer(Tensor input, Tensor? lengths, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor c_n)");
  m.def(
      "lstm_layer_forward(Tensor input, Tensor? lengths, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve)");
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor? lengths, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, bool reverse, Tensor output, Tensor reserve, bool input_grad, "
      "bool state_grad=True) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");

  m.def(
      "rnn_cell(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "bool relu) -> Tensor");
  m.def(
      "rnn_cell_backward(Tensor grad_h, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "bool has_bias, bool relu, Tensor h, bool[3] output_mask) "
      "-> (Tensor grad_input, Tensor grad_hx, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "gru_cell(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
      "-> Tensor");
  m.def(
      "gru_cell_forward(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh) -> (Tensor h, Tensor reserve)");
  m.def(
      "gru_cell_backward(Tensor grad_h, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "bool has_bias, Tensor reserve, bool[3] output_mask) "
      "-> (Tensor grad_input, Tensor grad_hx, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "lstm_cell(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh) -> (Tensor h, Tensor c)");
  m.def(
      "lstm_cell_forward(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh) -> (Tensor h, Tensor c, Tensor reserve)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor input, Tensor hx, Tensor cx, "
      "Tensor w_ih, Tensor w_hh, bool has_bias, Tensor reserve, bool[3] output_mask) "
      "-> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
}
