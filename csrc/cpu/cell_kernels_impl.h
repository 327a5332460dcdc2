// The pointwise passes of the cell ops (fast_kernels.h, CellStepArgs), included by
// fast_kernels_impl.h inside one instruction set's namespace. They run the gate math
// of rnnkit/cells.h itself on this set's vectors: the instruction-set file includes
// cells.h under its target (so that its templates are compiled for it), and CV and
// CMath below are the value type and the math policy cells.h asks for. Only vectors
// are instantiated here, never cells.h's scalar versions, which other files compile
// for any CPU.

// ------------------------------------------------------------------ cells.h on vectors

struct CV {
  Vec v;
  CV() = default;
  RNNKIT_TARGET CV(Vec x) : v(x) {}
  RNNKIT_TARGET CV(double c) : v(vset(static_cast<float>(c))) {}
};
RNNKIT_TARGET static inline CV operator+(CV a, CV b) { return vadd(a.v, b.v); }
RNNKIT_TARGET static inline CV operator-(CV a, CV b) { return vsub(a.v, b.v); }
RNNKIT_TARGET static inline CV operator*(CV a, CV b) { return vmul(a.v, b.v); }
RNNKIT_TARGET static inline CV operator/(CV a, CV b) { return vdiv(a.v, b.v); }

struct CMath {
  RNNKIT_TARGET static CV exp(CV x) { return vexp(x.v); }
  RNNKIT_TARGET static CV tanh(CV x) { return vtanh(x.v); }
  // vmax returns its second operand for a NaN: relu lets it through, as torch.relu.
  RNNKIT_TARGET static CV relu(CV x) { return vmax(vzero(), x.v); }
  RNNKIT_TARGET static CV positive(CV y) { return vpositive(y.v); }
};

// n floats of p (the rest zero), plus those of q when q is given.
RNNKIT_TARGET static inline CV load_sum(const float* p, const float* q, int64_t offset, int n) {
  const Vec v = vldn(p + offset, n);
  return q ? vadd(v, vldn(q + offset, n)) : v;
}

// ------------------------------------------------------------------ passes

RNNKIT_TARGET void lstm_cell(const CellStepArgs& a, int64_t b0, int64_t b1) {
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const float* g = a.gates + b * 4 * H;
    float* res = a.reserve ? a.reserve + b * 5 * H : nullptr;
    for (int64_t j = 0; j < H; j += W) {
      const int n = valid(H, j);
      const auto s = ::rnnkit::cells::lstm_forward<CV, CMath>(
          load_sum(g, a.b_hh, j, n), load_sum(g, a.b_hh, H + j, n),
          load_sum(g, a.b_hh, 2 * H + j, n), load_sum(g, a.b_hh, 3 * H + j, n),
          CV(vldn(a.c_prev + b * H + j, n)));
      vstn(a.h + b * H + j, s.h.v, n);
      vstn(a.c + b * H + j, s.c.v, n);
      if (res) {
        vstn(res + j, s.i.v, n);
        vstn(res + H + j, s.f.v, n);
        vstn(res + 2 * H + j, s.g.v, n);
        vstn(res + 3 * H + j, s.o.v, n);
        vstn(res + 4 * H + j, s.c.v, n);
      }
    }
  }
}

RNNKIT_TARGET void gru_cell(const CellStepArgs& a, int64_t b0, int64_t b1) {
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const float* x = a.gates + b * 3 * H;
    const float* h = a.gh + b * 3 * H;
    float* res = a.reserve ? a.reserve + b * 4 * H : nullptr;
    for (int64_t j = 0; j < H; j += W) {
      const int n = valid(H, j);
      const CV hn = vldn(h + 2 * H + j, n);
      const auto s = ::rnnkit::cells::gru_forward<CV, CMath>(
          vldn(x + j, n), vldn(x + H + j, n), vldn(x + 2 * H + j, n), vldn(h + j, n),
          vldn(h + H + j, n), hn, vldn(a.h_prev + b * H + j, n));
      vstn(a.h + b * H + j, s.h.v, n);
      if (res) {
        vstn(res + j, s.r.v, n);
        vstn(res + H + j, s.z.v, n);
        vstn(res + 2 * H + j, s.n.v, n);
        vstn(res + 3 * H + j, hn.v, n);
      }
    }
  }
}

RNNKIT_TARGET void rnn_cell(const CellStepArgs& a, int64_t b0, int64_t b1) {
  const int64_t H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t j = 0; j < H; j += W) {
      const int n = valid(H, j);
      const CV h = ::rnnkit::cells::rnn_forward<CV, CMath>(
          load_sum(a.gates + b * H, a.b_hh, j, n), a.relu);
      vstn(a.h + b * H + j, h.v, n);
    }
  }
}
