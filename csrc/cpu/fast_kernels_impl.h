// The step kernels of fast_kernels.h, written once over a small vector API (and
// once over the element type, through the lanes of simd_lanes_impl.h) and
// included by one file per instruction set, inside that set's namespace, after
// it has defined:
//   RNNKIT_TARGET              the target attribute every function here carries
//   Vec, W                     the vector type and its width in floats
//   kRows4, kPass4, kRows3, kPass3, kWideRows  the register tiles (TileShape)
//   vzero vset vld vst vldn vstn vbcast vadd vsub vmul vdiv vfmadd vfnmadd
//   vmin vmax vabs vround vpow2n vcopysign vselect_lt vpositive
//   DVec, DW and, for doubles: dzero dset dld dst dldn dstn dbcast dadd dsub dmul
//   ddiv dfmadd dfnmadd dmin dmax dabs dround dpow2n dcopysign dselect_lt dpositive
// (vldn/vstn load/store the first n floats, 0 <= n <= W, zeros elsewhere;
// vfmadd(a, b, c) = a*b + c, vfnmadd(a, b, c) = c - a*b; vpow2n(p, n) = p * 2^n for
// integral n; vselect_lt(a, b, x, y) = a < b ? x : y; vpositive(y) = y > 0 ? 1 : 0.)
// No header may be included here: every function is compiled for the target set
// and must not leak into code that runs elsewhere.

// ------------------------------------------------------------------ math

// Number of valid floats of a vector starting at unit j of a row of H units.
RNNKIT_TARGET static inline int valid(int64_t H, int64_t j) {
  const int64_t n = H - j;
  return n <= 0 ? 0 : (n >= W ? W : static_cast<int>(n));
}

// e^x: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to degree 7
// (relative error below 1e-8 on that interval), then scaled by 2^n. x is clamped
// so that the result stays a normal float. x goes second into vmin/vmax: they
// return their second operand when either is NaN, so a NaN passes through (as
// torch.nn's results would carry it) instead of becoming a bound.
RNNKIT_TARGET static inline Vec vexp(Vec x) {
  x = vmin(vset(88.0f), vmax(vset(-87.0f), x));
  const Vec n = vround(vmul(x, vset(1.44269504088896341f)));
  Vec r = vfnmadd(n, vset(0.693359375f), x);  // ln2 split in a short head
  r = vfnmadd(n, vset(-2.12194440e-4f), r);   // and the rest
  Vec p = vset(1.0f / 5040);
  p = vfmadd(p, r, vset(1.0f / 720));
  p = vfmadd(p, r, vset(1.0f / 120));
  p = vfmadd(p, r, vset(1.0f / 24));
  p = vfmadd(p, r, vset(1.0f / 6));
  p = vfmadd(p, r, vset(0.5f));
  p = vfmadd(p, r, vset(1.0f));
  p = vfmadd(p, r, vset(1.0f));
  return vpow2n(p, n);
}

// tanh: its odd Taylor series up to x^9 below |x| = 0.25 (where 1 - 2/(e^2x + 1)
// would lose relative accuracy), 1 - 2/(e^2|x| + 1) with x's sign above.
RNNKIT_TARGET static inline Vec vtanh(Vec x) {
  const Vec one = vset(1.0f);
  const Vec ax = vabs(x);
  const Vec e = vexp(vadd(ax, ax));
  const Vec big = vcopysign(vsub(one, vdiv(vset(2.0f), vadd(e, one))), x);
  const Vec x2 = vmul(x, x);
  Vec p = vset(62.0f / 2835);
  p = vfmadd(p, x2, vset(-17.0f / 315));
  p = vfmadd(p, x2, vset(2.0f / 15));
  p = vfmadd(p, x2, vset(-1.0f / 3));
  p = vfmadd(p, x2, one);
  const Vec small = vmul(p, x);
  return vselect_lt(ax, vset(0.25f), small, big);
}

#include "cell_kernels_f64_impl.h"
#include "simd_lanes_impl.h"

// ------------------------------------------------------------------ microkernel

// Memory to prefetch while a product runs, `step` bytes of it for each value of k:
// one or two lines a step, never more than 64 bytes apart, so that every line of
// the range is fetched (a range of more than 128 bytes a step is cut short).
struct Ahead {
  const char* p = nullptr;
  int64_t step = 0;

  // The `bytes` from p over a product K long; nothing when p is null.
  RNNKIT_TARGET static Ahead over(const void* p, int64_t bytes, int64_t K) {
    if (p == nullptr || bytes <= 0 || K <= 0) return {};
    const int64_t step = (bytes + K - 1) / K;
    return {static_cast<const char*>(p), step <= 128 ? step : 128};
  }
  RNNKIT_TARGET void fetch(int64_t k) const {
    const char* q = p + k * step;
    __builtin_prefetch(q, 0, 2);
    if (step > 64) __builtin_prefetch(q + 64, 0, 2);
  }
};

