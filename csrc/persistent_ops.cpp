// The operators of the persistent recurrence (not used by the modules yet: they
// run only when called by name, until the kernels have passed on a GPU).
//
//   persistent_plan(cell, batch, hidden, width, dtype, <device limits>)
//       -> (fits, reason, geometry): the planner on explicit device properties,
//       for CPU tests and for reasoning about other GPUs.
//   persistent_plan_current_device(cell, batch, hidden, width, dtype)
//       -> the same on the current CUDA device with the compiled kernel's register
//       count: exactly the decision the layer ops below make (CUDA builds).
//   lstm_layer_persistent / gru_layer_persistent: the contract of lstm_layer /
//       gru_layer (layer_contract.h), forward only, computed by one persistent
//       launch. They fail with the planner's reason where the plan does not fit
//       and for an LSTM projection; the caller chooses the standard op then.

#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "rnnkit/persistent_plan.h"

#ifdef RNNKIT_WITH_CUDA
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/persistent/persistent_forward.h"
#endif

namespace rnnkit {
namespace {

using persistent::DType;
using PlanResult = std::tuple<bool, std::string, c10::Dict<std::string, int64_t>>;

Cell parse_cell(const std::string& cell) {
  if (cell == "lstm") return Cell::LSTM;
  if (cell == "gru") return Cell::GRU;
  if (cell == "rnn_tanh") return Cell::RNN_TANH;
  if (cell == "rnn_relu") return Cell::RNN_RELU;
  TORCH_CHECK(false, "unknown cell '", cell, "' (lstm, gru, rnn_tanh, rnn_relu)");
}

DType to_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return DType::Float32;
    case c10::ScalarType::Half: return DType::Float16;
    case c10::ScalarType::BFloat16: return DType::BFloat16;
    case c10::ScalarType::Double: return DType::Float64;
    default: TORCH_CHECK(false, "rnnkit: unsupported dtype ", t);
  }
}

PlanResult to_result(const persistent::Plan& p) {
  c10::Dict<std::string, int64_t> g;
  if (p.fits) {
    g.insert("blocks", p.blocks);
    g.insert("threads", p.threads);
    g.insert("units_per_block", p.units_per_block);
    g.insert("blocks_per_sm", p.blocks_per_sm);
    g.insert("k_warps", p.k_warps);
    g.insert("m_tiles", p.m_tiles);
    g.insert("n_tiles", p.n_tiles);
    g.insert("rows_padded", p.rows_padded);
    g.insert("batch_padded", p.batch_padded);
    g.insert("row_stride", p.row_stride);
    g.insert("smem_bytes", p.smem_bytes);
  }
  return {p.fits, p.reason, g};
}

PlanResult plan_op(const std::string& cell, int64_t batch, int64_t hidden, int64_t width,
                   c10::ScalarType dtype, int64_t sm_count, int64_t smem_per_block_optin,
                   int64_t smem_per_sm, int64_t regs_per_sm, int64_t max_threads_per_block,
                   int64_t max_threads_per_sm, bool cooperative_launch,
                   int64_t kernel_regs_per_thread) {
  persistent::Problem problem{parse_cell(cell), batch, hidden, width, to_dtype(dtype)};
  persistent::DeviceLimits limits;
  limits.sm_count = sm_count;
  limits.smem_per_block_optin = smem_per_block_optin;
  limits.smem_per_sm = smem_per_sm;
  limits.regs_per_sm = regs_per_sm;
  limits.max_threads_per_block = max_threads_per_block;
  limits.max_threads_per_sm = max_threads_per_sm;
  limits.cooperative_launch = cooperative_launch;
  limits.kernel_regs_per_thread = kernel_regs_per_thread;
  return to_result(persistent::plan(problem, limits));
}

#ifdef RNNKIT_WITH_CUDA

