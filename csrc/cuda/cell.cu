// The one-step cell ops on CUDA (cell_cuda.h), what RNNCell, GRUCell and LSTMCell run on a
// GPU: the products by cuBLAS (csrc/cell_gemms.h, as on the CPU), then one fused pointwise
// kernel that applies the gate math of rnnkit/cells.h and writes the new state (and the
// reserve, when a backward will follow); the backward is one pointwise kernel and the
// GEMMs the output mask asks for. Half types compute in float inside the kernels
// (at::opmath_type) and keep their storage dtype in memory, as the layer kernels do.
// Everything runs on the current stream of the input's device, without host synchronisation.

#include "cell_cuda.h"
#include "common.cuh"

#include <c10/cuda/CUDAGuard.h>
#include <rnnkit/cells.h>
#include <rnnkit/layer_checks.h>
#include <rnnkit/no_autocast.h>

#include "../cell_gemms.h"

namespace rnnkit {
namespace cuda {
namespace {

template <typename T>
__device__ __forceinline__ at::opmath_type<T> ld(const T* p, int64_t i) {
  return static_cast<at::opmath_type<T>>(p[i]);
}

// ------------------------------------------------------------------ forward kernels
// Element i = b * H + j of a [B, H] state; gate g of row b starts at b * G * H + g * H.

template <typename T>
__global__ void rnn_cell_kernel(T* pre, const T* b_hh, int64_t B, int64_t H, bool relu) {
  using A = at::opmath_type<T>;
  RNNKIT_GRID_STRIDE_LOOP(i, B * H) {
    A v = ld(pre, i);
    if (b_hh) v += ld(b_hh, i % H);
    pre[i] = static_cast<T>(cells::rnn_forward<A>(v, relu));
  }
}

template <typename T>
__global__ void gru_cell_kernel(const T* gi, const T* gh, const T* h_prev, T* h, T* reserve,
                                int64_t B, int64_t H) {
  using A = at::opmath_type<T>;
  RNNKIT_GRID_STRIDE_LOOP(i, B * H) {
    const int64_t b = i / H, j = i - b * H;
    const T* x = gi + b * 3 * H;
    const T* g = gh + b * 3 * H;
    const A hn = ld(g, 2 * H + j);
    const auto s = cells::gru_forward<A>(ld(x, j), ld(x, H + j), ld(x, 2 * H + j), ld(g, j),
                                         ld(g, H + j), hn, ld(h_prev, i));
    h[i] = static_cast<T>(s.h);
    if (reserve) {
      T* r = reserve + b * 4 * H;
      r[j] = static_cast<T>(s.r);
      r[H + j] = static_cast<T>(s.z);
      r[2 * H + j] = static_cast<T>(s.n);
      r[3 * H + j] = static_cast<T>(hn);
    }
  }
}

template <typename T>
__global__ void lstm_cell_kernel(const T* gates, const T* b_hh, const T* c_prev, T* h, T* c,
                                 T* reserve, int64_t B, int64_t H) {
  using A = at::opmath_type<T>;
  RNNKIT_GRID_STRIDE_LOOP(i, B * H) {
    const int64_t b = i / H, j = i - b * H;
    const T* g = gates + b * 4 * H;
    A pre[4];
    for (int k = 0; k < 4; ++k) {
      pre[k] = ld(g, k * H + j) + (b_hh ? ld(b_hh, k * H + j) : A(0));
    }
    const auto s = cells::lstm_forward<A>(pre[0], pre[1], pre[2], pre[3], ld(c_prev, i));
    h[i] = static_cast<T>(s.h);
    c[i] = static_cast<T>(s.c);
    if (reserve) {
      T* r = reserve + b * 5 * H;
      r[j] = static_cast<T>(s.i);
      r[H + j] = static_cast<T>(s.f);
      r[2 * H + j] = static_cast<T>(s.g);
      r[3 * H + j] = static_cast<T>(s.o);
      r[4 * H + j] = static_cast<T>(s.c);
    }
  }
}

// ------------------------------------------------------------------ backward kernels

template <typename T>
__global__ void rnn_cell_backward_kernel(const T* dh, const T* h, T* dpre, int64_t n, bool relu) {
  using A = at::opmath_type<T>;
  RNNKIT_GRID_STRIDE_LOOP(i, n) {
    dpre[i] = static_cast<T>(cells::rnn_backward<A>(ld(dh, i), ld(h, i), relu));
  }
}

template <typename T>
__global__ void gru_cell_backward_kernel(const T* dh, const T* reserve, const T* h_prev, T* dgi,
                                         T* dgh, T* dh_direct, int64_t B, int64_t H) {
  using A = at::opmath_type<T>;
  RNNKIT_GRID_STRIDE_LOOP(i, B * H) {
    const int64_t b = i / H, j = i - b * H;
    const T* r = reserve + b * 4 * H;
    const auto d = cells::gru_backward<A>(ld(dh, i), ld(r, j), ld(r, H + j), ld(r, 2 * H + j),
                                          ld(r, 3 * H + j), ld(h_prev, i));
    T* di = dgi + b * 3 * H;
    T* dg = dgh + b * 3 * H;
    di[j] = dg[j] = static_cast<T>(d.pre_r);
    di[H + j] = dg[H + j] = static_cast<T>(d.pre_z);
    di[2 * H + j] = static_cast<T>(d.xn);
    dg[2 * H + j] = static_cast<T>(d.hn);
    dh_direct[i] = static_cast<T>(d.h_prev);
  }
}

template <typename T>
__global__ void lstm_cell_backward_kernel(const T* dh, const T* dc, const T* reserve,
                                          const T* c_prev, T* dgates, T* dc_prev, int64_t B,
                                          int64_t H) {
  using A = at::opmath_type<T>;
  RNNKIT_GRID_STRIDE_LOOP(i, B * H) {
    const int64_t b = i / H, j = i - b * H;
    const T* r = reserve + b * 5 * H;
    const auto d = cells::lstm_backward<A>(ld(dh, i), ld(dc, i), ld(r, j), ld(r, H + j),
                                           ld(r, 2 * H + j), ld(r, 3 * H + j), ld(r, 4 * H + j),
                                           ld(c_prev, i));
    T* dg = dgates + b * 4 * H;
    dg[j] = static_cast<T>(d.pre_i);
    dg[H + j] = static_cast<T>(d.pre_f);
    dg[2 * H + j] = static_cast<T>(d.pre_g);
    dg[3 * H + j] = static_cast<T>(d.pre_o);
    dc_prev[i] = static_cast<T>(d.c_prev);
  }
}

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

#define RNNKIT_CELL_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

}  // namespace

// ------------------------------------------------------------------ RNN

Tensor rnn_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, bool relu) {
  const CellSizes sz = check_cell_forward(relu ? Cell::RNN_RELU : Cell::RNN_TANH, at::kCUDA,
                                          input, hx, nullptr, w_ih, w_hh, b_ih, b_hh,
                                          "rnn_cell");
  const c10::cuda::CUDAGuard guard(input.device());
  NoAutocast no_autocast;
  const auto dt = input.scalar_type();
  Tensor pre = cell_product(input, w_ih, b_ih, dt);  // becomes h' in place
  pre.addmm_(contiguous_as(hx, dt), contiguous_as(w_hh, dt).t());
  const Tensor bias = sz.has_bias ? contiguous_as(*b_hh, dt) : Tensor();
  RNNKIT_CELL_DISPATCH(dt, "rnnkit::rnn_cell", [&] {
    launch_elementwise(sz.B * sz.H, rnn_cell_kernel<scalar_t>, pre.mutable_data_ptr<scalar_t>(),
                       ptr_or_null<scalar_t>(bias), sz.B, sz.H, relu);
  });
  return pre;
}

CellGrads6 rnn_cell_backward(const Tensor& grad_h, const Tensor& input, const Tensor& hx,
                             const Tensor& w_ih, const Tensor& w_hh, bool has_bias, bool relu,
                             const Tensor& h, Mask3 output_mask) {
  const Cell cell = relu ? Cell::RNN_RELU : Cell::RNN_TANH;
  const CellSizes sz = check_cell_forward(cell, at::kCUDA, input, hx, nullptr, w_ih, w_hh,
                                          std::nullopt, std::nullopt, "rnn_cell_backward");
  check_cell_backward(cell, sz, input, grad_h, nullptr, h, "rnn_cell_backward");
  const c10::cuda::CUDAGuard guard(input.device());
  NoAutocast no_autocast;
  const auto dt = input.scalar_type();
  const Tensor dh = contiguous_as(grad_h, dt), h_new = contiguous_as(h, dt);
  Tensor dpre = at::empty({sz.B, sz.H}, input.options());
  RNNKIT_CELL_DISPATCH(dt, "rnnkit::rnn_cell_backward", [&] {
    launch_elementwise(sz.B * sz.H, rnn_cell_backward_kernel<scalar_t>,
                       dh.const_data_ptr<scalar_t>(), h_new.const_data_ptr<scalar_t>(),
                       dpre.mutable_data_ptr<scalar_t>(), sz.B * sz.H, relu);
  });
  return cell_step_grads(dpre, dpre, input, hx, w_ih, w_hh, Tensor(), has_bias, output_mask, dt);
}

// ------------------------------------------------------------------ GRU

std::tuple<Tensor, Tensor> gru_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                                    const Tensor& w_hh, const OptTensor& b_ih,
                                    const OptTensor& b_hh, bool keep_reserve) {
  const CellSizes sz =
      check_cell_forward(Cell::GRU, at::kCUDA, input, hx, nullptr, w_ih, w_hh, b_ih, b_hh,
                         keep_reserve ? "gru_cell_forward" : "gru_cell");
  const c10::cuda::CUDAGuard guard(input.device());
  NoAutocast no_autocast;
  const auto dt = input.scalar_type();
  const int64_t B = sz.B, H = sz.H;
  const Tensor gi = cell_product(input, w_ih, b_ih, dt);  // [B, 3H] with b_ih
  const Tensor gh = cell_product(hx, w_hh, b_hh, dt);     // [B, 3H] with b_hh
  const Tensor h_prev = contiguous_as(hx, dt);
  Tensor h = at::empty({B, H}, input.options());
  Tensor reserve = keep_reserve ? at::empty({B, 4 * H}, input.options()) : input.new_empty({0});
  RNNKIT_CELL_DISPATCH(dt, "rnnkit::gru_cell", [&] {
    launch_elementwise(B * H, gru_cell_kernel<scalar_t>, gi.const_data_ptr<scalar_t>(),
                       gh.const_data_ptr<scalar_t>(), h_prev.const_data_ptr<scalar_t>(),
                       h.mutable_data_ptr<scalar_t>(),
                       keep_reserve ? reserve.mutable_data_ptr<scalar_t>() : nullptr, B, H);
  });
  return {h, reserve};
}