// tile[m][c] = sum_k A[m*lda + k] * panel(k, c) for m < M, c < NV*w (w: the
// lanes' width), the tile's rows PV*w elements apart: NV of the PV vectors of
// each panel row. The lanes say what A, the panel and the tile hold (L::T,
// L::Panel, L::Acc) and how many values of k one vector of the panel spans
// (L::kDepth): 1 for floats, whose panel row k is PV*w weights, 2 for the
// quantized kernels' int16 x int8 pairs, whose rows k, k + 1 are interleaved
// (PV*w*2 weights, w pairs per vector; K even). Either way row k starts at
// element k*PV*w.
//
// With `ahead`, each value of k also prefetches the next `ahead.step` bytes of
// ahead.p: memory the caller reads after this product (the next panel), fetched
// while the FMAs of this one run rather than on demand, when it would stall them.
template <typename L, int M, int NV, int PV>
RNNKIT_TARGET static inline void micro(int64_t K, const typename L::T* A, int64_t lda,
                                       const typename L::Panel* panel, typename L::Acc* tile,
                                       Ahead ahead = {}) {
  using Raw = typename L::Raw;
  constexpr int w = L::kWidth;
  constexpr int d = L::kDepth;
  Raw acc[M][NV];
#pragma GCC unroll 12
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = L::zero();
  for (int64_t k = 0; k < K; k += d) {
    if (ahead.p != nullptr) ahead.fetch(k);
    const typename L::Panel* pk = panel + k * (PV * w);
    Raw b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = L::ld(pk + v * w * d);
#pragma GCC unroll 12
    for (int m = 0; m < M; ++m) {
      const Raw a = L::bcast(A + m * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = L::fma(a, b[v], acc[m][v]);
    }
  }
#pragma GCC unroll 12
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) L::st(tile + m * (PV * w) + v * w, acc[m][v]);
}

// micro<L, m, NV, PV> for a run-time m in [1, M].
template <typename L, int NV, int PV, int M>
RNNKIT_TARGET static inline void micro_rows(int m, int64_t K, const typename L::T* A,
                                            int64_t lda, const typename L::Panel* panel,
                                            typename L::Acc* tile, Ahead ahead = {}) {
  if constexpr (M > 0) {
    if (m == M) {
      micro<L, M, NV, PV>(K, A, lda, panel, tile, ahead);
    } else {
      micro_rows<L, NV, PV, M - 1>(m, K, A, lda, panel, tile, ahead);
    }
  }
}

// The register tiles of this instruction set for panels of PV vectors, the same
// for floats and doubles (they count registers): a row block has up to `rows`
// rows; blocks of more than kWideRows rows cover the panel in column passes of
// `vectors` vectors (then one pass over what remains), smaller ones in one pass
// over all PV vectors, which keeps enough independent accumulators in flight to
// hide the FMA latency. A narrow pass over many rows reads each weight once for
// more sequences; see the instruction-set files for the shapes chosen.
template <int PV>
struct TileShape {
  static constexpr int rows = PV == 3 ? kRows3 : kRows4;
  static constexpr int vectors = PV == 3 ? kPass3 : kPass4;
};

// The vectors of one pass over a block of TileShape<PV>::rows rows: the shape's,
// or one fewer where the lanes' product needs scratch registers (L::kScratch) that
// the shape's accumulators, weight vectors and broadcast leave no room for. A tile
// that does not fit the register file spills in the inner loop: AVX2's int16 pairs
// keep vpmaddwd's products in a register before adding them, and their 4 x 3 tile
// of a GRU panel (17 registers of 16) ran slower per row than an LSTM panel's 4
// rows in two passes of 2 vectors (int8 GRU, T=100 B=8 H=512 on a Zen 3: 13.7 ms
// in one pass, 11.5 in passes of 2 and 1 vectors).
template <typename L, int PV>
constexpr int pass_vectors() {
  constexpr int kRegisters = vector_registers<L>();
  constexpr int MR = TileShape<PV>::rows, NV = TileShape<PV>::vectors;
  return MR * NV + NV + 1 + L::kScratch <= kRegisters || NV == 1 ? NV : NV - 1;
}

// The most rows (up to kWideRows) that one pass over all PV vectors takes: as many
// as the register file holds their accumulators, the broadcast, the lanes' scratch
// and the weights, of which a float FMA can read one from memory (AVX2's 3 x 4
// float tile: 17 registers, measured faster than passes) but vpmaddwd cannot, its
// weights being widened from int8 first.
template <typename L, int PV>
constexpr int wide_rows() {
  constexpr int kRegisters = vector_registers<L>();
  constexpr int weights = L::kScratch > 0 ? PV : PV - 1;
  int m = kWideRows;
  while (m > 1 && m * PV + weights + 1 + L::kScratch > kRegisters) --m;
  return m;
}

