// The int8 step kernels of quantized_kernels.h over the vector API of
// fast_kernels_impl.h, included by an instruction-set file after that file and
// after its integer primitives:
//   Level                int16_t (depth 2) or uint8_t (level + 128, depth 4)
//   IVec                 a vector of W int32 lanes
//   izero()              zeros
//   ild(p)               the int8 weights of W columns at p (depth each, side by
//                        side) as idot's second operand
//   ibcast(p)            the 4 bytes of levels at p in every int32 lane
//   idot(a, b, c)        c + the sum of the depth products a * b in every int32 lane
//   ist(p, v)            store the W int32 lanes
//   isub_offset(p, o)    p[i] -= o[i] for the W int32 lanes (depth 4 only)
//   vitof(p)             the W int32 at p as floats
//   ist_levels(p, v, n)  the first n lanes of v (integral floats in [-Q, Q]) as
//                        Levels at p (plus 128 for uint8 levels)
//   kKAlign, kBeginThread  QuantizedKernels' align and begin_thread
//   kIdotScratch         the registers idot needs besides its operands and result
//   amx_sums<PV>(A, K, panel, sums), kVnniRows
//                        with RNNKIT_AMX_TILES defined: the sums of 16 rows in AMX
//                        tiles, for row blocks of more than kVnniRows rows (fewer
//                        take the vpdpbusd microkernel)
// Like fast_kernels_impl.h, no header may be included here.

// ------------------------------------------------------------------ lanes

// The microkernel's view of the quantized product: quads of bytes or pairs of
// int16 levels times as many int8 weights into int32 sums (micro in
// fast_kernels_impl.h with kDepth 4 or 2).
struct Int8Lanes {
  using T = Level;
  using Panel = int8_t;
  using Acc = int32_t;
  using Raw = IVec;
  static constexpr int kWidth = W;
  static constexpr int kDepth = 4 / static_cast<int>(sizeof(Level));
  static constexpr int kScratch = kIdotScratch;
  RNNKIT_TARGET static Raw zero() { return izero(); }
  RNNKIT_TARGET static Raw ld(const Panel* p) { return ild(p); }
  RNNKIT_TARGET static Raw bcast(const T* p) { return ibcast(p); }
  RNNKIT_TARGET static Raw fma(Raw a, Raw b, Raw c) { return idot(a, b, c); }
  RNNKIT_TARGET static void st(Acc* p, Raw v) { ist(p, v); }
};

// ------------------------------------------------------------------ product

// The int32 sums of m rows of levels A (K apart) with a block's panel of PV
// vectors, into sums (rows of PV*W, TileShape<PV>::rows of them).
template <int PV>
RNNKIT_TARGET static inline void quantized_sums(int m, const Level* A, int64_t K,
                                                const int8_t* panel, int32_t* sums) {
#if defined(RNNKIT_AMX_TILES)
  if (m > kVnniRows) {
    amx_sums<PV>(A, K, panel, sums);  // all 16 rows of the tile; the caller reads m
    return;
  }
  micro_rows<Int8Lanes, PV, PV, kVnniRows>(m, K, A, K, panel, sums);
#else
  panel_product<Int8Lanes, PV>(m, K, A, K, panel, sums);
#endif
}

// The product of the step kernels (see PanelProduct) for a panel of PV vectors:
// the int32 sums of the quantized rows with the block's int8 panel (less the
// columns' offsets for 8-bit levels), then tile = float(sum) * (row scale * column
// scale).
template <int PV>
struct QuantizedProduct {
  QuantizedRows in;
  const int8_t* panel;   // the block's panel
  const float* scale;    // the block's PV*W column scales
  const int32_t* offset; // the block's PV*W column offsets (depth 4)
  static constexpr int MR = TileShape<PV>::rows;  // the rows of lstm_step's row blocks
  RNNKIT_TARGET void operator()(int64_t b0, int m, float* tile) const {
    alignas(64) int32_t sums[tile_size<Int8Lanes, PV>()];
    const Level* levels = static_cast<const Level*>(in.q);
    quantized_sums<PV>(m, levels + b0 * in.Kp, in.Kp, panel, sums);
    if constexpr (Int8Lanes::kDepth == 4) {
      for (int i = 0; i < m; ++i)
        for (int v = 0; v < PV; ++v) isub_offset(sums + i * PV * W + v * W, offset + v * W);
    }
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
  return {in, w.packed + block * w.Kp * PV * W, w.scale + block * PV * W,
          w.offset ? w.offset + block * PV * W : nullptr};
}

// ------------------------------------------------------------------ operands

// One row of K floats as the levels of these kernels (QuantizedKernels::
// quantize_row): q = round(x * (Q / max|x|)) clamped to [-Q, Q], rounded to nearest
// even (the rounding of torch.round and of the reference), level 0 from K to Kp. Returns the row's scale, max|x| / Q; 0 for a row below 1e-30, NaN for one
// with a NaN or an infinity.
RNNKIT_TARGET float quantize_levels(const float* x, int64_t K, int64_t Kp, void* out) {
  Level* q = static_cast<Level*>(out);
  constexpr Level kZero = Int8Lanes::kDepth == 4 ? Level{128} : Level{0};
  Vec top = vzero(), poison = vzero();  // poison: x * 0, NaN where x is not finite
  for (int64_t k = 0; k < K; k += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, K - k));
    const Vec v = vldn(x + k, n);
    top = vmax(vabs(v), top);  // a NaN lane keeps top (vmax returns its second operand)
    poison = vfmadd(v, vzero(), poison);
  }
  alignas(64) float tops[W], poisons[W];
  vst(tops, top);
  vst(poisons, poison);
  float t = 0.0f;
  bool finite = true;
  for (int l = 0; l < W; ++l) {
    t = std::max(t, tops[l]);
    finite = finite && poisons[l] == 0.0f;
  }
  if (!finite || t < 1e-30f) {
    std::fill(q, q + Kp, kZero);
    return finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  const float Q = static_cast<float>(levels_for(K, Int8Lanes::kDepth));
  const Vec inv = vset(Q / t), hi = vset(Q), lo = vset(-Q);
  for (int64_t k = 0; k < K; k += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, K - k));
    ist_levels(q + k, vmin(vmax(vround(vmul(vldn(x + k, n), inv)), lo), hi), n);
  }
  std::fill(q + K, q + Kp, kZero);
  return t / Q;
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
    Int8Lanes::kDepth,
    kKAlign,
    kBeginThread,
    &quantize_levels,
    &quantized_lstm_forward,
    &quantized_gru_forward,
    &quantized_rnn_forward,
    &quantized_lstm_project,
    &quantized_projection,
};
