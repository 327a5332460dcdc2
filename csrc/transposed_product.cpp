// aᵀ · b in the form MKL runs fast (csrc/transposed_product.h).

#include "transposed_product.h"

#include <ATen/ops/mm.h>

namespace rnnkit {

bool narrow_side_first(const at::Tensor& a, const at::Tensor& b) {
  // K = 1 is a matrix-vector product either way; small a is not worth a second pass.
  const int64_t K = b.size(1);
  return a.device().is_cpu() && K > 1 && K < 12 && a.size(0) * a.size(1) >= (int64_t{1} << 16);
}

at::Tensor transposed_product(const at::Tensor& a, const at::Tensor& b) {
  if (!narrow_side_first(a, b)) return a.t().mm(b);
  return b.t().mm(a).t().contiguous();
}

void transposed_product_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (!narrow_side_first(a, b)) {
    at::mm_out(out, a.t(), b);
    return;
  }
  out.copy_(b.t().mm(a).t());
}

}  // namespace rnnkit
