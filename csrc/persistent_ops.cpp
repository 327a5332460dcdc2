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
//   lstm_bidirectional_layer_persistent / gru_...: both directions of one
//       bidirectional layer in one launch; the outputs of the forward direction's
//       layer op followed by those of the reverse direction's.

#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

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
#include "rnnkit/layer_checks.h"
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
    g.insert("directions", p.directions);
    g.insert("threads", p.threads);
    g.insert("units_per_block", p.units_per_block);
    g.insert("blocks_per_sm", p.blocks_per_sm);
    g.insert("k_warps", p.k_warps);
    g.insert("m_tiles", p.m_tiles);
    g.insert("n_tiles", p.n_tiles);
    g.insert("rows_padded", p.rows_padded);
    g.insert("batch_padded", p.batch_padded);
    g.insert("row_stride", p.row_stride);
    g.insert("partial_stride", p.partial_stride);
    g.insert("smem_bytes", p.smem_bytes);
  }
  return {p.fits, p.reason, g};
}

PlanResult plan_op(const std::string& cell, int64_t batch, int64_t hidden, int64_t width,
                   c10::ScalarType dtype, int64_t sm_count, int64_t smem_per_block_optin,
                   int64_t smem_per_sm, int64_t regs_per_sm, int64_t max_threads_per_block,
                   int64_t max_threads_per_sm, bool cooperative_launch,
                   int64_t kernel_regs_per_thread, int64_t directions) {
  persistent::Problem problem{parse_cell(cell), batch, hidden, width, to_dtype(dtype),
                              directions};
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
persistent::Plan plan_here(Cell cell, int64_t batch, int64_t hidden, int64_t width, DType dtype,
                           int64_t directions) {
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
  return persistent::plan({cell, batch, hidden, width, dtype, directions}, limits);
}

PlanResult plan_current_device_op(const std::string& cell, int64_t batch, int64_t hidden,
                                  int64_t width, c10::ScalarType dtype, int64_t directions) {
  return to_result(
      plan_here(parse_cell(cell), batch, hidden, width, to_dtype(dtype), directions));
}

// `t` contiguous and 16-byte aligned (a copy where it is not).
at::Tensor aligned(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 != 0) c = c.clone();
  return c;
}

// One direction's inputs (layer_contract.h).
struct DirectionInputs {
  at::Tensor h0;                  // [B, P]
  std::optional<at::Tensor> c0;   // [B, H], LSTM
  at::Tensor w_ih, w_hh;          // [G*H, I], [G*H, P]
  std::optional<at::Tensor> b_ih, b_hh;
  bool reverse;
};

struct LayerOutputs {
  at::Tensor output, h_n, c_n, reserve;
};

bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Runs one direction, or two in one launch, over the same input.
std::vector<LayerOutputs> run_directions(const char* name, Cell cell, const at::Tensor& input_,
                                         const std::optional<at::Tensor>& lengths_,
                                         const std::vector<DirectionInputs>& dirs) {
  // The layer ops' own checks (metadata only), for each direction.
  LayerSizes s;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const DirectionInputs& d = dirs[i];
    const LayerSizes di = check_layer_forward(
        cell, at::kCUDA, input_, lengths_, d.h0, cell == Cell::LSTM ? &*d.c0 : nullptr, d.w_ih,
        d.w_hh, d.b_ih, d.b_hh, std::nullopt, name);
    TORCH_CHECK(i == 0 || di.H == s.H, "rnnkit::", name,
                ": both directions must have the same hidden size, got ", s.H, " and ", di.H);
    s = di;
  }
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H, P = s.P;
  const auto dtype = input_.scalar_type();
  const c10::cuda::CUDAGuard guard(input_.device());

  persistent::Plan plan = plan_here(cell, B, H, P, to_dtype(dtype),
                                    static_cast<int64_t>(dirs.size()));
  TORCH_CHECK(plan.fits, "rnnkit::", name, ": the persistent kernel does not apply here: ",
              plan.reason);

  const at::Tensor input = input_.contiguous();
  const at::Tensor x2d = input.view({T * B, I});
  const at::Tensor lengths = present(lengths_) ? lengths_->contiguous() : at::Tensor();
  // Zero-initialised step counters, one per direction (their own barrier each).
  const at::Tensor counters =
      at::zeros({static_cast<int64_t>(dirs.size())}, input.options().dtype(at::kInt));

  // Keeps the operands alive until the launch has been queued (the caching
  // allocator keeps their memory from reuse by later work on this stream).
  std::vector<at::Tensor> keep;
  std::vector<LayerOutputs> outs(dirs.size());
  persistent::ForwardLaunch launch{};
  for (size_t i = 0; i < dirs.size(); ++i) {
    const DirectionInputs& d = dirs[i];
    const at::Tensor w_hh = aligned(d.w_hh);
    const at::Tensor h0 = aligned(d.h0);
    const at::Tensor c0 = cell == Cell::LSTM ? d.c0->contiguous() : at::Tensor();
    const at::Tensor b_hh = present(d.b_hh) ? d.b_hh->contiguous() : at::Tensor();
    // The hoisted input projection: one GEMM for all steps, b_ih folded in.
    const at::Tensor input_proj =
        present(d.b_ih) ? at::addmm(*d.b_ih, x2d, d.w_ih.t()) : at::mm(x2d, d.w_ih.t());
    keep.insert(keep.end(), {w_hh, h0, c0, b_hh, input_proj});

    LayerOutputs& out = outs[i];
    out.output = at::empty({T, B, P}, input.options());
    out.h_n = at::empty({B, P}, input.options());
    if (cell == Cell::LSTM) out.c_n = at::empty({B, H}, input.options());
    out.reserve = at::empty({T, B, reserve_width(cell) * H}, input.options());

    persistent::ForwardArgs& args = launch.direction[i];
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
    args.counter = static_cast<unsigned int*>(counters.data_ptr()) + i;
    args.steps = T;
    args.batch = B;
    args.hidden = H;
    args.width = P;
    args.reverse = d.reverse;
    persistent::set_geometry(args, plan);
  }
  const std::string error = persistent::launch_forward(
      cell, to_dtype(dtype), launch, plan, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(error.empty(), "rnnkit::", name, ": ", error);
  return outs;
}

