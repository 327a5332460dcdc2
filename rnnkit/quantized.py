"""The int8 layer: its quantization, its op and the reference that specifies it.

Weights are int8 with one float32 scale per output row (symmetric: w ≈ q * scale,
q in [-127, 127]; torch's quantized modules may also hold -128). A product's other
operand (the layer's input, its running state, an LSTM's h_full before the
projection) is quantized a row at a time, when it is known, to levels in [-Q, Q]
with one scale per row. The sums are exact and a product's value is
float32(sum) * (row scale * weight scale); everything else is float32, as in the
float layer. Q depends on the kernels, by what the CPU multiplies fastest
(`levels(K, depth)`):
- AVX512-VNNI (depth 4): 8-bit levels, Q = 127, in quads of uint8 x int8 products
  (vpdpbusd), or in AMX tiles (tdpbusd) where the CPU has AMX-INT8, or in AVX-VNNI's
  8-lane vpdpbusd on AVX2 CPUs that have it (avx2_vnni): the same integers; twice the
  products per instruction of
- AVX2 (depth 2): int16 levels, Q as fine as exact int32 sums of K products allow
  (32767 up to K = 512, 16383 at K = 1024, ...), in pairs of int16 x int8 products
  (vpmaddwd).

`reference_layer` is that definition in plain PyTorch (the integer sums in float64,
where they are exact) and the fallback where no compiled kernel runs (with int16
levels); `rnnkit::quantized_layer` (csrc/cpu/quantized_ops.cpp) is the compiled one,
the dot products fused with the cell math; `kernels(K)` names the kernels it runs.

Error against the float32 layer on the dequantized weights: the operand's rounding,
at most scale_row / 2 = max|x| / (2Q) per element, so at most
max|x| * sum_k |w_jk| / (2Q) per pre-activation (below 1e-4 relative for Q = 32767,
below 0.4% for Q = 127).
Against the original float weights, add each weight's rounding, at most
scale_w / 2 = max_k |w_jk| / 254: at most sum_k |x_k| * max_k |w_jk| / 254 per
pre-activation. The gates' derivatives are at most 1 (tanh) and 1/4 (sigmoid),
so a step's state moves by no more than a small multiple of that.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from rnnkit import _extension

__all__ = ["quantize_weight", "levels", "quantize_rows", "kernels", "depth_of", "layer",
           "reference_layer"]

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")

# The longest product the 8-bit kernels take: K products of (level + 128) <= 255
# with int8 weights (|q| <= 128) within int32 (max_depth_for in
# csrc/cpu/quantized_kernels.h); longer ones run the int16 kernels.
VNNI_MAX_K = (2**31 - 1) // (255 * 128)


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-row symmetric int8 quantization of a float weight [rows, K]
    -> (int8 [rows, K], float32 scales [rows]); w ≈ q * scale[:, None]."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a row of zeros
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale[:, None]


def levels(K: int, depth: int = 2) -> int:
    """The largest level of the quantized operand of a K-long product for the kernels
    of `depth` (levels_for in csrc/cpu/quantized_kernels.h)."""
    if depth == 4:
        return 127
    return min(32767, (2**31 - 1) // (128 * max(1, K)))


def depth_of(kernels: str) -> int:
    """The depth of the kernels named `kernels` (see `kernels`): 4 for the 8-bit ones,
    2 for the int16 ones and the reference."""
    return 4 if kernels in ("avx512_amx", "avx512_vnni", "avx2_vnni") else 2


def quantize_rows(x: Tensor, depth: int = 2) -> tuple[Tensor, Tensor]:
    """[..., K] float32 -> (levels as float32 [..., K], scales [...]): the rows as the
    kernels of `depth` quantize them (quantize_levels in csrc/cpu/quantized_kernels_impl.h)."""
    Q = levels(x.size(-1), depth)
    top = x.abs().amax(dim=-1, keepdim=True)
    finite = torch.isfinite(x).all(dim=-1, keepdim=True)
    live = finite & (top >= 1e-30)
    safe_top = torch.where(live, top, torch.ones_like(top))
    # Q / top as one float32 division, like the kernels (the scalar-first `Q / t`
    # is t.reciprocal() * Q: another rounding, which moves a level now and then).
    inv = torch.full_like(safe_top, float(Q)) / safe_top
    q = torch.round(x * inv).clamp_(-Q, Q)
    q = torch.where(live, q, torch.zeros_like(q))
    scale = torch.where(live, safe_top / Q, torch.zeros_like(top))
    scale = torch.where(finite, scale, torch.full_like(top, float("nan")))
    return q, scale.squeeze(-1)


def _product(x: Tensor, w: Tensor, w_scale: Tensor, depth: int) -> Tensor:
    """x [..., K] float32 times int8 w [N, K]ᵀ the quantized way -> [..., N] float32."""
    q, row_scale = quantize_rows(x, depth)
    sums = torch.matmul(q.double(), w.double().t())  # exact: |sums| < 2^31
    return sums.float() * (row_scale.unsqueeze(-1) * w_scale)


def reference_layer(mode: str, input: Tensor, lengths: Tensor | None, h0: Tensor,
                    c0: Tensor | None, w_ih: Tensor, s_ih: Tensor, w_hh: Tensor, s_hh: Tensor,
                    b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None,
                    s_hr: Tensor | None, reverse: bool, depth: int = 2):
    """The contract of rnnkit::quantized_layer in plain PyTorch, for the kernels of
    `depth` -> (output [T, B, P], h_n [B, P], c_n [B, H], or an empty tensor but for
    the LSTM)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got '{mode}'")
    T = input.size(0)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    H = w_ih.size(0) // G
    bias = None
    b_hn = None
    if b_ih is not None:
        bias = b_ih + b_hh
        if mode == "GRU":  # b_hn goes inside r * (W_hn h + b_hn)
            bias = torch.cat([bias[:2 * H], b_ih[2 * H:]])
            b_hn = b_hh[2 * H:]
    xs = _product(input, w_ih, s_ih, depth)
    if bias is not None:
        xs = xs + bias
    h, c = h0, c0
    outputs: list[Tensor | None] = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        mask = None if lengths is None else (lengths.to(input.device) > t).unsqueeze(1)
        gh = _product(h, w_hh, s_hh, depth)
        if mode == "LSTM":
            i, f, g, o = (gh + xs[t]).chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if w_hr is not None:
                h_new = _product(h_new, w_hr, s_hr, depth)
            c = c_new if mask is None else torch.where(mask, c_new, c)
        elif mode == "GRU":
            xr, xz, xn = xs[t].chunk(3, dim=1)
            hr, hz, hn = gh.chunk(3, dim=1)
            if b_hn is not None:
                hn = hn + b_hn
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h_new = (1 - z) * n + z * h
        else:
            pre = gh + xs[t]
            h_new = torch.relu(pre) if mode == "RNN_RELU" else torch.tanh(pre)
        outputs[t] = h_new if mask is None else torch.where(mask, h_new, torch.zeros_like(h_new))
        h = h_new if mask is None else torch.where(mask, h_new, h)
    c_n = c if mode == "LSTM" else input.new_empty(0)
    return torch.stack(outputs), h, c_n


