// The small products of the cell ops (fast_kernels.h, RowsProductArgsOf), included by
// fast_kernels_impl.h inside one instruction set's namespace, after simd_lanes_impl.h.
//
// A cell step at batch 1 to kSmallRows multiplies a few rows by a weight matrix of
// G*H rows: a matrix-vector product, whose arithmetic takes well under a microsecond
// at H = 64 while a GEMM call (argument checks, a parallel region, packing) costs
// several. Here each output is a dot product of a row of x with a row of w, both
// contiguous in k: R rows of w at a time, each loaded once for all of x's rows, into
// B x R vector sums that are reduced across their lanes at the end. w streams through
// once; nothing is packed.

// R rows of w from n against the B rows of x.
template <typename L, int B, int R>
RNNKIT_TARGET static inline void rows_product_block(const RowsProductArgsOf<typename L::T>& a,
                                                    int64_t n) {
  using T = typename L::T;
  using Raw = typename L::Raw;
  constexpr int kW = L::kWidth;
  const int64_t K = a.K;
  Raw acc[B][R];
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) acc[b][r] = L::zero();
  const T* w = a.w + n * K;
  int64_t k = 0;
  for (; k + kW <= K; k += kW) {
    Raw wv[R];
    for (int r = 0; r < R; ++r) wv[r] = L::ld(w + r * K + k);
    for (int b = 0; b < B; ++b) {
      const Raw xv = L::ld(a.x + b * a.ldx + k);
      for (int r = 0; r < R; ++r) acc[b][r] = L::fma(xv, wv[r], acc[b][r]);
    }
  }
  if (k < K) {  // the tail, zero past K in both operands
    const int m = static_cast<int>(K - k);
    Raw wv[R];
    for (int r = 0; r < R; ++r) wv[r] = L::ldn(w + r * K + k, m);
    for (int b = 0; b < B; ++b) {
      const Raw xv = L::ldn(a.x + b * a.ldx + k, m);
      for (int r = 0; r < R; ++r) acc[b][r] = L::fma(xv, wv[r], acc[b][r]);
    }
  }
  for (int b = 0; b < B; ++b) {
    T* out = a.out + b * a.ldo + n;
    for (int r = 0; r < R; ++r) {
      T s = L::hsum(acc[b][r]);
      if (a.bias) s += a.bias[n + r];
      out[r] = a.accumulate ? out[r] + s : s;
    }
  }
}

// Columns [n0, n1) for B rows: blocks of as many rows of w as the registers hold
// (B x R sums, R loaded rows, one row of x), then one at a time.
template <typename L, int B>
RNNKIT_TARGET static inline void rows_product_of(const RowsProductArgsOf<typename L::T>& a,
                                                 int64_t n0, int64_t n1) {
  constexpr int kRegisters = sizeof(typename L::Raw) == 64 ? 32 : 16;
  constexpr int R = (kRegisters - 2) / (B + 1) >= 4 ? 4 : 2;
  int64_t n = n0;
  for (; n + R <= n1; n += R) rows_product_block<L, B, R>(a, n);
  for (; n < n1; ++n) rows_product_block<L, B, 1>(a, n);
}

template <typename L>
RNNKIT_TARGET void rows_product(const RowsProductArgsOf<typename L::T>& a, int64_t n0,
                                int64_t n1) {
  switch (a.B) {
    case 1: return rows_product_of<L, 1>(a, n0, n1);
    case 2: return rows_product_of<L, 2>(a, n0, n1);
    case 3: return rows_product_of<L, 3>(a, n0, n1);
    default: return rows_product_of<L, kSmallRows>(a, n0, n1);
  }
}