// tile[i][c] = sum_k A[i*lda + k] * panel[k*PV*w + c] for i < m <= TileShape<PV>::rows
// and every column c < PV*w of the panel.
// The `ahead_bytes` from `ahead` are prefetched on the way, spread over the passes.
template <typename L, int PV>
RNNKIT_TARGET static inline void panel_product(int m, int64_t K, const typename L::T* A,
                                               int64_t lda, const typename L::Panel* panel,
                                               typename L::Acc* tile,
                                               const void* ahead = nullptr,
                                               int64_t ahead_bytes = 0) {
  constexpr int MR = TileShape<PV>::rows;
  constexpr int NV = pass_vectors<L, PV>();
  constexpr int w = L::kWidth;
  constexpr int kWide = wide_rows<L, PV>();
  const char* fetch = static_cast<const char*>(ahead);
  if constexpr (NV < PV) {
    if (m > kWide) {
      constexpr int full = PV / NV * NV;
      constexpr int passes = (PV + NV - 1) / NV;
      const int64_t part = ahead_bytes / passes;
      for (int v0 = 0; v0 < full; v0 += NV) {
        const Ahead pass = Ahead::over(fetch ? fetch + v0 / NV * part : nullptr, part, K);
        micro_rows<L, NV, PV, MR>(m, K, A, lda, panel + v0 * w * L::kDepth, tile + v0 * w,
                                  pass);
      }
      if constexpr (full < PV)
        micro_rows<L, PV - full, PV, MR>(
            m, K, A, lda, panel + full * w * L::kDepth, tile + full * w,
            Ahead::over(fetch ? fetch + (passes - 1) * part : nullptr,
                        ahead_bytes - (passes - 1) * part, K));
      return;
    }
  }
  micro_rows<L, PV, PV, (NV < PV ? kWide : MR)>(m, K, A, lda, panel, tile,
                                                Ahead::over(fetch, ahead_bytes, K));
}

// Rows [0, B) in row blocks of at most MR rows, all of nearly the same size (8
// rows in tiles of 6 are two blocks of 4, not 6 and 2, whose narrow tile would
// wait on the FMA latency).
struct RowBlocks {
  int64_t B, count;
  RowBlocks(int64_t B_, int MR) : B(B_), count((B_ + MR - 1) / MR) {}
  int64_t begin(int64_t i) const { return B * i / count; }
  int rows(int64_t i) const { return static_cast<int>(begin(i + 1) - begin(i)); }
};

// The rows of one forward step: row blocks of at most MR rows over [0, live_rows)
// (fast_kernels.h), then one block of the rows after them, all padded, which need
// no product.
struct StepRows {
  RowBlocks blocks;
  int64_t live, B;
  StepRows(const int64_t* len, int64_t B_, int64_t t, int MR)
      : blocks(live_rows(len, B_, t), MR), live(blocks.B), B(B_) {}
  int64_t count() const { return blocks.count + (live < B ? 1 : 0); }
  // Whether block i is the padded one after the live rows.
  bool padded(int64_t i) const { return i == blocks.count; }
  int64_t begin(int64_t i) const { return padded(i) ? live : blocks.begin(i); }
  int64_t rows(int64_t i) const { return padded(i) ? B - live : blocks.rows(i); }
};

// The largest tile a kernel stores, in elements: its rows of PV vectors.
template <typename L, int PV>
constexpr int tile_size() {
  return TileShape<PV>::rows * PV * L::kWidth;
}

// Rows [b0, b0 + m)'s share, of B rows, of the `bytes` at `next` (null: none): the
// part of the next panel that one row block prefetches.
struct Share {
  const char* p = nullptr;
  int64_t bytes = 0;
  Share(const void* next, int64_t bytes_, int64_t b0, int m, int64_t B) {
    if (next == nullptr) return;
    const int64_t from = bytes_ * b0 / B, to = bytes_ * (b0 + m) / B;
    p = static_cast<const char*>(next) + from;
    bytes = to - from;
  }
};

// The product of rows of a float state with a block's panel, as the step kernels
// take it: product(b0, m, tile) fills the tile's rows for rows b0 .. b0 + m - 1 of
// A (K wide). The quantized kernels hand the same step kernels their own product.
//
// `next`, when set, is the panel of the same size that the worker reads after this
// one (its next block): each row block of the B rows prefetches its share of it,
// so that the first row block of the next panel finds it in cache. Without that
// the first pass over a panel that does not stay in cache (W_hh past the L2 or
// the L3) runs at the speed of memory and the passes after it at that of the
// FMAs, one after the other: LSTM T=100 B=8 H=512, one thread of a Zen 1, spent
// half its time in the first row block.
//
// The bfloat16 kernels (bf16_kernels_impl.h) take it as it is with their own lanes:
// A and the panel of bfloat16 pairs (K even), the tile of floats.
template <typename L, int PV>
struct PanelProduct {
  const typename L::T* A;
  int64_t K;
  const typename L::Panel* panel;
  const typename L::Panel* next = nullptr;
  int64_t B = 0;
  int MR = 1;  // the rows of the caller's row blocks (RowBlocks(B, MR)); lstm_step takes them
  RNNKIT_TARGET void operator()(int64_t b0, int m, typename L::Acc* tile) const {
    if (next == nullptr || RowBlocks(B, MR).count < 2) {
      panel_product<L, PV>(m, K, A + b0 * K, K, panel, tile);
      return;
    }
    const Share share(next, K * PV * L::kWidth * int64_t{sizeof(typename L::Panel)}, b0, m, B);
    panel_product<L, PV>(m, K, A + b0 * K, K, panel, tile, share.p, share.bytes);
  }
};

