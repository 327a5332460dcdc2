// The element types' lanes for the kernels of fast_kernels_impl.h and
// cell_kernels_impl.h, included inside one instruction set's namespace after its
// vector primitives (vld, ..., for floats; dld, ..., for doubles) and
// cell_kernels_f64_impl.h. Each lane type gives the value type and the math policy
// that rnnkit/cells.h asks for (the instruction-set file includes cells.h under its
// target, so that its templates are compiled for it; only vectors are instantiated
// here, never cells.h's scalar versions, which other files compile for any CPU),
// and the raw vector operations of the microkernel.

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

// ------------------------------------------------------------------ lanes

// The vector registers of the instruction set whose raw vectors L holds: 32 with
// AVX-512's 64-byte ones, 16 with AVX2's. The register tiles are sized from it.
template <typename L>
constexpr int vector_registers() {
  return sizeof(typename L::Raw) == 64 ? 32 : 16;
}

// Vectors of n valid elements (the rest zero) in and out (load, store), and the
// full-width operations of the microkernel on the raw vectors (ld, st, bcast, fma;
// its panel and tile hold T, one k per panel vector: see micro).
struct FloatLanes {
  using T = float;
  using Panel = T;
  using Acc = T;
  static constexpr int kDepth = 1;
  static constexpr int kScratch = 0;  // registers fma needs besides its operands
  using Raw = Vec;
  using V = CV;
  using M = CMath;
  static constexpr int kWidth = W;
  RNNKIT_TARGET static V load(const T* p, int n) { return vldn(p, n); }
  RNNKIT_TARGET static void store(T* p, V v, int n) { vstn(p, v.v, n); }
  RNNKIT_TARGET static int valid_at(int64_t H, int64_t j) { return valid(H, j); }
  RNNKIT_TARGET static Raw zero() { return vzero(); }
  RNNKIT_TARGET static Raw ld(const T* p) { return vld(p); }
  RNNKIT_TARGET static void st(T* p, Raw v) { vst(p, v); }
  RNNKIT_TARGET static Raw bcast(const T* p) { return vbcast(p); }
  RNNKIT_TARGET static Raw fma(Raw a, Raw b, Raw c) { return vfmadd(a, b, c); }
  RNNKIT_TARGET static Raw ldn(const T* p, int n) { return vldn(p, n); }
  RNNKIT_TARGET static void stn(T* p, Raw v, int n) { vstn(p, v, n); }
  RNNKIT_TARGET static T hsum(Raw v) { return vhsum(v); }
};
struct DoubleLanes {
  using T = double;
  using Panel = T;
  using Acc = T;
  static constexpr int kDepth = 1;
  static constexpr int kScratch = 0;  // registers fma needs besides its operands
  using Raw = DVec;
  using V = DV;
  using M = DMath;
  static constexpr int kWidth = DW;
  RNNKIT_TARGET static V load(const T* p, int n) { return dldn(p, n); }
  RNNKIT_TARGET static void store(T* p, V v, int n) { dstn(p, v.v, n); }
  RNNKIT_TARGET static int valid_at(int64_t H, int64_t j) { return valid_d(H, j); }
  RNNKIT_TARGET static Raw zero() { return dzero(); }
  RNNKIT_TARGET static Raw ld(const T* p) { return dld(p); }
  RNNKIT_TARGET static void st(T* p, Raw v) { dst(p, v); }
  RNNKIT_TARGET static Raw bcast(const T* p) { return dbcast(p); }
  RNNKIT_TARGET static Raw fma(Raw a, Raw b, Raw c) { return dfmadd(a, b, c); }
  RNNKIT_TARGET static Raw ldn(const T* p, int n) { return dldn(p, n); }
  RNNKIT_TARGET static void stn(T* p, Raw v, int n) { dstn(p, v, n); }
  RNNKIT_TARGET static T hsum(Raw v) { return dhsum(v); }
};