// The plan on the current device, with the register count of the kernel that
// would run.
persistent::Plan plan_here(Cell cell, int64_t batch, int64_t hidden, int64_t width, DType dtype) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  persistent::DeviceLimits limits;
  limits.sm_count = prop->multiProcessorCount;
  limits.smem_per_block_optin = static_cast<int64_t>(prop->sharedMemPerBlockOptin);
  limits.smem_per_sm = static_cast<int64_t>(prop->sharedMemPerMultiprocessor);
  limits.regs_per_sm = prop->regsPerMultiprocessor;
  limits.max_threads_per_block = prop->maxThreadsPerBlock;
  limits.max_threads_per_sm = prop->maxThreadsPerMultiProcessor;
  limits.cooperative_launch = prop->cooperativeLaunch != 0;
  const int64_t n_tiles = (batch + 7) / 8;
  const auto info = persistent::forward_kernel_info(cell, dtype, n_tiles);
  if (info.regs_per_thread == 0) {
    persistent::Plan none;
    none.reason = "no persistent kernel image for this device";
    return none;
  }
  limits.kernel_regs_per_thread = info.regs_per_thread;
  limits.max_threads_per_block = std::min<int64_t>(limits.max_threads_per_block,
                                                   info.max_threads_per_block);
  return persistent::plan({cell, batch, hidden, width, dtype}, limits);
}

PlanResult plan_current_device_op(const std::string& cell, int64_t batch, int64_t hidden,
                                  int64_t width, c10::ScalarType dtype) {
  return to_result(plan_here(parse_cell(cell), batch, hidden, width, to_dtype(dtype)));
}

// `t` contiguous and 16-byte aligned (a copy where it is not).
at::Tensor aligned(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 != 0) c = c.clone();
  return c;
}

const void* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr() : nullptr;
}

struct LayerOutputs {
  at::Tensor output, h_n, c_n, reserve;
};