// The panel after `panel` (`size` elements) when block + 1 < blocks, else null.
template <typename T>
RNNKIT_TARGET static inline const T* next_panel(const T* panel, int64_t size, int64_t block,
                                                int64_t blocks) {
  return block + 1 < blocks ? panel + size : nullptr;
}

template <typename L>
RNNKIT_TARGET static inline void zero_n(typename L::T* p, int n) {
  L::store(p, typename L::V(L::zero()), n);
}

template <typename L>
RNNKIT_TARGET static inline typename L::V load_grad(const GradOutOf<typename L::T>& g, int64_t t,
                                                    int64_t b, int64_t j, int n) {
  const typename L::T* p = g.data + t * g.stride_t + b * g.stride_b;
  return g.broadcast ? typename L::V(static_cast<double>(*p)) : L::load(p + j, n);
}

// ------------------------------------------------------------------ forward
// One block of W units (LSTM, GRU: one vector of each gate) or of kPlainVectors
// vectors of units (RNN), every sequence of the batch: the panel product, then
// the cell math of cells.h on each row of the tile. The *_step functions take the
// product (PanelProduct or the quantized kernels' own); the table's kernels give
// them the float one.

// The rows of the LSTM step's row blocks. Up to 8 sequences, those of the one-pass
// tile (wide_rows: the four gate vectors of a row at once; on AVX2 row blocks of 3,
// not one of 6 in two passes): with more row blocks, each prefetches part of the
// next panel (PanelProduct). On a Zen 1, H = 1024, B = 4 ran 1.4x faster so. Above 8,
// the tall two-pass tiles, measured as fast or faster.
template <typename L>
RNNKIT_TARGET static inline int lstm_rows(int64_t B) {
  return B <= 8 ? wide_rows<L, 4>() : TileShape<4>::rows;
}

template <typename L, typename Product>
RNNKIT_TARGET static inline void lstm_step(const LstmForwardArgsOf<typename L::T>& a, int64_t t,
                                           const typename L::T* h_prev, typename L::T* h_next,
                                           int64_t block, const Product& product) {
  using T = typename L::T;
  using V = typename L::V;
  constexpr int w = L::kWidth;
  const int64_t B = a.B, H = a.H;
  const int64_t j = block * w;
  const int n = L::valid_at(H, j);
  alignas(64) T tile[tile_size<L, 4>()];
  const StepRows rows(a.len, B, t, product.MR);
  for (int64_t ib = 0; ib < rows.count(); ++ib) {
    const int64_t b0 = rows.begin(ib), m = rows.rows(ib);
    if (!rows.padded(ib)) product(b0, static_cast<int>(m), tile);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      T* res = a.reserve ? a.reserve + row * 5 * H + j : nullptr;
      if (t >= a.len[b]) {  // padded: zeros out, the state carries over
        if (res) {
          for (int k = 0; k < 5; ++k) zero_n<L>(res + k * H, n);
        }
        if (!a.h_full) {
          zero_n<L>(a.out + row * H + j, n);
          L::store(h_next + b * H + j, L::load(h_prev + b * H + j, n), n);
        }
        continue;
      }
      const T* x = a.gx + ((t - a.gx_t0) * B + b) * 4 * H + j;
      const T* acc = tile + i * 4 * w;
      T* c_row = a.c + b * H + j;
      const auto s = ::rnnkit::cells::lstm_forward<V, typename L::M>(
          V(L::ld(acc)) + L::load(x, n), V(L::ld(acc + w)) + L::load(x + H, n),
          V(L::ld(acc + 2 * w)) + L::load(x + 2 * H, n),
          V(L::ld(acc + 3 * w)) + L::load(x + 3 * H, n), L::load(c_row, n));
      if (res) {
        L::store(res, s.i, n);
        L::store(res + H, s.f, n);
        L::store(res + 2 * H, s.g, n);
        L::store(res + 3 * H, s.o, n);
        L::store(res + 4 * H, s.c, n);
      }
      L::store(c_row, s.c, n);
      if (a.h_full) {
        L::store(a.h_full + b * H + j, s.h, n);
      } else {
        L::store(a.out + row * H + j, s.h, n);
        L::store(h_next + b * H + j, s.h, n);
      }
    }
  }
}

template <typename L>
RNNKIT_TARGET void lstm_forward(const LstmForwardArgsOf<typename L::T>& a, int64_t t,
                                const typename L::T* h_prev, typename L::T* h_next,
                                int64_t block) {
  constexpr int w = L::kWidth;
  const int64_t size = a.P * 4 * w;
  const typename L::T* panel = a.packed + block * size;
  lstm_step<L>(a, t, h_prev, h_next, block,
               PanelProduct<L, 4>{h_prev, a.P, panel,
                                  next_panel(panel, size, block, (a.H + w - 1) / w), a.B,
                                  lstm_rows<L>(a.B)});
}

