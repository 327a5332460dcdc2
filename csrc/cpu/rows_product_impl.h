// The small products of the cell ops (fast_kernels.h, RowsProductArgsOf), included by
// fast_kernels_impl.h inside one instruction set's namespace, after simd_lanes_impl.h.
//
// A cell step at small batches multiplies a few rows by a weight matrix of G*H rows:
// close to a matrix-vector product, whose arithmetic takes well under a microsecond at
// H = 64 while a GEMM call (argument checks, a parallel region, packing) costs several.
// Here each output is a dot product of a row of x with a row of w, both contiguous in
// k: R rows of w at a time, each loaded once for up to kSmallRows rows of x, into B x R
// vector sums that are reduced across their lanes at the end; more rows of x go in
// groups of kSmallRows against the same few rows of w while those are in cache. w
// streams through once; nothing is packed. The backward's products (rows_times,
// rows_outer, at the end) need no sums across lanes: w's rows scaled by a's broadcast
// entries.

// f(Rows<B>{}) for the row count B, 1 <= B <= kSmallRows: the kernels below are
// templates over B, so that their sums stay in registers.
template <int B>
struct Rows {
  static constexpr int kB = B;
};
template <typename F>
RNNKIT_TARGET static inline void with_rows(int64_t B, F&& f) {
  switch (B) {
    case 1: f(Rows<1>{}); break;
    case 2: f(Rows<2>{}); break;
    case 3: f(Rows<3>{}); break;
    default: f(Rows<kSmallRows>{}); break;
  }
}

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
  constexpr int kRegisters = vector_registers<L>();
  constexpr int R = (kRegisters - 2) / (B + 1) >= 4 ? 4 : 2;
  int64_t n = n0;
  for (; n + R <= n1; n += R) rows_product_block<L, B, R>(a, n);
  for (; n < n1; ++n) rows_product_block<L, B, 1>(a, n);
}

template <typename L>
RNNKIT_TARGET void rows_product(const RowsProductArgsOf<typename L::T>& a, int64_t n0,
                                int64_t n1) {
  // kColumns rows of w at a time against every group of kSmallRows rows of x: those
  // rows of w stay in cache while the groups pass, so w still streams in once.
  constexpr int64_t kColumns = 16;
  for (int64_t c0 = n0; c0 < n1; c0 += kColumns) {
    const int64_t c1 = std::min(n1, c0 + kColumns);
    for (int64_t b0 = 0; b0 < a.B; b0 += kSmallRows) {
      RowsProductArgsOf<typename L::T> g = a;
      g.x += b0 * a.ldx;
      g.out += b0 * a.ldo;
      g.B = std::min(kSmallRows, a.B - b0);
      with_rows(g.B, [&](auto rows) { rows_product_of<L, decltype(rows)::kB>(g, c0, c1); });
    }
  }
}

// ------------------------------------------------------------------ backward

// The backward's products at the same batches (RowsGradArgsOf): a · w into out, and the
// outer products aᵀ · x, without a GEMM call each.

// out[b, k0 .. k0 + V*kW) for the B rows of a, over rows [n0, n1) of w: V vectors of k
// at a time, each row n of w loaded once for all of a's rows (a's entries broadcast),
// added to what out holds (first: to c, or to zero). `last`: how many values the last
// vector holds (fewer than kW only with V = 1).
template <typename L, int B, int V>
RNNKIT_TARGET static inline void rows_times_block(const RowsGradArgsOf<typename L::T>& a,
                                                  int64_t n0, int64_t n1, int64_t k0,
                                                  int last) {
  using Raw = typename L::Raw;
  constexpr int kW = L::kWidth;
  const int64_t K = a.K;
  const bool tail = last < kW;
  const typename L::T* from = n0 > 0 ? a.out : a.c;
  Raw acc[B][V];
  for (int b = 0; b < B; ++b) {
    for (int v = 0; v < V; ++v) {
      const int64_t o = b * K + k0 + v * kW;
      acc[b][v] = from == nullptr ? L::zero() : tail ? L::ldn(from + o, last) : L::ld(from + o);
    }
  }
  for (int64_t n = n0; n < n1; ++n) {
    const typename L::T* w = a.w + n * K + k0;
    Raw wv[V];
    for (int v = 0; v < V; ++v) wv[v] = tail ? L::ldn(w + v * kW, last) : L::ld(w + v * kW);
    for (int b = 0; b < B; ++b) {
      const Raw s = L::bcast(a.a + b * a.lda + n);
      for (int v = 0; v < V; ++v) acc[b][v] = L::fma(s, wv[v], acc[b][v]);
    }
  }
  for (int b = 0; b < B; ++b) {
    for (int v = 0; v < V; ++v) {
      const int64_t o = b * K + k0 + v * kW;
      if (tail) {
        L::stn(a.out + o, acc[b][v], last);
      } else {
        L::st(a.out + o, acc[b][v]);
      }
    }
  }
}

