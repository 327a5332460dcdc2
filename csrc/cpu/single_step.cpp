// Layer ops over a single step, run by the cell kernels (single_step.h).

#include "single_step.h"

#include <ATen/TensorOperators.h>

#include <algorithm>

#include "cell_ops_cpu.h"

namespace rnnkit {
namespace cpu {
namespace one_step {
namespace {

// The gradient of h' from the layer's: the output's one step plus h_n's.
Tensor step_grad(const Tensor& grad_output, const Tensor& grad_h_n) {
  return grad_output.select(0, 0) + grad_h_n;
}

// A layer input's gradient [1, B, I] from a cell's [B, I] (empty when not computed).
Tensor as_layer(const Tensor& dx, bool computed) { return computed ? dx.unsqueeze(0) : dx; }

}  // namespace

bool applies(int64_t T, int64_t B, int64_t H, const std::vector<int64_t>& len, bool proj) {
  return T == 1 && B > 0 && H > 0 && !proj &&
         std::all_of(len.begin(), len.end(), [](int64_t n) { return n >= 1; });
}

std::tuple<Tensor, Tensor, Tensor> rnn(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                       const Tensor& w_hh, const OptTensor& b_ih,
                                       const OptTensor& b_hh, bool relu) {
  const Tensor h = rnn_cell(input.select(0, 0), h0, w_ih, w_hh, b_ih, b_hh, relu);
  // Outputs of an op may not share storage: h_n is a copy.
  return {h.unsqueeze(0), h.clone(), input.new_empty({0})};
}

Grads6 rnn_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
                    const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
                    bool relu, const Tensor& output, bool input_grad, bool state_grad) {
  auto [dx, dh0, dw_ih, dw_hh, db_ih, db_hh] =
      rnn_cell_backward(step_grad(grad_output, grad_h_n), input.select(0, 0), h0, w_ih, w_hh,
                        has_bias, relu, output.select(0, 0), {input_grad, state_grad, true});
  return {as_layer(dx, input_grad), dh0, dw_ih, dw_hh, db_ih, db_hh};
}

std::tuple<Tensor, Tensor, Tensor> gru(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                       const Tensor& w_hh, const OptTensor& b_ih,
                                       const OptTensor& b_hh, bool keep_reserve) {
  auto [h, reserve] = gru_cell(input.select(0, 0), h0, w_ih, w_hh, b_ih, b_hh, keep_reserve);
  return {h.unsqueeze(0), h.clone(),
          keep_reserve ? reserve.unsqueeze(0) : input.new_empty({0})};
}

Grads6 gru_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
                    const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
                    const Tensor& reserve, bool input_grad, bool state_grad) {
  auto [dx, dh0, dw_ih, dw_hh, db_ih, db_hh] =
      gru_cell_backward(step_grad(grad_output, grad_h_n), input.select(0, 0), h0, w_ih, w_hh,
                        has_bias, reserve.select(0, 0), {input_grad, state_grad, true});
  return {as_layer(dx, input_grad), dh0, dw_ih, dw_hh, db_ih, db_hh};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm(const Tensor& input, const Tensor& h0,
                                                const Tensor& c0, const Tensor& w_ih,
                                                const Tensor& w_hh, const OptTensor& b_ih,
                                                const OptTensor& b_hh, bool keep_reserve) {
  auto [h, c, reserve] =
      lstm_cell(input.select(0, 0), h0, c0, w_ih, w_hh, b_ih, b_hh, keep_reserve);
  return {h.unsqueeze(0), h.clone(), c,
          keep_reserve ? reserve.unsqueeze(0) : input.new_empty({0})};
}

Grads8 lstm_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
                     const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                     const Tensor& w_hh, bool has_bias, const Tensor& reserve, bool input_grad,
                     bool state_grad) {
  auto [dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh] = lstm_cell_backward(
      step_grad(grad_output, grad_h_n), grad_c_n, input.select(0, 0), h0, c0, w_ih, w_hh,
      has_bias, reserve.select(0, 0), {input_grad, state_grad, true});
  return {as_layer(dx, input_grad), dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, input.new_empty({0})};
}

}  // namespace one_step
}  // namespace cpu
}  // namespace rnnkit
