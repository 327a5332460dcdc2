// The step kernels of fast_kernels.h, written once over a small vector API and
// included by one file per instruction set, inside that set's namespace, after
// it has defined:
//   RNNKIT_TARGET              the target attribute every function here carries
//   Vec, W                     the vector type and its width in floats
//   kRows4, kPass4, kRows3, kPass3, kWideRows  the register tiles (TileShape)
//   vzero vset vld vst vldn vstn vbcast vadd vsub vmul vdiv vfmadd vfnmadd
//   vmin vmax vabs vround vpow2n vcopysign vselect_lt vpositive
// (vldn/vstn load/store the first n floats, 0 <= n <= W, zeros elsewhere;
// vfmadd(a, b, c) = a*b + c, vfnmadd(a, b, c) = c - a*b; vpow2n(p, n) = p * 2^n for
// integral n; vselect_lt(a, b, x, y) = a < b ? x : y; vpositive(y) = y > 0 ? 1 : 0.)
// No header may be included here: every function is compiled for the target set
// and must not leak into code that runs elsewhere.

// ------------------------------------------------------------------ math

RNNKIT_TARGET static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

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

RNNKIT_TARGET static inline Vec vsigmoid(Vec x) {
  const Vec one = vset(1.0f);
  return vdiv(one, vadd(one, vexp(vsub(vzero(), x))));
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

// ------------------------------------------------------------------ microkernel

// tile[m][c] = sum_k A[m*lda + k] * panel[k*PV*W + c] for m < M, c < NV*W, the
// tile's rows PV*W floats apart: NV of the PV vectors of each panel row.
template <int M, int NV, int PV>
RNNKIT_TARGET static inline void micro(int64_t K, const float* A, int64_t lda,
                                       const float* panel, float* tile) {
  Vec acc[M][NV];
#pragma GCC unroll 12
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = vzero();
  for (int64_t k = 0; k < K; ++k) {
    const float* pk = panel + k * (PV * W);
    Vec b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = vld(pk + v * W);
#pragma GCC unroll 12
    for (int m = 0; m < M; ++m) {
      const Vec a = vbcast(A + m * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = vfmadd(a, b[v], acc[m][v]);
    }
  }
#pragma GCC unroll 12
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vst(tile + m * (PV * W) + v * W, acc[m][v]);
}

// micro<m, NV, PV> for a run-time m in [1, M].
template <int NV, int PV, int M>
RNNKIT_TARGET static inline void micro_rows(int m, int64_t K, const float* A, int64_t lda,
                                            const float* panel, float* tile) {
  if constexpr (M > 0) {
    if (m == M) {
      micro<M, NV, PV>(K, A, lda, panel, tile);
    } else {
      micro_rows<NV, PV, M - 1>(m, K, A, lda, panel, tile);
    }
  }
}

// The register tiles of this instruction set for panels of PV vectors: a row
// block has up to `rows` rows; blocks of more than kWideRows rows cover the
// panel in column passes of `vectors` vectors (then one pass over what remains),
// smaller ones in one pass over all PV vectors, which keeps enough independent
// accumulators in flight to hide the FMA latency. A narrow pass over many rows
// reads each weight once for more sequences; see the instruction-set files for
// the shapes chosen.
template <int PV>
struct TileShape {
  static constexpr int rows = PV == 3 ? kRows3 : kRows4;
  static constexpr int vectors = PV == 3 ? kPass3 : kPass4;
};

// tile[i][c] = sum_k A[i*lda + k] * panel[k*PV*W + c] for i < m <= TileShape<PV>::rows
// and every column c < PV*W of the panel.
template <int PV>
RNNKIT_TARGET static inline void panel_product(int m, int64_t K, const float* A, int64_t lda,
                                               const float* panel, float* tile) {
  constexpr int MR = TileShape<PV>::rows;
  constexpr int NV = TileShape<PV>::vectors;
  if constexpr (NV < PV) {
    if (m > kWideRows) {
      constexpr int full = PV / NV * NV;
      for (int v0 = 0; v0 < full; v0 += NV)
        micro_rows<NV, PV, MR>(m, K, A, lda, panel + v0 * W, tile + v0 * W);
      if constexpr (full < PV)
        micro_rows<PV - full, PV, MR>(m, K, A, lda, panel + full * W, tile + full * W);
      return;
    }
  }
  micro_rows<PV, PV, (NV < PV ? kWideRows : MR)>(m, K, A, lda, panel, tile);
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

RNNKIT_TARGET static inline void zero_n(float* p, int n) { vstn(p, vzero(), n); }

RNNKIT_TARGET static inline Vec load_grad(const GradOut& g, int64_t t, int64_t b, int64_t j, int n) {
  const float* p = g.data + t * g.stride_t + b * g.stride_b;
  return g.broadcast ? vset(*p) : vldn(p + j, n);
}

// ------------------------------------------------------------------ forward

RNNKIT_TARGET void lstm_forward(const LstmForwardArgs& a, int64_t t, const float* h_prev,
                                float* h_next, int64_t block) {
  constexpr int MR = TileShape<4>::rows;
  const int64_t B = a.B, H = a.H;
  const int64_t j = block * W;
  const int n = valid(H, j);
  const float* panel = a.packed + block * H * 4 * W;
  alignas(64) float tile[MR * 4 * W];
  const RowBlocks rows(B, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    panel_product<4>(m, H, h_prev + b0 * H, H, panel, tile);
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      float* res = a.reserve ? a.reserve + row * 5 * H + j : nullptr;
      float* out = a.out + row * H + j;
      if (t >= a.len[b]) {  // padded: zeros out, the state carries over
        if (res) {
          for (int k = 0; k < 5; ++k) zero_n(res + k * H, n);
        }
        zero_n(out, n);
        vstn(h_next + b * H + j, vldn(h_prev + b * H + j, n), n);
        continue;
      }
      const float* x = a.gx + ((t - a.gx_t0) * B + b) * 4 * H + j;
      const float* acc = tile + i * 4 * W;
      const Vec ig = vsigmoid(vadd(vld(acc), vldn(x, n)));
      const Vec fg = vsigmoid(vadd(vld(acc + W), vldn(x + H, n)));
      const Vec gg = vtanh(vadd(vld(acc + 2 * W), vldn(x + 2 * H, n)));
      const Vec og = vsigmoid(vadd(vld(acc + 3 * W), vldn(x + 3 * H, n)));
      float* c_row = a.c + b * H + j;
      const Vec c = vadd(vmul(fg, vldn(c_row, n)), vmul(ig, gg));
      const Vec h = vmul(og, vtanh(c));
      if (res) {
        vstn(res, ig, n);
        vstn(res + H, fg, n);
        vstn(res + 2 * H, gg, n);
        vstn(res + 3 * H, og, n);
        vstn(res + 4 * H, c, n);
      }
      vstn(c_row, c, n);
      vstn(out, h, n);
      vstn(h_next + b * H + j, h, n);
    }
  }
}

RNNKIT_TARGET void gru_forward(const GruForwardArgs& a, int64_t t, const float* h_prev,
                               float* h_next, int64_t block) {
  constexpr int MR = TileShape<3>::rows;
  const int64_t B = a.B, H = a.H;
  const int64_t j = block * W;
  const int n = valid(H, j);
  const float* panel = a.packed + block * H * 3 * W;
  const Vec b_hn = a.b_hn ? vldn(a.b_hn + j, n) : vzero();
  alignas(64) float tile[MR * 3 * W];
  const RowBlocks rows(B, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    panel_product<3>(m, H, h_prev + b0 * H, H, panel, tile);
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      float* res = a.reserve ? a.reserve + row * 4 * H + j : nullptr;
      float* out = a.out + row * H + j;
      const Vec hp = vldn(h_prev + b * H + j, n);
      if (t >= a.len[b]) {
        if (res) {
          for (int k = 0; k < 4; ++k) zero_n(res + k * H, n);
        }
        zero_n(out, n);
        vstn(h_next + b * H + j, hp, n);
        continue;
      }
      const float* x = a.gx + ((t - a.gx_t0) * B + b) * 3 * H + j;
      const float* acc = tile + i * 3 * W;
      const Vec hn = a.b_hn ? vadd(vld(acc + 2 * W), b_hn) : vld(acc + 2 * W);
      const Vec r = vsigmoid(vadd(vldn(x, n), vld(acc)));
      const Vec z = vsigmoid(vadd(vldn(x + H, n), vld(acc + W)));
      const Vec nn = vtanh(vadd(vldn(x + 2 * H, n), vmul(r, hn)));
      const Vec h = vadd(vmul(vsub(vset(1.0f), z), nn), vmul(z, hp));
      if (res) {
        vstn(res, r, n);
        vstn(res + H, z, n);
        vstn(res + 2 * H, nn, n);
        vstn(res + 3 * H, hn, n);
      }
      vstn(out, h, n);
      vstn(h_next + b * H + j, h, n);
    }
  }
}

RNNKIT_TARGET void rnn_forward(const RnnForwardArgs& a, int64_t t, const float* h_prev,
                               float* h_next, int64_t block) {
  constexpr int MR = TileShape<4>::rows;
  constexpr int NV = kPlainVectors;
  const int64_t B = a.B, H = a.H;
  const int64_t j0 = block * NV * W;
  const float* panel = a.packed + block * H * NV * W;
  alignas(64) float tile[MR * NV * W];
  const RowBlocks rows(B, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    panel_product<NV>(m, H, h_prev + b0 * H, H, panel, tile);
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      const bool padded = t >= a.len[b];
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * W;
        const int n = valid(H, j);
        if (n == 0) break;
        float* out = a.out + row * H + j;
        if (padded) {
          zero_n(out, n);
          vstn(h_next + b * H + j, vldn(h_prev + b * H + j, n), n);
          continue;
        }
        const Vec pre = vadd(vld(tile + i * NV * W + v * W), vldn(a.gx + ((t - a.gx_t0) * B + b) * H + j, n));
        const Vec h = a.relu ? vmax(vzero(), pre) : vtanh(pre);  // NaN stays NaN (see vexp)
        vstn(out, h, n);
        vstn(h_next + b * H + j, h, n);
      }
    }
  }
}

