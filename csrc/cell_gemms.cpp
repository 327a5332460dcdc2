// The cell ops' GEMMs (csrc/cell_gemms.h).

#include "cell_gemms.h"
#include "transposed_product.h"

#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>

namespace rnnkit {

at::Tensor contiguous_as(const at::Tensor& t, at::ScalarType ct) {
  if (t.scalar_type() == ct && t.is_contiguous()) return t;
  return t.to(ct).contiguous();
}

at::Tensor as_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

at::Tensor cell_product(const at::Tensor& a, const at::Tensor& w,
                        const std::optional<at::Tensor>& bias, at::ScalarType ct) {
  const at::Tensor wt = contiguous_as(w, ct).t();
  if (bias.has_value()) return at::addmm(contiguous_as(*bias, ct), contiguous_as(a, ct), wt);
  return at::mm(contiguous_as(a, ct), wt);
}

namespace {
at::Tensor aten_times(const at::Tensor& a, const at::Tensor& w, const at::Tensor& c) {
  return c.defined() ? at::addmm(c, a, w) : at::mm(a, w);
}
at::Tensor aten_outer(const at::Tensor& a, const at::Tensor& b) { return transposed_product(a, b); }
}  // namespace

const CellGemms kAtenCellGemms = {&aten_times, &aten_outer};

CellGrads cell_step_grads(const at::Tensor& dgi, const at::Tensor& dgh, const at::Tensor& x,
                          const at::Tensor& h, const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const at::Tensor& dh_direct, bool has_bias, Mask3 mask,
                          at::ScalarType dtype, const CellGemms& gemms) {
  // Each gradient not asked for is its own empty tensor: outputs of an op may not alias.
  auto none = [&] { return x.new_empty({0}, x.options().dtype(dtype)); };
  at::Tensor dx, dh, dw_ih, dw_hh, db_ih, db_hh;
  const auto ct = dgi.scalar_type();
  dx = mask[0] ? as_dtype(gemms.times(dgi, contiguous_as(w_ih, ct), at::Tensor()), dtype)
                : none();
  dh = mask[1] ? as_dtype(gemms.times(dgh, contiguous_as(w_hh, ct), dh_direct), dtype) : none();
  if (mask[2]) {
    dw_ih = as_dtype(gemms.outer(dgi, contiguous_as(x, ct)), dtype);
    dw_hh = as_dtype(gemms.outer(dgh, contiguous_as(h, ct)), dtype);
  } else {
    dw_ih = none();
    dw_hh = none();
  }
  if (mask[2] && has_bias) {
    db_ih = as_dtype(dgi.sum(0), dtype);
    db_hh = dgh.is_same(dgi) ? db_ih.clone() : as_dtype(dgh.sum(0), dtype);
  } else {
    db_ih = none();
    db_hh = none();
  }
  return {dx, dh, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace rnnkit