void check_no_projection(const char* name, const std::optional<at::Tensor>& w_hr) {
  TORCH_CHECK(!present(w_hr), "rnnkit::", name, ": LSTM projections (w_hr) are not supported");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_persistent(
    const at::Tensor& input, const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, bool reverse) {
  const char* name = "lstm_layer_persistent";
  check_no_projection(name, w_hr);
  auto outs = run_directions(name, Cell::LSTM, input, lengths,
                             {{h0, c0, w_ih, w_hh, b_ih, b_hh, reverse}});
  return {outs[0].output, outs[0].h_n, outs[0].c_n, outs[0].reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_persistent(
    const at::Tensor& input, const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, bool reverse) {
  auto outs = run_directions("gru_layer_persistent", Cell::GRU, input, lengths,
                             {{h0, std::nullopt, w_ih, w_hh, b_ih, b_hh, reverse}});
  return {outs[0].output, outs[0].h_n, outs[0].reserve};
}

using Lstm2 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor>;

// Both directions of a bidirectional layer in one launch: the outputs of
// lstm_layer(reverse=False) followed by those of lstm_layer(reverse=True).
Lstm2 lstm_bidirectional_layer_persistent(
    const at::Tensor& input, const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const at::Tensor& h0_reverse, const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const std::optional<at::Tensor>& b_ih_reverse,
    const std::optional<at::Tensor>& b_hh_reverse) {
  auto o = run_directions("lstm_bidirectional_layer_persistent", Cell::LSTM, input, lengths,
                          {{h0, c0, w_ih, w_hh, b_ih, b_hh, false},
                           {h0_reverse, c0_reverse, w_ih_reverse, w_hh_reverse, b_ih_reverse,
                            b_hh_reverse, true}});
  return {o[0].output, o[0].h_n, o[0].c_n, o[0].reserve,
          o[1].output, o[1].h_n, o[1].c_n, o[1].reserve};
}

using Gru2 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Gru2 gru_bidirectional_layer_persistent(
    const at::Tensor& input, const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, const at::Tensor& h0_reverse,
    const at::Tensor& w_ih_reverse, const at::Tensor& w_hh_reverse,
    const std::optional<at::Tensor>& b_ih_reverse,
    const std::optional<at::Tensor>& b_hh_reverse) {
  auto o = run_directions("gru_bidirectional_layer_persistent", Cell::GRU, input, lengths,
                          {{h0, std::nullopt, w_ih, w_hh, b_ih, b_hh, false},
                           {h0_reverse, std::nullopt, w_ih_reverse, w_hh_reverse, b_ih_reverse,
                            b_hh_reverse, true}});
  return {o[0].output, o[0].h_n, o[0].reserve, o[1].output, o[1].h_n, o[1].reserve};
}

#else

PlanResult plan_current_device_op(const std::string&, int64_t, int64_t, int64_t,
                                  c10::ScalarType, int64_t) {
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
      "int kernel_regs_per_thread=128, int directions=1) "
      "-> (bool fits, str reason, Dict(str, int) geometry)",
      &rnnkit::plan_op);
  m.def(
      "persistent_plan_current_device(str cell, int batch, int hidden, int width, "
      "ScalarType dtype, int directions=1) -> (bool fits, str reason, Dict(str, int) geometry)",
      &rnnkit::plan_current_device_op);
  m.def(
      "lstm_layer_persistent(Tensor input, Tensor? lengths, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve)");
  m.def(
      "gru_layer_persistent(Tensor input, Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse) "
      "-> (Tensor output, Tensor h_n, Tensor reserve)");
  m.def(
      "lstm_bidirectional_layer_persistent(Tensor input, Tensor? lengths, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0_reverse, "
      "Tensor c0_reverse, Tensor w_ih_reverse, Tensor w_hh_reverse, Tensor? b_ih_reverse, "
      "Tensor? b_hh_reverse) -> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve, "
      "Tensor output_reverse, Tensor h_n_reverse, Tensor c_n_reverse, Tensor reserve_reverse)");
  m.def(
      "gru_bidirectional_layer_persistent(Tensor input, Tensor? lengths, Tensor h0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0_reverse, "
      "Tensor w_ih_reverse, Tensor w_hh_reverse, Tensor? b_ih_reverse, Tensor? b_hh_reverse) "
      "-> (Tensor output, Tensor h_n, Tensor reserve, Tensor output_reverse, "
      "Tensor h_n_reverse, Tensor reserve_reverse)");
}

#ifdef RNNKIT_WITH_CUDA
TORCH_LIBRARY_IMPL(rnnkit, CUDA, m) {
  m.impl("lstm_layer_persistent", &rnnkit::lstm_layer_persistent);
  m.impl("gru_layer_persistent", &rnnkit::gru_layer_persistent);
  m.impl("lstm_bidirectional_layer_persistent", &rnnkit::lstm_bidirectional_layer_persistent);
  m.impl("gru_bidirectional_layer_persistent", &rnnkit::gru_bidirectional_layer_persistent);
}
#endif