template <typename L, typename Product>
RNNKIT_TARGET static inline void gru_step(const GruForwardArgsOf<typename L::T>& a, int64_t t,
                                          const typename L::T* h_prev, typename L::T* h_next,
                                          int64_t block, const Product& product) {
  using T = typename L::T;
  using V = typename L::V;
  constexpr int w = L::kWidth;
  const int64_t B = a.B, H = a.H;
  const int64_t j = block * w;
  const int n = L::valid_at(H, j);
  const V b_hn = a.b_hn ? L::load(a.b_hn + j, n) : V(L::zero());
  alignas(64) T tile[tile_size<L, 3>()];
  const StepRows rows(a.len, B, t, TileShape<3>::rows);
  for (int64_t ib = 0; ib < rows.count(); ++ib) {
    const int64_t b0 = rows.begin(ib), m = rows.rows(ib);
    if (!rows.padded(ib)) product(b0, static_cast<int>(m), tile);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      T* res = a.reserve ? a.reserve + row * 4 * H + j : nullptr;
      T* out = a.out + row * H + j;
      const V hp = L::load(h_prev + b * H + j, n);
      if (t >= a.len[b]) {
        if (res) {
          for (int k = 0; k < 4; ++k) zero_n<L>(res + k * H, n);
        }
        zero_n<L>(out, n);
        L::store(h_next + b * H + j, hp, n);
        continue;
      }
      const T* x = a.gx + ((t - a.gx_t0) * B + b) * 3 * H + j;
      const T* acc = tile + i * 3 * w;
      const V hn = a.b_hn ? V(L::ld(acc + 2 * w)) + b_hn : V(L::ld(acc + 2 * w));
      const auto s = ::rnnkit::cells::gru_forward<V, typename L::M>(
          L::load(x, n), L::load(x + H, n), L::load(x + 2 * H, n), V(L::ld(acc)),
          V(L::ld(acc + w)), hn, hp);
      if (res) {
        L::store(res, s.r, n);
        L::store(res + H, s.z, n);
        L::store(res + 2 * H, s.n, n);
        L::store(res + 3 * H, hn, n);
      }
      L::store(out, s.h, n);
      L::store(h_next + b * H + j, s.h, n);
    }
  }
}

template <typename L>
RNNKIT_TARGET void gru_forward(const GruForwardArgsOf<typename L::T>& a, int64_t t,
                               const typename L::T* h_prev, typename L::T* h_next,
                               int64_t block) {
  constexpr int w = L::kWidth;
  const int64_t size = a.H * 3 * w;
  const typename L::T* panel = a.packed + block * size;
  gru_step<L>(a, t, h_prev, h_next, block,
              PanelProduct<L, 3>{h_prev, a.H, panel,
                                 next_panel(panel, size, block, (a.H + w - 1) / w), a.B,
                                 TileShape<3>::rows});
}

// The step of plain panels shared by the Elman RNN and the LSTM's projection, for
// one block of kPlainVectors vectors of the N units of the new state: the product
// (of the rows of the state the step reads with the block's panel), then, for the
// real rows, out = h_next = value(product vector, b, j, n); padded rows get zeros
// out and keep h_prev.
template <typename L, typename Product, typename Value>
RNNKIT_TARGET static inline void plain_step(int64_t B, int64_t N, const Product& product,
                                            const int64_t* len, int64_t t, typename L::T* out,
                                            const typename L::T* h_prev, typename L::T* h_next,
                                            int64_t block, const Value& value) {
  using T = typename L::T;
  constexpr int NV = kPlainVectors;
  constexpr int w = L::kWidth;
  const int64_t j0 = block * NV * w;
  alignas(64) T tile[tile_size<L, NV>()];
  const StepRows rows(len, B, t, TileShape<NV>::rows);
  for (int64_t ib = 0; ib < rows.count(); ++ib) {
    const int64_t b0 = rows.begin(ib), m = rows.rows(ib);
    if (!rows.padded(ib)) product(b0, static_cast<int>(m), tile);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      const bool padded = t >= len[b];
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * w;
        const int n = L::valid_at(N, j);
        if (n == 0) break;
        T* o = out + row * N + j;
        if (padded) {
          zero_n<L>(o, n);
          L::store(h_next + b * N + j, L::load(h_prev + b * N + j, n), n);
          continue;
        }
        const typename L::V h = value(L::ld(tile + i * NV * w + v * w), b, j, n);
        L::store(o, h, n);
        L::store(h_next + b * N + j, h, n);
      }
    }
  }
}

// The callables the kernels hand to their shared frames are small structs whose
// member functions carry the target attribute like every function of this file.

// The Elman RNN's new state from its product: the cell of cells.h on product + x·W_ihᵀ.
template <typename L>
struct RnnValue {
  const RnnForwardArgsOf<typename L::T>& a;
  int64_t t;
  RNNKIT_TARGET typename L::V operator()(typename L::Raw acc, int64_t b, int64_t j,
                                         int n) const {
    using V = typename L::V;
    const V pre = V(acc) + L::load(a.gx + ((t - a.gx_t0) * a.B + b) * a.H + j, n);
    return ::rnnkit::cells::rnn_forward<V, typename L::M>(pre, a.relu);
  }
};

