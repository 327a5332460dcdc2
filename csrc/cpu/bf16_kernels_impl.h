// The bfloat16 step kernels of bf16_kernels.h over the vector API of
// fast_kernels_impl.h, included by an instruction-set file after that file and
// after its bfloat16 primitives:
//   bld(p)            the 2*W bfloat16 weights at p (W columns, a pair each) as
//                     bdot's second operand
//   bbcast(p)         the pair of bfloat16 at p in every lane
//   bdot(a, b, c)     c + a0*b0 + a1*b1 in every float lane, (a0, a1) and (b0, b1)
//                     the lane's pairs
//   bround_row(x, K, Kp, q)  Bf16Kernels::round_row
// Like fast_kernels_impl.h, no header may be included here.

// ------------------------------------------------------------------ lanes

// The microkernel's view of the bfloat16 product (micro in fast_kernels_impl.h
// with kDepth 2): pairs of bfloat16 values times pairs of weights into float sums.
struct Bf16Lanes {
  using T = Bf16Bits;
  using Panel = Bf16Bits;
  using Acc = float;
  using Raw = Vec;
  static constexpr int kWidth = W;
  static constexpr int kDepth = 2;
  static constexpr int kScratch = 0;
  RNNKIT_TARGET static Raw zero() { return vzero(); }
  RNNKIT_TARGET static Raw ld(const Panel* p) { return bld(p); }
  RNNKIT_TARGET static Raw bcast(const T* p) { return bbcast(p); }
  RNNKIT_TARGET static Raw fma(Raw a, Raw b, Raw c) { return bdot(a, b, c); }
  RNNKIT_TARGET static void st(Acc* p, Raw v) { vst(p, v); }
};

// The product of the step kernels for a panel of PV vectors: PanelProduct over the
// bfloat16 rows and panels (with its prefetch of the next panel).
template <int PV>
RNNKIT_TARGET static inline PanelProduct<Bf16Lanes, PV> bf16_product(const Bf16Rows& in,
                                                                     const Bf16Panels& w,
                                                                     int64_t block,
                                                                     int64_t blocks, int64_t B,
                                                                     int rows) {
  const int64_t size = w.Kp * PV * W;
  const Bf16Bits* panel = w.packed + block * size;
  return {in.q, in.Kp, panel, next_panel(panel, size, block, blocks), B, rows};
}

// ------------------------------------------------------------------ kernels

RNNKIT_TARGET void bf16_lstm_forward(const LstmForwardArgsOf<float>& a, const Bf16Rows& in,
                                     const Bf16Panels& w, int64_t t, const float* h_prev,
                                     float* h_next, int64_t block) {
  lstm_step<FloatLanes>(
      a, t, h_prev, h_next, block,
      bf16_product<4>(in, w, block, (a.H + W - 1) / W, a.B, lstm_rows<Bf16Lanes>(a.B)));
}

RNNKIT_TARGET void bf16_gru_forward(const GruForwardArgsOf<float>& a, const Bf16Rows& in,
                                    const Bf16Panels& w, int64_t t, const float* h_prev,
                                    float* h_next, int64_t block) {
  gru_step<FloatLanes>(a, t, h_prev, h_next, block,
                       bf16_product<3>(in, w, block, (a.H + W - 1) / W, a.B,
                                       TileShape<3>::rows));
}

RNNKIT_TARGET void bf16_rnn_forward(const RnnForwardArgsOf<float>& a, const Bf16Rows& in,
                                    const Bf16Panels& w, int64_t t, const float* h_prev,
                                    float* h_next, int64_t block) {
  constexpr int64_t U = kPlainVectors * W;
  plain_step<FloatLanes>(a.B, a.H,
                         bf16_product<kPlainVectors>(in, w, block, (a.H + U - 1) / U, a.B,
                                                     TileShape<kPlainVectors>::rows),
                         a.len, t, a.out, h_prev, h_next, block, RnnValue<FloatLanes>{a, t});
}

RNNKIT_TARGET void bf16_lstm_project(const LstmProjectArgsOf<float>& a, const Bf16Rows& in,
                                     const Bf16Panels& w, int64_t t, const float* h_prev,
                                     float* h_next, int64_t block) {
  constexpr int64_t U = kPlainVectors * W;
  plain_step<FloatLanes>(a.B, a.P,
                         bf16_product<kPlainVectors>(in, w, block, (a.P + U - 1) / U, a.B,
                                                     TileShape<kPlainVectors>::rows),
                         a.len, t, a.out, h_prev, h_next, block, ProductValue<FloatLanes>{});
}

// The input projection's rows: no prefetch of the next panel (a chunk of rows
// reads its panel many times over).
RNNKIT_TARGET void bf16_projection(const ProjectionArgsOf<float>& a, const Bf16Rows& in,
                                   const Bf16Panels& w, int64_t r0, int64_t r1, int64_t block) {
  if (a.gates == 3) {
    projection_rows<FloatLanes, 3>(
        a, r0, r1, block,
        PanelProduct<Bf16Lanes, 3>{in.q, in.Kp, w.packed + block * w.Kp * 3 * W});
  } else {
    projection_rows<FloatLanes, 4>(
        a, r0, r1, block,
        PanelProduct<Bf16Lanes, 4>{in.q, in.Kp, w.packed + block * w.Kp * 4 * W});
  }
}

static const Bf16Kernels kBf16Kernels = {
    kName,
    W,
    &bround_row,
    &bf16_lstm_forward,
    &bf16_gru_forward,
    &bf16_rnn_forward,
    &bf16_lstm_project,
    &bf16_projection,
};