// ------------------------------------------------------------------ backward

// dh[b] += tile rows for the sequences for which step t_prev was real, for the
// vectors of units [j0, j0 + NV*W) of a row block.
RNNKIT_TARGET static inline void add_product(const float* tile, int64_t b0, int m, int64_t t_prev,
                                             const int64_t* len, int64_t H, int64_t j0,
                                             float* dh) {
  constexpr int NV = kPlainVectors;
  for (int i = 0; i < m; ++i) {
    const int64_t b = b0 + i;
    if (t_prev >= len[b]) continue;
    for (int v = 0; v < NV; ++v) {
      const int64_t j = j0 + v * W;
      const int n = valid(H, j);
      if (n == 0) break;
      float* d = dh + b * H + j;
      vstn(d, vadd(vldn(d, n), vld(tile + i * NV * W + v * W)), n);
    }
  }
}

RNNKIT_TARGET void lstm_backward(const LstmBackwardArgs& a, int64_t t_prev, int64_t t,
                                 int64_t block) {
  constexpr int MR = TileShape<4>::rows;
  constexpr int NV = kPlainVectors;
  const int64_t B = a.B, H = a.H;
  const int64_t j0 = block * NV * W;
  const float* panel = a.packed + block * 4 * H * NV * W;
  alignas(64) float tile[MR * NV * W];
  const RowBlocks rows(B, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    if (t_prev >= 0) {
      panel_product<NV>(m, 4 * H, a.dgates + (t_prev * B + b0) * 4 * H, 4 * H, panel, tile);
      add_product(tile, b0, m, t_prev, a.len, H, j0, a.dh);
    }
    if (t < 0) continue;
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b, length = a.len[b];
      float* dg = a.dgates + row * 4 * H;
      const float* res = a.reserve + row * 5 * H;
      const bool first = a.reverse ? t + 1 >= length : t == 0;
      const float* c_prev =
          first ? a.c0 + b * H
                : a.reserve + ((a.reverse ? t + 1 : t - 1) * B + b) * 5 * H + 4 * H;
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * W;
        const int n = valid(H, j);
        if (n == 0) break;
        if (t >= length) {  // padded: no gradient, dh and dc pass through
          for (int k = 0; k < 4; ++k) zero_n(dg + k * H + j, n);
          continue;
        }
        float* dh = a.dh + b * H + j;
        float* dc = a.dc + b * H + j;
        const Vec dhj = vadd(vldn(dh, n), load_grad(a.grad_out, t, b, j, n));
        const Vec i_ = vldn(res + j, n), f = vldn(res + H + j, n), g = vldn(res + 2 * H + j, n);
        const Vec o = vldn(res + 3 * H + j, n), c = vldn(res + 4 * H + j, n);
        const Vec one = vset(1.0f);
        const Vec tc = vtanh(c);
        const Vec dct = vadd(vldn(dc, n), vmul(vmul(dhj, o), vsub(one, vmul(tc, tc))));
        vstn(dg + j, vmul(vmul(vmul(dct, g), i_), vsub(one, i_)), n);
        vstn(dg + H + j, vmul(vmul(vmul(dct, vldn(c_prev + j, n)), f), vsub(one, f)), n);
        vstn(dg + 2 * H + j, vmul(vmul(dct, i_), vsub(one, vmul(g, g))), n);
        vstn(dg + 3 * H + j, vmul(vmul(vmul(dhj, tc), o), vsub(one, o)), n);
        vstn(dc, vmul(dct, f), n);
        vstn(dh, vzero(), n);  // the next iteration adds dgates · W_hh
      }
    }
  }
}