// The projection's new state: the product itself.
template <typename L>
struct ProductValue {
  RNNKIT_TARGET typename L::V operator()(typename L::Raw acc, int64_t, int64_t, int) const {
    return typename L::V(acc);
  }
};

template <typename L>
RNNKIT_TARGET void rnn_forward(const RnnForwardArgsOf<typename L::T>& a, int64_t t,
                               const typename L::T* h_prev, typename L::T* h_next,
                               int64_t block) {
  constexpr int64_t U = kPlainVectors * L::kWidth;
  const typename L::T* panel = a.packed + block * a.H * U;
  plain_step<L>(a.B, a.H,
                PanelProduct<L, kPlainVectors>{h_prev, a.H, panel,
                                               next_panel(panel, a.H * U, block,
                                                          (a.H + U - 1) / U),
                                               a.B, TileShape<kPlainVectors>::rows},
                a.len, t, a.out, h_prev, h_next, block, RnnValue<L>{a, t});
}

template <typename L>
RNNKIT_TARGET void lstm_project(const LstmProjectArgsOf<typename L::T>& a, int64_t t,
                                const typename L::T* h_prev, typename L::T* h_next,
                                int64_t block) {
  constexpr int64_t U = kPlainVectors * L::kWidth;
  const typename L::T* panel = a.packed + block * a.H * U;
  plain_step<L>(a.B, a.P,
                PanelProduct<L, kPlainVectors>{a.h_full, a.H, panel,
                                               next_panel(panel, a.H * U, block,
                                                          (a.P + U - 1) / U),
                                               a.B, TileShape<kPlainVectors>::rows},
                a.len, t, a.out, h_prev, h_next, block, ProductValue<L>{});
}

// ------------------------------------------------------------------ backward
// The product of the previous iteration's gate gradients with the block's columns
// of W_hh, added into dh, then the backward cell math of cells.h: the frame is
// the same for the three cells (backward_block, which also handles padded steps);
// each supplies its K, the stride of its gate gradients and its pointwise pass of
// one unit vector of a real step.

// dh[b] += tile rows for the sequences for which step t_prev was real, for the
// vectors of units [j0, j0 + NV*w) of a row block.
template <typename L>
RNNKIT_TARGET static inline void add_product(const typename L::T* tile, int64_t b0, int m,
                                             int64_t t_prev, const int64_t* len, int64_t H,
                                             int64_t j0, typename L::T* dh) {
  using V = typename L::V;
  constexpr int NV = kPlainVectors;
  constexpr int w = L::kWidth;
  for (int i = 0; i < m; ++i) {
    const int64_t b = b0 + i;
    if (t_prev >= len[b]) continue;
    for (int v = 0; v < NV; ++v) {
      const int64_t j = j0 + v * w;
      const int n = L::valid_at(H, j);
      if (n == 0) break;
      typename L::T* d = dh + b * H + j;
      L::store(d, L::load(d, n) + V(L::ld(tile + i * NV * w + v * w)), n);
    }
  }
}

// The step a sequence of length `length` ran just before real step t, or -1 when t
// was its first (its h_{t-1} and c_{t-1} are h0 and c0).
RNNKIT_TARGET static inline int64_t previous_step(bool reverse, int64_t t, int64_t length) {
  if (reverse) return t + 1 >= length ? -1 : t + 1;
  return t - 1;
}

// One block of kPlainVectors vectors of units: for each row block, dh += the
// product of the gate gradients of step t_prev ([T, B, ld] in `dg`, its first K
// columns) with the block's panel; then, for each sequence of step t and each unit
// vector j of the block, zeros in the ld / H gradient vectors of a padded step
// (dh, and an LSTM's dc, pass through), or unit(b, j, n, dh_j) for a real one,
// dh_j being the gradient of h_t (dh plus the output's), which the unit turns into
// the step's gate gradients and the part of dh that does not go through W_hh.
template <typename L, typename Unit>
RNNKIT_TARGET static inline void backward_block(int64_t B, int64_t H, int64_t K,
                                                typename L::T* dg, int64_t ld,
                                                const typename L::T* packed,
                                                const GradOutOf<typename L::T>& grad_out,
                                                const int64_t* len, typename L::T* dh,
                                                int64_t t_prev, int64_t t, int64_t block,
                                                const Unit& unit) {
  using T = typename L::T;
  constexpr int NV = kPlainVectors;
  constexpr int w = L::kWidth;
  const int64_t j0 = block * NV * w;
  const int64_t size = K * NV * w;
  const T* panel = packed + block * size;
  alignas(64) T tile[tile_size<L, NV>()];
  const RowBlocks rows(B, TileShape<NV>::rows);
  // As PanelProduct does: each row block prefetches its share of the next panel.
  const T* next =
      rows.count >= 2 ? next_panel(panel, size, block, (H + NV * w - 1) / (NV * w)) : nullptr;
  // The rows after step t_prev's live_rows add nothing (fast_kernels.h).
  const int64_t live = t_prev >= 0 ? live_rows(len, B, t_prev) : 0;
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    const int mp = live <= b0 ? 0 : (live - b0 < m ? static_cast<int>(live - b0) : m);
    if (mp > 0) {
      const Share share(next, size * int64_t{sizeof(T)}, b0, mp, B);
      panel_product<L, NV>(mp, K, dg + (t_prev * B + b0) * ld, ld, panel, tile, share.p,
                           share.bytes);
      add_product<L>(tile, b0, mp, t_prev, len, H, j0, dh);
    }
    if (t < 0) continue;
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i;
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * w;
        const int n = L::valid_at(H, j);
        if (n == 0) break;
        if (t >= len[b]) {
          T* padded = dg + (t * B + b) * ld + j;
          for (int64_t g = 0; g < ld / H; ++g) zero_n<L>(padded + g * H, n);
          continue;
        }
        const T* dh_b = dh + b * H + j;
        unit(b, j, n, L::load(dh_b, n) + load_grad<L>(grad_out, t, b, j, n));
      }
    }
  }
}