CellGrads6 gru_cell_backward(const Tensor& grad_h, const Tensor& input, const Tensor& hx,
                             const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
                             const Tensor& reserve, Mask3 output_mask) {
  const CellSizes sz = check_cell_forward(Cell::GRU, at::kCUDA, input, hx, nullptr, w_ih, w_hh,
                                          std::nullopt, std::nullopt, "gru_cell_backward");
  check_cell_backward(Cell::GRU, sz, input, grad_h, nullptr, reserve, "gru_cell_backward");
  const c10::cuda::CUDAGuard guard(input.device());
  NoAutocast no_autocast;
  const auto dt = input.scalar_type();
  const int64_t B = sz.B, H = sz.H;
  const Tensor dh = contiguous_as(grad_h, dt), res = contiguous_as(reserve, dt);
  const Tensor h_prev = contiguous_as(hx, dt);
  Tensor dgi = at::empty({B, 3 * H}, input.options()), dgh = at::empty({B, 3 * H}, input.options());
  Tensor dh_direct = at::empty({B, H}, input.options());
  RNNKIT_CELL_DISPATCH(dt, "rnnkit::gru_cell_backward", [&] {
    launch_elementwise(B * H, gru_cell_backward_kernel<scalar_t>, dh.const_data_ptr<scalar_t>(),
                       res.const_data_ptr<scalar_t>(), h_prev.const_data_ptr<scalar_t>(),
                       dgi.mutable_data_ptr<scalar_t>(), dgh.mutable_data_ptr<scalar_t>(),
                       dh_direct.mutable_data_ptr<scalar_t>(), B, H);
  });
  return cell_step_grads(dgi, dgh, input, hx, w_ih, w_hh, dh_direct, has_bias, output_mask, dt);
}

