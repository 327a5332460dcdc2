// Vectors of doubles for the float64 kernels (the layer kernels of fast_kernels_impl.h
// and the cell passes of cell_kernels_impl.h), included by
// fast_kernels_impl.h inside one instruction set's namespace after that set's double
// primitives (DVec, DW, dldn, ...): exp and tanh to double precision, and the value type
// and math policy that rnnkit/cells.h asks for. (at::vec, compiled for any x86 CPU in this
// extension, computes exp and tanh one element at a time: the double passes cost more
// than a small step's two GEMMs.)

// ------------------------------------------------------------------ math

RNNKIT_TARGET static inline int valid_d(int64_t H, int64_t j) {
  const int64_t n = H - j;
  return n <= 0 ? 0 : (n >= DW ? DW : static_cast<int>(n));
}

// 1/k! for k = 0..16, the Taylor coefficients below.
struct InverseFactorials {
  double of[17];
  constexpr InverseFactorials() : of() {
    double f = 1.0;
    for (int k = 0; k < 17; ++k) {
      if (k > 0) f /= k;
      of[k] = f;
    }
  }
};
static constexpr InverseFactorials kInverseFactorial{};

// e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, the first exact in n * ln2_hi),
// e^r by its Taylor series to degree 13 (relative error below 1e-17 there), scaled by
// 2^n. The clamp keeps the result a normal double; x goes second into dmin/dmax, which
// return their second operand for a NaN, so a NaN passes through.
RNNKIT_TARGET static inline DVec dexp(DVec x) {
  x = dmin(dset(709.0), dmax(dset(-708.0), x));
  const DVec n = dround(dmul(x, dset(1.4426950408889634074)));
  DVec r = dfnmadd(n, dset(6.93147180369123816490e-01), x);
  r = dfnmadd(n, dset(1.90821492927058770002e-10), r);
  DVec p = dset(kInverseFactorial.of[13]);
  for (int k = 12; k >= 0; --k) p = dfmadd(p, r, dset(kInverseFactorial.of[k]));
  return dpow2n(p, n);
}

// e^y - 1 for |y| <= 1/2 by its Taylor series to degree 16 (no cancellation near 0).
RNNKIT_TARGET static inline DVec dexpm1_small(DVec y) {
  DVec q = dset(kInverseFactorial.of[16]);
  for (int k = 15; k >= 1; --k) q = dfmadd(q, y, dset(kInverseFactorial.of[k]));
  return dmul(q, y);
}

// tanh: expm1(2x) / (expm1(2x) + 2) below |x| = 1/4, where 1 - 2/(e^2|x| + 1) would lose
// relative accuracy; that with x's sign above.
RNNKIT_TARGET static inline DVec dtanh(DVec x) {
  const DVec one = dset(1.0), two = dset(2.0);
  const DVec ax = dabs(x);
  const DVec e = dexp(dadd(ax, ax));
  const DVec big = dcopysign(dsub(one, ddiv(two, dadd(e, one))), x);
  const DVec m = dexpm1_small(dmin(dset(0.5), dmax(dset(-0.5), dadd(x, x))));
  const DVec small = ddiv(m, dadd(m, two));
  return dselect_lt(ax, dset(0.25), small, big);
}

// ------------------------------------------------------------------ cells.h on vectors

struct DV {
  DVec v;
  DV() = default;
  RNNKIT_TARGET DV(DVec x) : v(x) {}
  RNNKIT_TARGET DV(double c) : v(dset(c)) {}
};
RNNKIT_TARGET static inline DV operator+(DV a, DV b) { return dadd(a.v, b.v); }
RNNKIT_TARGET static inline DV operator-(DV a, DV b) { return dsub(a.v, b.v); }
RNNKIT_TARGET static inline DV operator*(DV a, DV b) { return dmul(a.v, b.v); }
RNNKIT_TARGET static inline DV operator/(DV a, DV b) { return ddiv(a.v, b.v); }

struct DMath {
  RNNKIT_TARGET static DV exp(DV x) { return dexp(x.v); }
  RNNKIT_TARGET static DV tanh(DV x) { return dtanh(x.v); }
  // dmax returns its second operand for a NaN: relu lets it through, as torch.relu.
  RNNKIT_TARGET static DV relu(DV x) { return dmax(dzero(), x.v); }
  RNNKIT_TARGET static DV positive(DV y) { return dpositive(y.v); }
};
