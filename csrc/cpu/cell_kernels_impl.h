// The pointwise passes of the cell ops (fast_kernels.h, CellStepArgsOf, LstmCellGradArgsOf),
// included by fast_kernels_impl.h inside one instruction set's namespace, after
// simd_lanes_impl.h. They run the gate math of rnnkit/cells.h on this set's vectors
// through the lanes of simd_lanes_impl.h, as the layer kernels do.

// n elements of p at offset, plus those of q when q is given.
template <typename L>
RNNKIT_TARGET static inline typename L::V load_sum(const typename L::T* p,
                                                   const typename L::T* q, int64_t offset,
                                                   int n) {
  const typename L::V v = L::load(p + offset, n);
  return q ? v + L::load(q + offset, n) : v;
}

// ------------------------------------------------------------------ passes

template <typename L>
RNNKIT_TARGET void lstm_cell_pass(const CellStepArgsOf<typename L::T>& a, int64_t b0,
                                  int64_t b1) {
  using T = typename L::T;
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const T* g = a.gates + b * 4 * H;
    T* res = a.reserve ? a.reserve + b * 5 * H : nullptr;
    for (int64_t j = 0; j < H; j += L::kWidth) {
      const int n = L::valid_at(H, j);
      const auto s = ::rnnkit::cells::lstm_forward<typename L::V, typename L::M>(
          load_sum<L>(g, a.b_hh, j, n), load_sum<L>(g, a.b_hh, H + j, n),
          load_sum<L>(g, a.b_hh, 2 * H + j, n), load_sum<L>(g, a.b_hh, 3 * H + j, n),
          L::load(a.c_prev + b * H + j, n));
      L::store(a.h + b * H + j, s.h, n);
      L::store(a.c + b * H + j, s.c, n);
      if (res) {
        L::store(res + j, s.i, n);
        L::store(res + H + j, s.f, n);
        L::store(res + 2 * H + j, s.g, n);
        L::store(res + 3 * H + j, s.o, n);
        L::store(res + 4 * H + j, s.c, n);
      }
    }
  }
}

template <typename L>
RNNKIT_TARGET void gru_cell_pass(const CellStepArgsOf<typename L::T>& a, int64_t b0,
                                 int64_t b1) {
  using T = typename L::T;
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const T* x = a.gates + b * 3 * H;
    const T* h = a.gh + b * 3 * H;
    T* res = a.reserve ? a.reserve + b * 4 * H : nullptr;
    for (int64_t j = 0; j < H; j += L::kWidth) {
      const int n = L::valid_at(H, j);
      const typename L::V hn = L::load(h + 2 * H + j, n);
      const auto s = ::rnnkit::cells::gru_forward<typename L::V, typename L::M>(
          L::load(x + j, n), L::load(x + H + j, n), L::load(x + 2 * H + j, n),
          L::load(h + j, n), L::load(h + H + j, n), hn, L::load(a.h_prev + b * H + j, n));
      L::store(a.h + b * H + j, s.h, n);
      if (res) {
        L::store(res + j, s.r, n);
        L::store(res + H + j, s.z, n);
        L::store(res + 2 * H + j, s.n, n);
        L::store(res + 3 * H + j, hn, n);
      }
    }
  }
}

template <typename L>
RNNKIT_TARGET void rnn_cell_pass(const CellStepArgsOf<typename L::T>& a, int64_t b0,
                                 int64_t b1) {
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t j = 0; j < H; j += L::kWidth) {
      const int n = L::valid_at(H, j);
      L::store(a.h + b * H + j,
               ::rnnkit::cells::rnn_forward<typename L::V, typename L::M>(
                   load_sum<L>(a.gates + b * H, a.b_hh, j, n), a.relu),
               n);
    }
  }
}

template <typename L>
RNNKIT_TARGET void lstm_cell_backward_pass(const LstmCellGradArgsOf<typename L::T>& a,
                                           int64_t b0, int64_t b1) {
  using T = typename L::T;
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const T* res = a.reserve + b * 5 * H;
    T* dg = a.dgates + b * 4 * H;
    const int64_t o = b * H;
    for (int64_t j = 0; j < H; j += L::kWidth) {
      const int n = L::valid_at(H, j);
      const auto d = ::rnnkit::cells::lstm_backward<typename L::V, typename L::M>(
          L::load(a.dh + o + j, n), L::load(a.dc + o + j, n), L::load(res + j, n),
          L::load(res + H + j, n), L::load(res + 2 * H + j, n), L::load(res + 3 * H + j, n),
          L::load(res + 4 * H + j, n), L::load(a.c_prev + o + j, n));
      L::store(dg + j, d.pre_i, n);
      L::store(dg + H + j, d.pre_f, n);
      L::store(dg + 2 * H + j, d.pre_g, n);
      L::store(dg + 3 * H + j, d.pre_o, n);
      L::store(a.dc_prev + o + j, d.c_prev, n);
    }
  }
}
