// The int8 step kernels of quantized_kernels.h over the vector API of
// fast_kernels_impl.h, included by an instruction-set file after that file and
// after its integer primitives:
//   IVec                 a vector of W int32 (or 2W int16) lanes
//   izero()              zeros
//   iwiden(p)            the 2W int8 at p as 2W int16
//   ipair(p)             the two int16 at p in every pair of lanes
//   idot(a, b, c)        c + (a[2i] * b[2i] + a[2i+1] * b[2i+1]) per int32 lane i
//   ist(p, v)            store the W int32 lanes
//   vitof(p)             the W int32 at p as floats
// Like fast_kernels_impl.h, no header may be included here.

// ------------------------------------------------------------------ lanes

// The microkernel's view of the quantized product: int16 operand pairs times int8
// weight pairs into int32 sums (micro in fast_kernels_impl.h, kDepth 2).
struct Int8Lanes {
  using T = int16_t;
  using Panel = int8_t;
  using Acc = int32_t;
  using Raw = IVec;
  static constexpr int kWidth = W;
  static constexpr int kDepth = 2;
  RNNKIT_TARGET static Raw zero() { return izero(); }
  RNNKIT_TARGET static Raw ld(const Panel* p) { return iwiden(p); }
  RNNKIT_TARGET static Raw bcast(const T* p) { return ipair(p); }
  RNNKIT_TARGET static Raw fma(Raw a, Raw b, Raw c) { return idot(a, b, c); }
  RNNKIT_TARGET static void st(Acc* p, Raw v) { ist(p, v); }
};

// ------------------------------------------------------------------ product

// The product of the step kernels (see PanelProduct) for a panel of PV vectors:
// the int32 sums of the quantized rows with the block's int8 panel, then
// tile = float(sum) * (row scale * column scale).
template <int PV>
struct QuantizedProduct {
  QuantizedRows in;
  const int8_t* panel;  // the block's panel
  const float* scale;   // the block's PV*W column scales
  RNNKIT_TARGET void operator()(int64_t b0, int m, float* tile) const {
    alignas(64) int32_t sums[tile_size<Int8Lanes, PV>()];
    panel_product<Int8Lanes, PV>(m, in.Kp, in.q + b0 * in.Kp, in.Kp, panel, sums);
    for (int i = 0; i < m; ++i) {
      const Vec row = vset(in.scale[b0 + i]);
      for (int v = 0; v < PV; ++v) {
        const int c = i * PV * W + v * W;
        vst(tile + c, vmul(vitof(sums + c), vmul(row, vld(scale + v * W))));
      }
    }
  }
};

template <int PV>
RNNKIT_TARGET static inline QuantizedProduct<PV> quantized_product(const QuantizedRows& in,
                                                                   const QuantizedPanels& w,
                                                                   int64_t block) {
  return {in, w.packed + block * w.Kp * PV * W, w.scale + block * PV * W};
}

// ------------------------------------------------------------------ kernels

RNNKIT_TARGET void quantized_lstm_forward(const LstmForwardArgsOf<float>& a,
                                          const QuantizedRows& in, const QuantizedPanels& w,
                                          int64_t t, const float* h_prev, float* h_next,
                                          int64_t block) {
  lstm_step<FloatLanes>(a, t, h_prev, h_next, block, quantized_product<4>(in, w, block));
}

RNNKIT_TARGET void quantized_gru_forward(const GruForwardArgsOf<float>& a,
                                         const QuantizedRows& in, const QuantizedPanels& w,
                                         int64_t t, const float* h_prev, float* h_next,
                                         int64_t block) {
  gru_step<FloatLanes>(a, t, h_prev, h_next, block, quantized_product<3>(in, w, block));
}

RNNKIT_TARGET void quantized_rnn_forward(const RnnForwardArgsOf<float>& a,
                                         const QuantizedRows& in, const QuantizedPanels& w,
                                         int64_t t, const float* h_prev, float* h_next,
                                         int64_t block) {
  plain_step<FloatLanes>(a.B, a.H, quantized_product<kPlainVectors>(in, w, block), a.len, t,
                         a.out, h_prev, h_next, block, RnnValue<FloatLanes>{a, t});
}

RNNKIT_TARGET void quantized_lstm_project(const LstmProjectArgsOf<float>& a,
                                          const QuantizedRows& in, const QuantizedPanels& w,
                                          int64_t t, const float* h_prev, float* h_next,
                                          int64_t block) {
  plain_step<FloatLanes>(a.B, a.P, quantized_product<kPlainVectors>(in, w, block), a.len, t,
                         a.out, h_prev, h_next, block, ProductValue<FloatLanes>{});
}

RNNKIT_TARGET void quantized_projection(const ProjectionArgsOf<float>& a, const QuantizedRows& in,
                                        const QuantizedPanels& w, int64_t r0, int64_t r1,
                                        int64_t block) {
  if (a.gates == 3) {
    projection_rows<FloatLanes, 3>(a, r0, r1, block, quantized_product<3>(in, w, block));
  } else {
    projection_rows<FloatLanes, 4>(a, r0, r1, block, quantized_product<4>(in, w, block));
  }
}

static const QuantizedKernels kQuantizedKernels = {
    kName,
    W,
    &quantized_lstm_forward,
    &quantized_gru_forward,
    &quantized_rnn_forward,
    &quantized_lstm_project,
    &quantized_projection,
};
