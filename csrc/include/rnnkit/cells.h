#pragma once
// The gate math of the three cells, forward and backward, for one element of the
// hidden state. The CPU and the CUDA kernels both call these functions, so the CPU
// tests exercise the math the GPU runs.
//
// Every function is a template over the value type V and a math policy M that
// supplies the transcendental functions. For scalars (float, double, the float
// accumulation type of half and bfloat16) the default policy ScalarMath<V> works on
// host and device; the CPU kernels plug in a policy for at::vec::Vectorized<V> so
// that the same code runs a whole vector of elements at once. V needs only + - * /
// and construction from a double constant.
//
// Notation follows torch.nn (gate order i, f, g, o for LSTM; r, z, n for GRU).
// "Pre" values are pre-activations: input projection + hidden projection + biases.

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RNNKIT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RNNKIT_HOST_DEVICE inline
#endif

namespace rnnkit {
namespace cells {

template <typename V>
struct ScalarMath {
  static RNNKIT_HOST_DEVICE V exp(V x) {
    using std::exp;
    return exp(x);
  }
  static RNNKIT_HOST_DEVICE V tanh(V x) {
    using std::tanh;
    return tanh(x);
  }
  // Written so that a NaN comes through, as torch.relu lets it.
  static RNNKIT_HOST_DEVICE V relu(V x) { return x < V(0) ? V(0) : x; }
  // 1 where y > 0, else 0: the derivative of relu read off its output.
  static RNNKIT_HOST_DEVICE V positive(V y) { return y > V(0) ? V(1) : V(0); }
};

template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE V sigmoid(V x) {
  return V(1) / (V(1) + M::exp(V(0) - x));
}

// ---------------------------------------------------------------- RNN

// h' = tanh(pre) or relu(pre).
template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE V rnn_forward(V pre, bool relu) {
  return relu ? M::relu(pre) : M::tanh(pre);
}

// Gradient of the pre-activation from dh' and h' itself.
template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE V rnn_backward(V dh, V h, bool relu) {
  return relu ? dh * M::positive(h) : dh * (V(1) - h * h);
}

// ---------------------------------------------------------------- LSTM

template <typename V>
struct LstmState {
  V i, f, g, o;  // gates after their nonlinearities
  V c;           // new cell state
  V h;           // o * tanh(c), before any projection
};

template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE LstmState<V> lstm_forward(V pre_i, V pre_f, V pre_g, V pre_o, V c_prev) {
  LstmState<V> s;
  s.i = sigmoid<V, M>(pre_i);
  s.f = sigmoid<V, M>(pre_f);
  s.g = M::tanh(pre_g);
  s.o = sigmoid<V, M>(pre_o);
  s.c = s.f * c_prev + s.i * s.g;
  s.h = s.o * M::tanh(s.c);
  return s;
}

template <typename V>
struct LstmGrads {
  V pre_i, pre_f, pre_g, pre_o;  // gradients of the pre-activations
  V c_prev;                      // gradient flowing into the previous cell state
};

// dh: gradient of h = o * tanh(c) (after back-projection, if any);
// dc: gradient of c arriving from the next step (and from c_n).
template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE LstmGrads<V> lstm_backward(V dh, V dc, V i, V f, V g, V o, V c, V c_prev) {
  const V tc = M::tanh(c);
  const V dc_total = dc + dh * o * (V(1) - tc * tc);
  LstmGrads<V> d;
  d.pre_i = dc_total * g * i * (V(1) - i);
  d.pre_f = dc_total * c_prev * f * (V(1) - f);
  d.pre_g = dc_total * i * (V(1) - g * g);
  d.pre_o = dh * tc * o * (V(1) - o);
  d.c_prev = dc_total * f;
  return d;
}

// ---------------------------------------------------------------- GRU
// r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(xn + r * hn),
// h' = (1 - z) * n + z * h, where x* include b_ih and h* include b_hh: the reset
// gate scales the hidden projection *with* its bias, so b_hn cannot be folded.

template <typename V>
struct GruState {
  V r, z, n;
  V h;  // new hidden state
};

template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE GruState<V> gru_forward(V xr, V xz, V xn, V hr, V hz, V hn, V h_prev) {
  GruState<V> s;
  s.r = sigmoid<V, M>(xr + hr);
  s.z = sigmoid<V, M>(xz + hz);
  s.n = M::tanh(xn + s.r * hn);
  s.h = (V(1) - s.z) * s.n + s.z * h_prev;
  return s;
}

template <typename V>
struct GruGrads {
  V pre_r, pre_z;  // gradients of xr + hr and xz + hz (shared by both projections)
  V xn;            // gradient of the input projection of n
  V hn;            // gradient of the hidden projection of n (W_hn h + b_hn)
  V h_prev;        // direct part of the gradient of h_prev (z * dh)
};

template <typename V, typename M = ScalarMath<V>>
RNNKIT_HOST_DEVICE GruGrads<V> gru_backward(V dh, V r, V z, V n, V hn, V h_prev) {
  GruGrads<V> d;
  const V dn = dh * (V(1) - z);
  const V dz = dh * (h_prev - n);
  d.xn = dn * (V(1) - n * n);
  d.hn = d.xn * r;
  d.pre_r = d.xn * hn * r * (V(1) - r);
  d.pre_z = dz * z * (V(1) - z);
  d.h_prev = dh * z;
  return d;
}

}  // namespace cells
}  // namespace rnnkit