@torch.compiler.assume_constant_result
def kernels(K: int) -> str:
    """The name of the compiled kernels rnnkit::quantized_layer runs here for
    products up to K long ("avx512_amx", "avx512_vnni", "avx2_vnni", "avx2"), "" where it
    has none (a constant
    for torch.compile: RNNKIT_CPU_ISA is read when a graph is traced)."""
    if not _extension.loaded():
        return ""
    return torch.ops.rnnkit._quantized_kernels(K)


def layer(mode: str, input: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor | None,
          w_ih: Tensor, s_ih: Tensor, w_hh: Tensor, s_hh: Tensor, b_ih: Tensor | None,
          b_hh: Tensor | None, w_hr: Tensor | None, s_hr: Tensor | None, reverse: bool):
    """One layer direction: the compiled op on a CPU that has its kernels, else the
    reference."""
    args = (mode, input, lengths, h0, c0, w_ih, s_ih, w_hh, s_hh, b_ih, b_hh, w_hr, s_hr,
            reverse)
    # The longest product: the input's, the state's or the projection's.
    K = max(input.size(-1), h0.size(-1), 0 if w_hr is None else w_hr.size(1))
    if input.device.type == "cpu" and kernels(K):
        return torch.ops.rnnkit.quantized_layer(*args)
    return reference_layer(*args)


@functools.cache
def _register_fake() -> None:
    if not _extension.loaded():
        return  # no op to describe: the modules run the reference

    @torch.library.register_fake("rnnkit::quantized_layer")
    def _(mode, input, lengths, h0, c0, w_ih, s_ih, w_hh, s_hh, b_ih, b_hh, w_hr, s_hr,
          reverse):
        T, B = input.size(0), input.size(1)
        output = input.new_empty((T, B, h0.size(1)))
        c_n = c0.new_empty(c0.shape) if c0 is not None else input.new_empty(0)
        return output, h0.new_empty(h0.shape), c_n


_register_fake()