// The pointwise pass of lstm_backward for one unit vector j (n valid) of sequence b.
template <typename L>
struct LstmBackwardUnit {
  const LstmBackwardArgsOf<typename L::T>& a;
  int64_t t;
  RNNKIT_TARGET void operator()(int64_t b, int64_t j, int n, typename L::V dhj) const {
    using T = typename L::T;
    using V = typename L::V;
    const int64_t B = a.B, H = a.H;
    const int64_t row = t * B + b, prev = previous_step(a.reverse, t, a.len[b]);
    T* dg = a.dgates + row * 4 * H;
    const T* res = a.reserve + row * 5 * H;
    const T* c_prev = prev < 0 ? a.c0 + b * H : a.reserve + (prev * B + b) * 5 * H + 4 * H;
    T* dh = a.dh + b * H + j;
    T* dc = a.dc + b * H + j;
    const auto d = ::rnnkit::cells::lstm_backward<V, typename L::M>(
        dhj, L::load(dc, n), L::load(res + j, n), L::load(res + H + j, n),
        L::load(res + 2 * H + j, n), L::load(res + 3 * H + j, n), L::load(res + 4 * H + j, n),
        L::load(c_prev + j, n));
    L::store(dg + j, d.pre_i, n);
    L::store(dg + H + j, d.pre_f, n);
    L::store(dg + 2 * H + j, d.pre_g, n);
    L::store(dg + 3 * H + j, d.pre_o, n);
    L::store(dc, d.c_prev, n);
    zero_n<L>(dh, n);  // the next iteration adds dgates · W_hh
  }
};

template <typename L>
RNNKIT_TARGET void lstm_backward(const LstmBackwardArgsOf<typename L::T>& a, int64_t t_prev,
                                 int64_t t, int64_t block) {
  backward_block<L>(a.B, a.H, 4 * a.H, a.dgates, 4 * a.H, a.packed, a.grad_out, a.len, a.dh,
                    t_prev, t, block, LstmBackwardUnit<L>{a, t});
}

// The pointwise pass of gru_backward for one unit vector j (n valid) of sequence b.
template <typename L>
struct GruBackwardUnit {
  const GruBackwardArgsOf<typename L::T>& a;
  int64_t t;
  RNNKIT_TARGET void operator()(int64_t b, int64_t j, int n, typename L::V dhj) const {
    using T = typename L::T;
    using V = typename L::V;
    const int64_t B = a.B, H = a.H;
    const int64_t row = t * B + b, prev = previous_step(a.reverse, t, a.len[b]);
    T* dg = a.dgates + row * 4 * H;
    const T* res = a.reserve + row * 4 * H;
    const T* h_prev = prev < 0 ? a.h0 + b * H : a.out + (prev * B + b) * H;
    T* dh = a.dh + b * H + j;
    const auto d = ::rnnkit::cells::gru_backward<V, typename L::M>(
        dhj, L::load(res + j, n), L::load(res + H + j, n), L::load(res + 2 * H + j, n),
        L::load(res + 3 * H + j, n), L::load(h_prev + j, n));
    L::store(dg + j, d.pre_r, n);
    L::store(dg + H + j, d.pre_z, n);
    L::store(dg + 2 * H + j, d.hn, n);
    L::store(dg + 3 * H + j, d.xn, n);
    L::store(dh, d.h_prev, n);  // the next iteration adds dgates · W_hh
  }
};

template <typename L>
RNNKIT_TARGET void gru_backward(const GruBackwardArgsOf<typename L::T>& a, int64_t t_prev,
                                int64_t t, int64_t block) {
  // K = 3H: the gradients of r, z and hn, the first three of each row of four.
  backward_block<L>(a.B, a.H, 3 * a.H, a.dgates, 4 * a.H, a.packed, a.grad_out, a.len, a.dh,
                    t_prev, t, block, GruBackwardUnit<L>{a, t});
}