template <typename L, int B>
RNNKIT_TARGET static inline void rows_times_of(const RowsGradArgsOf<typename L::T>& a,
                                               int64_t k0, int64_t k1) {
  constexpr int kRegisters = vector_registers<L>();
  constexpr int V = (kRegisters - 2) / (B + 1) >= 4 ? 4 : 2;
  constexpr int kW = L::kWidth;
  // kRowsN rows of w at a time over all of [k0, k1): they are read in order, a few
  // pages at a time, while out's rows stay in cache (one pass of all N rows per
  // vector of k would touch N pages each time).
  constexpr int64_t kRowsN = 16;
  for (int64_t n0 = 0; n0 < a.N; n0 += kRowsN) {
    const int64_t n1 = std::min(a.N, n0 + kRowsN);
    int64_t k = k0;
    for (; k + V * kW <= k1; k += V * kW) rows_times_block<L, B, V>(a, n0, n1, k, kW);
    for (; k < k1; k += kW) {
      rows_times_block<L, B, 1>(a, n0, n1, k, static_cast<int>(std::min<int64_t>(kW, k1 - k)));
    }
  }
}

// Columns [k0, k1) of out = a · w (+ c): a [B, N], w [N, K], out and c [B, K].
template <typename L>
RNNKIT_TARGET void rows_times(const RowsGradArgsOf<typename L::T>& a, int64_t k0, int64_t k1) {
  for (int64_t b0 = 0; b0 < a.B; b0 += kSmallRows) {
    RowsGradArgsOf<typename L::T> g = a;
    g.a += b0 * a.lda;
    g.out += b0 * a.K;
    if (g.c) g.c += b0 * a.K;
    g.B = std::min(kSmallRows, a.B - b0);
    with_rows(g.B, [&](auto rows) { rows_times_of<L, decltype(rows)::kB>(g, k0, k1); });
  }
}

// Rows [n0, n1) of out = aᵀ · x: a [B, N], x [B, K] (w's place), out [N, K], B <=
// kSmallRows; each row n the sum of B rows of x scaled by a's column n.
template <typename L, int B>
RNNKIT_TARGET static inline void rows_outer_of(const RowsGradArgsOf<typename L::T>& a,
                                               int64_t n0, int64_t n1) {
  using Raw = typename L::Raw;
  constexpr int kW = L::kWidth;
  const int64_t K = a.K;
  for (int64_t n = n0; n < n1; ++n) {
    Raw s[B];
    for (int b = 0; b < B; ++b) s[b] = L::bcast(a.a + b * a.lda + n);
    typename L::T* out = a.out + n * K;
    int64_t k = 0;
    for (; k + kW <= K; k += kW) {
      Raw r = L::zero();
      for (int b = 0; b < B; ++b) r = L::fma(s[b], L::ld(a.w + b * K + k), r);
      L::st(out + k, r);
    }
    if (k < K) {
      const int m = static_cast<int>(K - k);
      Raw r = L::zero();
      for (int b = 0; b < B; ++b) r = L::fma(s[b], L::ldn(a.w + b * K + k, m), r);
      L::stn(out + k, r, m);
    }
  }
}

template <typename L>
RNNKIT_TARGET void rows_outer(const RowsGradArgsOf<typename L::T>& a, int64_t n0, int64_t n1) {
  with_rows(a.B, [&](auto rows) { rows_outer_of<L, decltype(rows)::kB>(a, n0, n1); });
}
