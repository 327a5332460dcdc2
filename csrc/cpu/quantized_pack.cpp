// The packing of the int8 weights and the panels kept between calls (see
// quantized_pack.h).

#include "quantized_pack.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>

namespace rnnkit {
namespace cpu {
namespace fast {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The panels of one block jb (see packed_int8): group r of `depth` rows k holds
// column c's weights at r*depth*columns + depth*c.
template <int depth>
void pack_block(const Int8Matrix& w, int64_t gates, int64_t H, int64_t K, int64_t U,
                int64_t Kp, int64_t jb, int8_t* out, float* scale, int32_t* offset) {
  const int64_t columns = gates * U, n = std::min(U, H - jb * U);
  std::memset(out, 0, static_cast<size_t>(Kp * columns));  // units past H, k past K
  for (int64_t g = 0; g < gates; ++g) {
    for (int64_t u = 0; u < U; ++u) {
      const int64_t c = g * U + u;
      scale[c] = u < n ? w.scales()[g * H + jb * U + u] : 0.0f;
      if (u >= n) continue;
      const int8_t* src = w.q() + (g * H + jb * U + u) * K;
      int8_t* dst = out + depth * c;
      int32_t sum = 0;  // |sum| <= 128 K fits: K <= max_depth_for(depth)
      for (int64_t k = 0; k < K; k += depth) {
        for (int64_t d = 0; d < depth && k + d < K; ++d) {
          dst[d] = src[k + d];
          sum += src[k + d];
        }
        dst += depth * columns;
      }
      if (offset) offset[c] = 128 * sum;
    }
  }
}

PackedInt8 pack_now(const Int8Matrix& w, int64_t gates, int64_t H, int64_t K, int64_t U,
                    int64_t depth, int64_t align) {
  const int64_t blocks = ceil_div(H, U), columns = gates * U;
  PackedInt8 p;
  p.Kp = (K + align - 1) / align * align;
  const int64_t panel = p.Kp * columns;
  p.panels = at::empty({std::max<int64_t>(1, blocks * panel)}, at::kChar);
  p.scales = at::empty({std::max<int64_t>(1, blocks * columns)}, at::kFloat);
  if (depth == 4) p.offsets = at::zeros({std::max<int64_t>(1, blocks * columns)}, at::kInt);
  int8_t* dst = p.panels.mutable_data_ptr<int8_t>();
  float* sc = p.scales.mutable_data_ptr<float>();
  int32_t* off = p.offsets.defined() ? p.offsets.mutable_data_ptr<int32_t>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, panel));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t jb = begin; jb < end; ++jb) {
      int8_t* out = dst + jb * panel;
      float* s = sc + jb * columns;
      int32_t* o = off ? off + jb * columns : nullptr;
      if (depth == 4) {
        pack_block<4>(w, gates, H, K, U, p.Kp, jb, out, s, o);
      } else {
        pack_block<2>(w, gates, H, K, U, p.Kp, jb, out, s, o);
      }
    }
  });
  return p;
}

// One kept packing: the tensors it came from (weakly: a kept packing does not keep
// its weights alive, and a freed weight's address is not reused while its weak
// reference lives), their versions and data, the layout, and the panels.
struct Entry {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> weight, scale;
  uint32_t weight_version, scale_version;
  const void* weight_data;
  const void* scale_data;
  int64_t gates, H, K, U, depth, align;
  PackedInt8 packed;
  int64_t bytes() const {
    return static_cast<int64_t>(packed.panels.nbytes() + packed.scales.nbytes() +
                                (packed.offsets.defined() ? packed.offsets.nbytes() : 0));
  }
  // Whether this is the packing of w in this layout (current or not).
  bool of(const Int8Matrix& w, int64_t gates_, int64_t H_, int64_t K_, int64_t U_,
          int64_t depth_, int64_t align_) const {
    return weight._unsafe_get_target() == w.weight.unsafeGetTensorImpl() &&
           scale._unsafe_get_target() == w.scale.unsafeGetTensorImpl() && gates == gates_ &&
           H == H_ && K == K_ && U == U_ && depth == depth_ && align == align_;
  }
  bool live() const { return !weight.expired() && !scale.expired(); }
};

// Most recently used first; bounded in entries and bytes (the oldest go first).
constexpr int64_t kMaxEntries = 256;
constexpr int64_t kMaxBytes = int64_t{1} << 30;

struct Cache {
  std::mutex mutex;
  std::list<Entry> entries;
  int64_t bytes = 0;

  void erase(std::list<Entry>::iterator it) {
    bytes -= it->bytes();
    entries.erase(it);
  }
  void trim() {
    for (auto it = entries.begin(); it != entries.end();) {
      auto next = std::next(it);
      if (!it->live()) erase(it);
      it = next;
    }
    while (!entries.empty() &&
           (static_cast<int64_t>(entries.size()) > kMaxEntries || bytes > kMaxBytes)) {
      erase(std::prev(entries.end()));
    }
  }
};

Cache& cache() {
  static Cache* const c = new Cache();  // never destroyed: no order-of-exit trouble
  return *c;
}

// Inference tensors have no version counter: their packings are not kept.
bool keepable(const Int8Matrix& w) {
  return !w.weight.is_inference() && !w.scale.is_inference();
}

}  // namespace

PackedInt8 packed_int8(const Int8Matrix& w, int64_t gates, int64_t H, int64_t K, int64_t U,
                       int64_t depth, int64_t align) {
  if (!keepable(w)) return pack_now(w, gates, H, K, U, depth, align);
  const uint32_t wv = w.weight._version(), sv = w.scale._version();
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.trim();  // the packings of freed weights go as soon as the next call
    for (auto it = c.entries.begin(); it != c.entries.end(); ++it) {
      if (!it->of(w, gates, H, K, U, depth, align)) continue;
      if (it->live() && it->weight_version == wv && it->scale_version == sv &&
          it->weight_data == w.weight.const_data_ptr() &&
          it->scale_data == w.scale.const_data_ptr()) {
        c.entries.splice(c.entries.begin(), c.entries, it);
        return it->packed;
      }
      c.erase(it);  // changed since: repack
      break;
    }
  }
  Entry e{c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
              w.weight.getIntrusivePtr()),
          c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
              w.scale.getIntrusivePtr()),
          wv,
          sv,
          w.weight.const_data_ptr(),
          w.scale.const_data_ptr(),
          gates,
          H,
          K,
          U,
          depth,
          align,
          pack_now(w, gates, H, K, U, depth, align)};
  const PackedInt8 packed = e.packed;
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto it = c.entries.begin(); it != c.entries.end(); ++it) {
    if (it->of(w, gates, H, K, U, depth, align)) {
      c.erase(it);  // another thread's packing of the same weights meanwhile
      break;
    }
  }
  c.bytes += e.bytes();
  c.entries.push_front(std::move(e));
  c.trim();
  return packed;
}

int64_t packed_int8_entries() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  return static_cast<int64_t>(cache().entries.size());
}

int64_t packed_int8_bytes() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  return cache().bytes;
}

void clear_packed_int8() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  cache().entries.clear();
  cache().bytes = 0;
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