RNNKIT_TARGET void gru_backward(const GruBackwardArgs& a, int64_t t_prev, int64_t t,
                                int64_t block) {
  constexpr int MR = TileShape<4>::rows;
  constexpr int NV = kPlainVectors;
  const int64_t B = a.B, H = a.H;
  const int64_t j0 = block * NV * W;
  const float* panel = a.packed + block * 3 * H * NV * W;
  alignas(64) float tile[MR * NV * W];
  const RowBlocks rows(B, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    if (t_prev >= 0) {
      panel_product<NV>(m, 3 * H, a.dgates + (t_prev * B + b0) * 4 * H, 4 * H, panel, tile);
      add_product(tile, b0, m, t_prev, a.len, H, j0, a.dh);
    }
    if (t < 0) continue;
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b, length = a.len[b];
      float* dg = a.dgates + row * 4 * H;
      const float* res = a.reserve + row * 4 * H;
      const bool first = a.reverse ? t + 1 >= length : t == 0;
      const float* h_prev =
          first ? a.h0 + b * H : a.out + ((a.reverse ? t + 1 : t - 1) * B + b) * H;
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * W;
        const int n = valid(H, j);
        if (n == 0) break;
        if (t >= length) {
          for (int k = 0; k < 4; ++k) zero_n(dg + k * H + j, n);
          continue;
        }
        float* dh = a.dh + b * H + j;
        const Vec dhj = vadd(vldn(dh, n), load_grad(a.grad_out, t, b, j, n));
        const Vec r = vldn(res + j, n), z = vldn(res + H + j, n), nn = vldn(res + 2 * H + j, n);
        const Vec hn = vldn(res + 3 * H + j, n), hp = vldn(h_prev + j, n);
        const Vec one = vset(1.0f);
        const Vec dn = vmul(dhj, vsub(one, z));
        const Vec dz = vmul(dhj, vsub(hp, nn));
        const Vec dxn = vmul(dn, vsub(one, vmul(nn, nn)));
        vstn(dg + j, vmul(vmul(vmul(dxn, hn), r), vsub(one, r)), n);
        vstn(dg + H + j, vmul(vmul(dz, z), vsub(one, z)), n);
        vstn(dg + 2 * H + j, vmul(dxn, r), n);
        vstn(dg + 3 * H + j, dxn, n);
        vstn(dh, vmul(dhj, z), n);  // the next iteration adds dgates · W_hh
      }
    }
  }
}