// The pointwise pass of rnn_backward for one unit vector j (n valid) of sequence b.
template <typename L>
struct RnnBackwardUnit {
  const RnnBackwardArgsOf<typename L::T>& a;
  int64_t t;
  RNNKIT_TARGET void operator()(int64_t b, int64_t j, int n, typename L::V dhj) const {
    using V = typename L::V;
    const int64_t row = t * a.B + b;
    L::store(a.dpre + row * a.H + j, ::rnnkit::cells::rnn_backward<V, typename L::M>(
                                         dhj, L::load(a.out + row * a.H + j, n), a.relu), n);
    zero_n<L>(a.dh + b * a.H + j, n);
  }
};

template <typename L>
RNNKIT_TARGET void rnn_backward(const RnnBackwardArgsOf<typename L::T>& a, int64_t t_prev,
                                int64_t t, int64_t block) {
  backward_block<L>(a.B, a.H, a.H, a.dpre, a.H, a.packed, a.grad_out, a.len, a.dh, t_prev, t,
                    block, RnnBackwardUnit<L>{a, t});
}

// ------------------------------------------------------------------ projection

// Rows [r0, r1) of y for one block of NV vectors of columns: the product (rows
// of the input with the block's panel), plus the bias.
template <typename L, int NV, typename Product>
RNNKIT_TARGET static inline void projection_rows(const ProjectionArgsOf<typename L::T>& a,
                                                 int64_t r0, int64_t r1, int64_t block,
                                                 const Product& product) {
  using T = typename L::T;
  using V = typename L::V;
  constexpr int w = L::kWidth;
  const int64_t N = a.N, H = a.H;
  const bool gated = a.gates > 1;
  // Vector v covers columns col[v] .. col[v] + n[v] of y.
  int64_t col[NV];
  int n[NV];
  V bias[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t unit = gated ? block * w : block * NV * w + v * w;
    col[v] = gated ? v * H + unit : unit;
    n[v] = L::valid_at(gated ? H : N, unit);
    bias[v] = a.bias && n[v] > 0 ? L::load(a.bias + col[v], n[v]) : V(L::zero());
  }
  alignas(64) T tile[tile_size<L, NV>()];
  const RowBlocks rows(r1 - r0, TileShape<NV>::rows);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = r0 + rows.begin(ib);
    const int m = rows.rows(ib);
    product(b0, m, tile);
    for (int i = 0; i < m; ++i) {
      T* y = a.y + (b0 + i) * N;
      for (int v = 0; v < NV; ++v) {
        if (n[v] == 0) break;
        L::store(y + col[v], V(L::ld(tile + i * NV * w + v * w)) + bias[v], n[v]);
      }
    }
  }
}

template <typename L>
RNNKIT_TARGET void projection(const ProjectionArgsOf<typename L::T>& a, int64_t r0, int64_t r1,
                              int64_t block) {
  constexpr int w = L::kWidth;
  const int64_t K = a.K;
  if (a.gates == 3) {
    projection_rows<L, 3>(a, r0, r1, block, PanelProduct<L, 3>{a.x, K, a.packed + block * K * 3 * w});
  } else {
    projection_rows<L, 4>(a, r0, r1, block, PanelProduct<L, 4>{a.x, K, a.packed + block * K * 4 * w});
  }
}

#include "cell_kernels_impl.h"
#include "rows_product_impl.h"

// ------------------------------------------------------------------ peak

// `iters` rounds of 12 independent chains of vector FMAs, enough to cover the FMA
// latency on two pipes: the arithmetic peak the benchmarks measure against.
// Returns the sum of the chains so that no compiler can drop them.
RNNKIT_TARGET float fma_chains(int64_t iters) {
  constexpr int kChains = 12;
  Vec acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = vset(1.0f + 1e-3f * i);
  const Vec a = vset(0.999999f), b = vset(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = vfmadd(acc[i], a, b);
  }
  alignas(64) float lanes[W];
  float sum = 0.0f;
  for (int i = 0; i < kChains; ++i) {
    vst(lanes, acc[i]);
    for (int l = 0; l < W; ++l) sum += lanes[l];
  }
  return sum;
}

template <typename L>
constexpr LayerKernels<typename L::T> layer_kernels() {
  return {&lstm_forward<L>,  &gru_forward<L>,  &rnn_forward<L>, &lstm_project<L>,
          &lstm_backward<L>, &gru_backward<L>, &rnn_backward<L>, &projection<L>};
}

// The table handed to the drivers.
static const Kernels kKernels = {kName,
                                 W,
                                 layer_kernels<FloatLanes>(),
                                 layer_kernels<DoubleLanes>(),
                                 &lstm_cell_pass<FloatLanes>,
                                 &gru_cell_pass<FloatLanes>,
                                 &rnn_cell_pass<FloatLanes>,
                                 &lstm_cell_pass<DoubleLanes>,
                                 &gru_cell_pass<DoubleLanes>,
                                 &rnn_cell_pass<DoubleLanes>,
                                 &lstm_cell_backward_pass<FloatLanes>,
                                 &lstm_cell_backward_pass<DoubleLanes>,
                                 &rows_product<FloatLanes>,
                                 &rows_product<DoubleLanes>,
                                 &rows_times<FloatLanes>,
                                 &rows_times<DoubleLanes>,
                                 &rows_outer<FloatLanes>,
                                 &rows_outer<DoubleLanes>,
                                 &fma_chains};