// ------------------------------------------------------------------ LSTM

std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& input, const Tensor& hx,
                                             const Tensor& cx, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih,
                                             const OptTensor& b_hh, bool keep_reserve) {
  const CellSizes sz =
      check_cell_forward(Cell::LSTM, at::kCUDA, input, hx, &cx, w_ih, w_hh, b_ih, b_hh,
                         keep_reserve ? "lstm_cell_forward" : "lstm_cell");
  const c10::cuda::CUDAGuard guard(input.device());
  NoAutocast no_autocast;
  const auto dt = input.scalar_type();
  const int64_t B = sz.B, H = sz.H;
  Tensor gates = cell_product(input, w_ih, b_ih, dt);  // [B, 4H]
  gates.addmm_(contiguous_as(hx, dt), contiguous_as(w_hh, dt).t());
  const Tensor c_prev = contiguous_as(cx, dt);
  const Tensor bias = sz.has_bias ? contiguous_as(*b_hh, dt) : Tensor();
  Tensor h = at::empty({B, H}, input.options()), c = at::empty({B, H}, input.options());
  Tensor reserve = keep_reserve ? at::empty({B, 5 * H}, input.options()) : input.new_empty({0});
  RNNKIT_CELL_DISPATCH(dt, "rnnkit::lstm_cell", [&] {
    launch_elementwise(B * H, lstm_cell_kernel<scalar_t>, gates.const_data_ptr<scalar_t>(),
                       ptr_or_null<scalar_t>(bias), c_prev.const_data_ptr<scalar_t>(),
                       h.mutable_data_ptr<scalar_t>(), c.mutable_data_ptr<scalar_t>(),
                       keep_reserve ? reserve.mutable_data_ptr<scalar_t>() : nullptr, B, H);
  });
  return {h, c, reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
    const Tensor& reserve, Mask3 output_mask) {
  const CellSizes sz = check_cell_forward(Cell::LSTM, at::kCUDA, input, hx, &cx, w_ih, w_hh,
                                          std::nullopt, std::nullopt, "lstm_cell_backward");
  check_cell_backward(Cell::LSTM, sz, input, grad_h, &grad_c, reserve, "lstm_cell_backward");
  const c10::cuda::CUDAGuard guard(input.device());
  NoAutocast no_autocast;
  const auto dt = input.scalar_type();
  const int64_t B = sz.B, H = sz.H;
  const Tensor dh = contiguous_as(grad_h, dt), dc_new = contiguous_as(grad_c, dt);
  const Tensor res = contiguous_as(reserve, dt), c_prev = contiguous_as(cx, dt);
  Tensor dg = at::empty({B, 4 * H}, input.options()), dc = at::empty({B, H}, input.options());
  RNNKIT_CELL_DISPATCH(dt, "rnnkit::lstm_cell_backward", [&] {
    launch_elementwise(B * H, lstm_cell_backward_kernel<scalar_t>, dh.const_data_ptr<scalar_t>(),
                       dc_new.const_data_ptr<scalar_t>(), res.const_data_ptr<scalar_t>(),
                       c_prev.const_data_ptr<scalar_t>(), dg.mutable_data_ptr<scalar_t>(),
                       dc.mutable_data_ptr<scalar_t>(), B, H);
  });
  auto [dx, dhx, dw_ih, dw_hh, db_ih, db_hh] =
      cell_step_grads(dg, dg, input, hx, w_ih, w_hh, Tensor(), has_bias, output_mask, dt);
  const Tensor dc_out = output_mask[1] ? dc : input.new_empty({0});
  return {dx, dhx, dc_out, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace cuda
}  // namespace rnnkit