RNNKIT_TARGET void rnn_backward(const RnnBackwardArgs& a, int64_t t_prev, int64_t t,
                                int64_t block) {
  constexpr int MR = TileShape<4>::rows;
  constexpr int NV = kPlainVectors;
  const int64_t B = a.B, H = a.H;
  const int64_t j0 = block * NV * W;
  const float* panel = a.packed + block * H * NV * W;
  alignas(64) float tile[MR * NV * W];
  const RowBlocks rows(B, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = rows.begin(ib);
    const int m = rows.rows(ib);
    if (t_prev >= 0) {
      panel_product<NV>(m, H, a.dpre + (t_prev * B + b0) * H, H, panel, tile);
      add_product(tile, b0, m, t_prev, a.len, H, j0, a.dh);
    }
    if (t < 0) continue;
    for (int i = 0; i < m; ++i) {
      const int64_t b = b0 + i, row = t * B + b;
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * W;
        const int n = valid(H, j);
        if (n == 0) break;
        float* d = a.dpre + row * H + j;
        if (t >= a.len[b]) {
          zero_n(d, n);
          continue;
        }
        float* dh = a.dh + b * H + j;
        const Vec dhj = vadd(vldn(dh, n), load_grad(a.grad_out, t, b, j, n));
        const Vec y = vldn(a.out + row * H + j, n);
        const Vec g = a.relu ? vmul(dhj, vpositive(y))
                             : vmul(dhj, vsub(vset(1.0f), vmul(y, y)));
        vstn(d, g, n);
        vstn(dh, vzero(), n);
      }
    }
  }
}

