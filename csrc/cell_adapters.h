#pragma once
// The cell ops' schemas from a backend's cell kernels, which take keep_reserve: the public
// ops (gru_cell, lstm_cell) keep no reserve, the *_cell_forward ones, which autograd runs,
// do. Registered as &gru_cell_only<&cpu::gru_cell> and so on, by each backend.

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace rnnkit {

using GruCellKernel = std::tuple<at::Tensor, at::Tensor> (*)(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool);
using LstmCellKernel = std::tuple<at::Tensor, at::Tensor, at::Tensor> (*)(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool);

template <GruCellKernel Kernel>
at::Tensor gru_cell_only(const at::Tensor& input, const at::Tensor& hx, const at::Tensor& w_ih,
                         const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                         const std::optional<at::Tensor>& b_hh) {
  return std::get<0>(Kernel(input, hx, w_ih, w_hh, b_ih, b_hh, /*keep_reserve=*/false));
}

template <GruCellKernel Kernel>
std::tuple<at::Tensor, at::Tensor> gru_cell_forward(const at::Tensor& input,
                                                    const at::Tensor& hx,
                                                    const at::Tensor& w_ih,
                                                    const at::Tensor& w_hh,
                                                    const std::optional<at::Tensor>& b_ih,
                                                    const std::optional<at::Tensor>& b_hh) {
  return Kernel(input, hx, w_ih, w_hh, b_ih, b_hh, /*keep_reserve=*/true);
}

template <LstmCellKernel Kernel>
std::tuple<at::Tensor, at::Tensor> lstm_cell_only(const at::Tensor& input, const at::Tensor& hx,
                                                  const at::Tensor& cx, const at::Tensor& w_ih,
                                                  const at::Tensor& w_hh,
                                                  const std::optional<at::Tensor>& b_ih,
                                                  const std::optional<at::Tensor>& b_hh) {
  auto [h, c, reserve] = Kernel(input, hx, cx, w_ih, w_hh, b_ih, b_hh, /*keep_reserve=*/false);
  return {h, c};
}

template <LstmCellKernel Kernel>
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh) {
  return Kernel(input, hx, cx, w_ih, w_hh, b_ih, b_hh, /*keep_reserve=*/true);
}

}  // namespace rnnkit
