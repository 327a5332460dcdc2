#pragma once
// Runs the cell math of cells.h on whole vectors: a math policy for
// at::vec::Vectorized, and a helper that walks a row segment vector by vector with
// a scalar tail, handing the same generic body either a vector "lane" or a scalar one.

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

#include "rnnkit/cells.h"

namespace rnnkit {
namespace cpu {

template <typename T>
struct VecMath {
  using Vec = at::vec::Vectorized<T>;
  static Vec exp(Vec x) { return x.exp(); }
  static Vec tanh(Vec x) { return x.tanh(); }
  static Vec relu(Vec x) { return at::vec::maximum(x, Vec(T(0))); }  // NaN comes through
  static Vec positive(Vec y) { return Vec::blendv(Vec(T(0)), Vec(T(1)), y > Vec(T(0))); }
};

// One vector of consecutive elements.
template <typename T>
struct VecLane {
  using V = at::vec::Vectorized<T>;
  using M = VecMath<T>;
  static V load(const T* p) { return V::loadu(p); }
  static void store(T* p, const V& v) { v.store(p); }
};

// One element: the tail of a segment that is shorter than a vector.
template <typename T>
struct ScalarLane {
  using V = T;
  using M = cells::ScalarMath<T>;
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
};

// Calls body(lane, j) for j in [j0, j1): whole vectors first, then single elements.
// body is a generic lambda; inside it `using L = decltype(lane)` gives L::V, L::M,
// L::load and L::store.
template <typename T, typename Body>
inline void for_each_lane(int64_t j0, int64_t j1, const Body& body) {
  constexpr int64_t width = at::vec::Vectorized<T>::size();
  int64_t j = j0;
  for (; j + width <= j1; j += width) body(VecLane<T>{}, j);
  for (; j < j1; ++j) body(ScalarLane<T>{}, j);
}

}  // namespace cpu
}  // namespace rnnkit