// ------------------------------------------------------------------ projection

template <int NV>
RNNKIT_TARGET static inline void projection_rows(const ProjectionArgs& a, int64_t r0, int64_t r1,
                                                 int64_t block) {
  constexpr int MR = TileShape<NV>::rows;
  const int64_t N = a.N, K = a.K, H = a.H;
  const bool gated = a.gates > 1;
  const float* panel = a.packed + block * K * NV * W;
  // Vector v covers columns col[v] .. col[v] + n[v] of y.
  int64_t col[NV];
  int n[NV];
  Vec bias[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t unit = gated ? block * W : block * NV * W + v * W;
    col[v] = gated ? v * H + unit : unit;
    n[v] = valid(gated ? H : N, unit);
    bias[v] = a.bias && n[v] > 0 ? vldn(a.bias + col[v], n[v]) : vzero();
  }
  alignas(64) float tile[MR * NV * W];
  const RowBlocks rows(r1 - r0, MR);
  for (int64_t ib = 0; ib < rows.count; ++ib) {
    const int64_t b0 = r0 + rows.begin(ib);
    const int m = rows.rows(ib);
    panel_product<NV>(m, K, a.x + b0 * K, K, panel, tile);
    for (int i = 0; i < m; ++i) {
      float* y = a.y + (b0 + i) * N;
      for (int v = 0; v < NV; ++v) {
        if (n[v] == 0) break;
        vstn(y + col[v], vadd(vld(tile + i * NV * W + v * W), bias[v]), n[v]);
      }
    }
  }
}

RNNKIT_TARGET void projection(const ProjectionArgs& a, int64_t r0, int64_t r1, int64_t block) {
  if (a.gates == 3) {
    projection_rows<3>(a, r0, r1, block);
  } else {
    projection_rows<4>(a, r0, r1, block);
  }
}

#include "cell_kernels_f64_impl.h"
#include "cell_kernels_impl.h"

// The table handed to the drivers.
static const Kernels kKernels = {kName,
                                 W,
                                 &lstm_forward,
                                 &gru_forward,
                                 &rnn_forward,
                                 &lstm_backward,
                                 &gru_backward,
                                 &rnn_backward,
                                 &projection,
                                 &lstm_cell_pass<FloatLanes>,
                                 &gru_cell_pass<FloatLanes>,
                                 &rnn_cell_pass<FloatLanes>,
                                 &lstm_cell_pass<DoubleLanes>,
                                 &gru_cell_pass<DoubleLanes>,
                                 &rnn_cell_pass<DoubleLanes>,
                                 &lstm_cell_backward_pass<FloatLanes>,
                                 &lstm_cell_backward_pass<DoubleLanes>};
