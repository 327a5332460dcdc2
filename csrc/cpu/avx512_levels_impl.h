// The integer primitives of the 8-bit int8 kernels (quantized_kernels_impl.h) in
// AVX-512 with VNNI, shared by the VNNI kernels (quantized_kernels_avx512.cpp) and
// the AMX ones (quantized_kernels_amx.cpp, whose products are tiles but whose
// levels, offsets and scaling are these). Included inside an instruction-set
// namespace after avx512_vectors_impl.h, under a target with avx512vnni; like
// fast_kernels_impl.h, no header may be included here.

// Integers: 8-bit levels stored as level + 128 (vpdpbusd multiplies unsigned
// bytes by signed ones).
using Level = uint8_t;
using IVec = __m512i;
RNNKIT_TARGET static inline IVec izero() { return _mm512_setzero_si512(); }
RNNKIT_TARGET static inline IVec ild(const int8_t* p) { return _mm512_loadu_si512(p); }
RNNKIT_TARGET static inline IVec ibcast(const uint8_t* p) {
  int32_t quad;
  __builtin_memcpy(&quad, p, sizeof(quad));
  return _mm512_set1_epi32(quad);
}
RNNKIT_TARGET static inline IVec idot(IVec a, IVec b, IVec c) {
  return _mm512_dpbusd_epi32(c, a, b);
}
RNNKIT_TARGET static inline void ist(int32_t* p, IVec v) { _mm512_storeu_si512(p, v); }
RNNKIT_TARGET static inline void isub_offset(int32_t* p, const int32_t* o) {
  _mm512_storeu_si512(p, _mm512_sub_epi32(_mm512_loadu_si512(p), _mm512_loadu_si512(o)));
}
RNNKIT_TARGET static inline Vec vitof(const int32_t* p) {
  return _mm512_cvtepi32_ps(_mm512_loadu_si512(p));
}
RNNKIT_TARGET static inline void ist_levels(uint8_t* p, Vec v, int n) {
  // level + 128 is in [1, 255]: vpmovdb's truncation to a byte keeps it.
  const __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(128));
  _mm512_mask_cvtepi32_storeu_epi8(p, first_n(n), i);
}
