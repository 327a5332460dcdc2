// The AVX2 + FMA vectors of the kernels' vector API (see fast_kernels_impl.h): 8
// floats or 4 doubles per vector, register tiles of 6 rows x 2 vectors for panels
// of 4 vectors and 4 x 3 for panels of 3. Included inside an instruction-set
// namespace, under a target with at least these extensions, by the float and int16
// kernels (fast_kernels_avx2.cpp) and the AVX-VNNI int8 ones
// (quantized_kernels_avx_vnni.cpp). Like fast_kernels_impl.h, no header may be
// included here.

using Vec = __m256;
constexpr int W = 8;
constexpr int kRows4 = 6;  // 12 accumulators, 2 weight vectors, 1 broadcast
constexpr int kPass4 = 2;
constexpr int kRows3 = 4;
constexpr int kPass3 = 3;
// Up to 3 rows take all 4 vectors at once: 3x4 is 17 registers, one weight
// vector comes from memory, and still measured 5.88 against 5.05 for 3x2 passes.
constexpr int kWideRows = 3;

RNNKIT_TARGET static inline __m256i first_n(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
RNNKIT_TARGET static inline Vec vzero() { return _mm256_setzero_ps(); }
RNNKIT_TARGET static inline Vec vset(float x) { return _mm256_set1_ps(x); }
RNNKIT_TARGET static inline Vec vld(const float* p) { return _mm256_loadu_ps(p); }
RNNKIT_TARGET static inline void vst(float* p, Vec v) { _mm256_storeu_ps(p, v); }
RNNKIT_TARGET static inline Vec vldn(const float* p, int n) {
  return n == W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_n(n));
}
RNNKIT_TARGET static inline void vstn(float* p, Vec v, int n) {
  if (n == W) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, first_n(n), v);
  }
}
RNNKIT_TARGET static inline Vec vbcast(const float* p) { return _mm256_broadcast_ss(p); }
RNNKIT_TARGET static inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
RNNKIT_TARGET static inline Vec vsub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
RNNKIT_TARGET static inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
RNNKIT_TARGET static inline Vec vdiv(Vec a, Vec b) { return _mm256_div_ps(a, b); }
RNNKIT_TARGET static inline Vec vfmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
RNNKIT_TARGET static inline Vec vfnmadd(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
RNNKIT_TARGET static inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
RNNKIT_TARGET static inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
RNNKIT_TARGET static inline Vec vabs(Vec a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
// The sum of the lanes (the small products' dot products).
RNNKIT_TARGET static inline float vhsum(Vec a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
RNNKIT_TARGET static inline Vec vround(Vec a) {
  return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// p * 2^n for integral n in [-126, 127] (vexp's clamp keeps n there).
RNNKIT_TARGET static inline Vec vpow2n(Vec p, Vec n) {
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
RNNKIT_TARGET static inline Vec vcopysign(Vec mag, Vec sign) {
  const Vec s = _mm256_set1_ps(-0.0f);
  return _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sign));
}
RNNKIT_TARGET static inline Vec vselect_lt(Vec a, Vec b, Vec x, Vec y) {
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}
RNNKIT_TARGET static inline Vec vpositive(Vec y) {
  return _mm256_and_ps(_mm256_cmp_ps(y, vzero(), _CMP_GT_OQ), vset(1.0f));
}

// Doubles, for the double-precision kernels (cell_kernels_f64_impl.h).
using DVec = __m256d;
constexpr int DW = 4;
RNNKIT_TARGET static inline __m256i first_n_d(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
RNNKIT_TARGET static inline DVec dzero() { return _mm256_setzero_pd(); }
RNNKIT_TARGET static inline DVec dset(double x) { return _mm256_set1_pd(x); }
RNNKIT_TARGET static inline DVec dldn(const double* p, int n) {
  return n == DW ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, first_n_d(n));
}
RNNKIT_TARGET static inline void dstn(double* p, DVec v, int n) {
  if (n == DW) {
    _mm256_storeu_pd(p, v);
  } else {
    _mm256_maskstore_pd(p, first_n_d(n), v);
  }
}
RNNKIT_TARGET static inline DVec dld(const double* p) { return _mm256_loadu_pd(p); }
RNNKIT_TARGET static inline void dst(double* p, DVec v) { _mm256_storeu_pd(p, v); }
RNNKIT_TARGET static inline DVec dbcast(const double* p) { return _mm256_broadcast_sd(p); }
RNNKIT_TARGET static inline DVec dadd(DVec a, DVec b) { return _mm256_add_pd(a, b); }
RNNKIT_TARGET static inline DVec dsub(DVec a, DVec b) { return _mm256_sub_pd(a, b); }
RNNKIT_TARGET static inline DVec dmul(DVec a, DVec b) { return _mm256_mul_pd(a, b); }
RNNKIT_TARGET static inline DVec ddiv(DVec a, DVec b) { return _mm256_div_pd(a, b); }
RNNKIT_TARGET static inline DVec dfmadd(DVec a, DVec b, DVec c) { return _mm256_fmadd_pd(a, b, c); }
RNNKIT_TARGET static inline DVec dfnmadd(DVec a, DVec b, DVec c) {
  return _mm256_fnmadd_pd(a, b, c);
}
RNNKIT_TARGET static inline DVec dmin(DVec a, DVec b) { return _mm256_min_pd(a, b); }
RNNKIT_TARGET static inline DVec dmax(DVec a, DVec b) { return _mm256_max_pd(a, b); }
RNNKIT_TARGET static inline DVec dabs(DVec a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
RNNKIT_TARGET static inline double dhsum(DVec a) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
RNNKIT_TARGET static inline DVec dround(DVec a) {
  return _mm256_round_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// p * 2^n for integral n in [-1022, 1023] (dexp's clamp keeps n there).
RNNKIT_TARGET static inline DVec dpow2n(DVec p, DVec n) {
  const __m256i e = _mm256_slli_epi64(
      _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023)),
      52);
  return _mm256_mul_pd(p, _mm256_castsi256_pd(e));
}
RNNKIT_TARGET static inline DVec dcopysign(DVec mag, DVec sign) {
  const DVec s = _mm256_set1_pd(-0.0);
  return _mm256_or_pd(_mm256_andnot_pd(s, mag), _mm256_and_pd(s, sign));
}
RNNKIT_TARGET static inline DVec dselect_lt(DVec a, DVec b, DVec x, DVec y) {
  return _mm256_blendv_pd(y, x, _mm256_cmp_pd(a, b, _CMP_LT_OQ));
}
RNNKIT_TARGET static inline DVec dpositive(DVec y) {
  return _mm256_and_pd(_mm256_cmp_pd(y, dzero(), _CMP_GT_OQ), dset(1.0));
}

// int32 lanes, for the int8 kernels of both AVX2 files (quantized_kernels_impl.h).
using IVec = __m256i;
RNNKIT_TARGET static inline IVec izero() { return _mm256_setzero_si256(); }
RNNKIT_TARGET static inline IVec iload(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
RNNKIT_TARGET static inline void ist(int32_t* p, IVec v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
RNNKIT_TARGET static inline Vec vitof(const int32_t* p) { return _mm256_cvtepi32_ps(iload(p)); }