LayerOutputs run_layer(Cell cell, const at::Tensor& input_, const std::optional<at::Tensor>& lengths_,
                       const at::Tensor& h0_, const std::optional<at::Tensor>& c0_,
                       const at::Tensor& w_ih, const at::Tensor& w_hh_,
                       const std::optional<at::Tensor>& b_ih_,
                       const std::optional<at::Tensor>& b_hh_, bool reverse) {
  const char* name = cell == Cell::LSTM ? "lstm_layer_persistent" : "gru_layer_persistent";
  TORCH_CHECK(input_.is_cuda(), name, ": input must be a CUDA tensor");
  TORCH_CHECK(input_.dim() == 3, name, ": input must be [T, B, I]");
  const int64_t G = gate_count(cell);
  const int64_t T = input_.size(0), B = input_.size(1), I = input_.size(2);
  const int64_t H = w_hh_.size(0) / G;
  const int64_t P = w_hh_.size(1);
  TORCH_CHECK(w_hh_.dim() == 2 && w_hh_.size(0) == G * H, name, ": w_hh must be [G*H, P]");
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == G * H && w_ih.size(1) == I, name,
              ": w_ih must be [G*H, I]");
  TORCH_CHECK(h0_.dim() == 2 && h0_.size(0) == B && h0_.size(1) == P, name, ": h0 must be [B, P]");
  const auto dtype = input_.scalar_type();
  for (const at::Tensor* t : {&h0_, &w_ih, &w_hh_}) {
    TORCH_CHECK(t->scalar_type() == dtype && t->device() == input_.device(), name,
                ": all tensors must share input's dtype and device");
  }
  const c10::cuda::CUDAGuard guard(input_.device());

  const persistent::Plan plan = plan_here(cell, B, H, P, to_dtype(dtype));
  TORCH_CHECK(plan.fits, name, ": the persistent kernel does not apply here: ", plan.reason);

  const at::Tensor input = input_.contiguous();
  const at::Tensor w_hh = aligned(w_hh_);
  const at::Tensor h0 = aligned(h0_);
  at::Tensor c0;
  if (cell == Cell::LSTM) {
    TORCH_CHECK(c0_.has_value() && c0_->dim() == 2 && c0_->size(0) == B && c0_->size(1) == H,
                name, ": c0 must be [B, H]");
    c0 = c0_->contiguous();
  }
  at::Tensor b_hh;
  if (b_hh_.has_value() && b_hh_->defined()) b_hh = b_hh_->contiguous();
  at::Tensor lengths;
  if (lengths_.has_value() && lengths_->defined()) {
    TORCH_CHECK(lengths_->dim() == 1 && lengths_->size(0) == B, name, ": lengths must be [B]");
    lengths = lengths_->to(input.device(), at::kLong).contiguous();
  }

  // The hoisted input projection: one GEMM for all steps, b_ih folded in.
  const at::Tensor x2d = input.view({T * B, I});
  at::Tensor input_proj = (b_ih_.has_value() && b_ih_->defined())
                              ? at::addmm(*b_ih_, x2d, w_ih.t())
                              : at::mm(x2d, w_ih.t());

  LayerOutputs out;
  out.output = at::empty({T, B, P}, input.options());
  out.h_n = at::empty({B, P}, input.options());
  if (cell == Cell::LSTM) out.c_n = at::empty({B, H}, input.options());
  out.reserve = at::empty({T, B, reserve_width(cell) * H}, input.options());
  at::Tensor counter = at::zeros({1}, input.options().dtype(at::kInt));

  persistent::ForwardArgs args{};
  args.input_proj = input_proj.data_ptr();
  args.w_hh = w_hh.data_ptr();
  args.b_hh = b_hh.defined() ? b_hh.data_ptr() : nullptr;
  args.h0 = h0.data_ptr();
  args.c0 = c0.defined() ? c0.data_ptr() : nullptr;
  args.lengths = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
  args.output = out.output.data_ptr();
  args.h_n = out.h_n.data_ptr();
  args.c_n = out.c_n.defined() ? out.c_n.data_ptr() : nullptr;
  args.reserve = out.reserve.data_ptr();
  args.counter = static_cast<unsigned int*>(counter.data_ptr());
  args.steps = T;
  args.batch = B;
  args.hidden = H;
  args.width = P;
  args.reverse = reverse;
  persistent::set_geometry(args, plan);
  const std::string error = persistent::launch_forward(
      cell, to_dtype(dtype), args, plan, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(error.empty(), name, ": ", error);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_persistent(
    const at::Tensor& input, const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, bool reverse) {
  TORCH_CHECK(!(w_hr.has_value() && w_hr->defined()),
              "lstm_layer_persistent: LSTM projections (w_hr) are not supported");
  auto out = run_layer(Cell::LSTM, input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse);
  return {out.output, out.h_n, out.c_n, out.reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_persistent(
    const at::Tensor& input, const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, bool reverse) {
  auto out = run_layer(Cell::GRU, input, lengths, h0, std::nullopt, w_ih, w_hh, b_ih, b_hh,
                       reverse);
  return {out.output, out.h_n, out.reserve};
}

#else

PlanResult plan_current_device_op(const std::string&, int64_t, int64_t, int64_t,
                                  c10::ScalarType) {
  TORCH_CHECK(false, "persistent_plan_current_device: rnnkit was built without CUDA");
}

#endif  // RNNKIT_WITH_CUDA

}  // namespace
}  // namespace rnnkit

TORCH_LIBRARY_FRAGMENT(rnnkit, m) {
  m.def(
      "persistent_plan(str cell, int batch, int hidden, int width, ScalarType dtype, "
      "int sm_count, int smem_per_block_optin, int smem_per_sm, int regs_per_sm, "
      "int max_threads_per_block, int max_threads_per_sm, bool cooperative_launch=True, "
      "int kernel_regs_per_thread=128) -> (bool fits, str reason, Dict(str, int) geometry)",
      &rnnkit::plan_op);
  m.def(
      "persistent_plan_current_device(str cell, int batch, int hidden, int width, "
      "ScalarType dtype) -> (bool fits, str reason, Dict(str, int) geometry)",
      &rnnkit::plan_current_device_op);
  m.def(
      "lstm_layer_persistent(Tensor input, Tensor? lengths, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve)");
  m.def(
      "gru_layer_persistent(Tensor input, Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor reserve)");
}

#ifdef RNNKIT_WITH_CUDA
TORCH_LIBRARY_IMPL(rnnkit, CUDA, m) {
  m.impl("lstm_layer_persistent", &rnnkit::lstm_layer_persistent);
  m.impl("gru_layer_persistent", &rnnkit::gru_layer_persistent);
}
#endif
