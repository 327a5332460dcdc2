// The AVX-512 (F, VL, BW, DQ) vectors of the kernels' vector API (see
// fast_kernels_impl.h): 16 floats or 8 doubles per vector. Included inside an
// instruction-set namespace, under a target with at least these extensions, by
// the float kernels (fast_kernels_avx512.cpp) and the int8 kernels
// (quantized_kernels_avx512.cpp).
// Like fast_kernels_impl.h, no header may be included here.

using Vec = __m512;
constexpr int W = 16;
// Register tiles (TileShape in fast_kernels_impl.h): 6 rows x 4 vectors, 8 x 3.
// The VNNI kernels take the same: one block of 8 rows x 2 vectors measured slower
// at B = 8 than two of 4 x 4. (The AMX kernels set their own.)
#if !defined(RNNKIT_AMX_TILES)
constexpr int kRows4 = 6;
constexpr int kPass4 = 4;
constexpr int kRows3 = 8;
constexpr int kPass3 = 3;
constexpr int kWideRows = 6;
#endif

RNNKIT_TARGET static inline __mmask16 first_n(int n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}
RNNKIT_TARGET static inline Vec vzero() { return _mm512_setzero_ps(); }
RNNKIT_TARGET static inline Vec vset(float x) { return _mm512_set1_ps(x); }
RNNKIT_TARGET static inline Vec vld(const float* p) { return _mm512_loadu_ps(p); }
RNNKIT_TARGET static inline void vst(float* p, Vec v) { _mm512_storeu_ps(p, v); }
RNNKIT_TARGET static inline Vec vldn(const float* p, int n) {
  return _mm512_maskz_loadu_ps(first_n(n), p);
}
RNNKIT_TARGET static inline void vstn(float* p, Vec v, int n) {
  _mm512_mask_storeu_ps(p, first_n(n), v);
}
RNNKIT_TARGET static inline Vec vbcast(const float* p) { return _mm512_set1_ps(*p); }
RNNKIT_TARGET static inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
RNNKIT_TARGET static inline Vec vsub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
RNNKIT_TARGET static inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
RNNKIT_TARGET static inline Vec vdiv(Vec a, Vec b) { return _mm512_div_ps(a, b); }
RNNKIT_TARGET static inline Vec vfmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
RNNKIT_TARGET static inline Vec vfnmadd(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }
RNNKIT_TARGET static inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
RNNKIT_TARGET static inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
RNNKIT_TARGET static inline Vec vabs(Vec a) { return _mm512_abs_ps(a); }
// The sum of the lanes (the small products' dot products).
RNNKIT_TARGET static inline float vhsum(Vec a) { return _mm512_reduce_add_ps(a); }
RNNKIT_TARGET static inline Vec vround(Vec a) {
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
RNNKIT_TARGET static inline Vec vpow2n(Vec p, Vec n) { return _mm512_scalef_ps(p, n); }
RNNKIT_TARGET static inline Vec vcopysign(Vec mag, Vec sign) {
  const Vec s = _mm512_set1_ps(-0.0f);
  return _mm512_or_ps(_mm512_andnot_ps(s, mag), _mm512_and_ps(s, sign));
}
RNNKIT_TARGET static inline Vec vselect_lt(Vec a, Vec b, Vec x, Vec y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
}
RNNKIT_TARGET static inline Vec vpositive(Vec y) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, vzero(), _CMP_GT_OQ), vset(1.0f));
}

// Doubles, for the double-precision kernels (cell_kernels_f64_impl.h).
using DVec = __m512d;
constexpr int DW = 8;
RNNKIT_TARGET static inline __mmask8 first_n_d(int n) {
  return static_cast<__mmask8>((1u << n) - 1u);
}
RNNKIT_TARGET static inline DVec dzero() { return _mm512_setzero_pd(); }
RNNKIT_TARGET static inline DVec dset(double x) { return _mm512_set1_pd(x); }
RNNKIT_TARGET static inline DVec dldn(const double* p, int n) {
  return _mm512_maskz_loadu_pd(first_n_d(n), p);
}
RNNKIT_TARGET static inline void dstn(double* p, DVec v, int n) {
  _mm512_mask_storeu_pd(p, first_n_d(n), v);
}
RNNKIT_TARGET static inline DVec dld(const double* p) { return _mm512_loadu_pd(p); }
RNNKIT_TARGET static inline void dst(double* p, DVec v) { _mm512_storeu_pd(p, v); }
RNNKIT_TARGET static inline DVec dbcast(const double* p) { return _mm512_set1_pd(*p); }
RNNKIT_TARGET static inline DVec dadd(DVec a, DVec b) { return _mm512_add_pd(a, b); }
RNNKIT_TARGET static inline DVec dsub(DVec a, DVec b) { return _mm512_sub_pd(a, b); }
RNNKIT_TARGET static inline DVec dmul(DVec a, DVec b) { return _mm512_mul_pd(a, b); }
RNNKIT_TARGET static inline DVec ddiv(DVec a, DVec b) { return _mm512_div_pd(a, b); }
RNNKIT_TARGET static inline DVec dfmadd(DVec a, DVec b, DVec c) { return _mm512_fmadd_pd(a, b, c); }
RNNKIT_TARGET static inline DVec dfnmadd(DVec a, DVec b, DVec c) {
  return _mm512_fnmadd_pd(a, b, c);
}
RNNKIT_TARGET static inline DVec dmin(DVec a, DVec b) { return _mm512_min_pd(a, b); }
RNNKIT_TARGET static inline DVec dmax(DVec a, DVec b) { return _mm512_max_pd(a, b); }
RNNKIT_TARGET static inline DVec dabs(DVec a) { return _mm512_abs_pd(a); }
RNNKIT_TARGET static inline double dhsum(DVec a) { return _mm512_reduce_add_pd(a); }
RNNKIT_TARGET static inline DVec dround(DVec a) {
  return _mm512_roundscale_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
RNNKIT_TARGET static inline DVec dpow2n(DVec p, DVec n) { return _mm512_scalef_pd(p, n); }
RNNKIT_TARGET static inline DVec dcopysign(DVec mag, DVec sign) {
  const DVec s = _mm512_set1_pd(-0.0);
  return _mm512_or_pd(_mm512_andnot_pd(s, mag), _mm512_and_pd(s, sign));
}
RNNKIT_TARGET static inline DVec dselect_lt(DVec a, DVec b, DVec x, DVec y) {
  return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_LT_OQ), y, x);
}
RNNKIT_TARGET static inline DVec dpositive(DVec y) {
  return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(y, dzero(), _CMP_GT_OQ), dset(1.0));
}
