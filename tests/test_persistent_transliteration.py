"""The persistent forward kernel (csrc/cuda/persistent/persistent_forward.cu, with
warp_product.cuh and partial_index of rnnkit/persistent_plan.h) transliterated line by line
into array code and run on the CPU against the reference layer ops, over the plans the planner
makes for an H100 and for devices with fewer SMs (more units per block).

What it proves without a GPU: the kernel's index math. The prologue's W_hh slice and its zero
padding, the staging of h_{t-1} from the previous step's output row (or h0, per direction and
length), each K-warp's product in the m16n8k16 fragment layouts of the PTX ISA (the 16-bit
types) or the FMA path (float), the partial sums stored and loaded through partial_index, the
gate math's pairs, the reserve, padded steps, and h_n / c_n. What it cannot prove: the
launch, the barrier's memory ordering, the hardware's rounding order inside an mma (float32
sums in another order, within the tolerance). A change to the kernel's layout must change this
file with it.
"""

import numpy as np
import pytest
import torch

from helpers import H100, partial_index, persistent_plan
from helpers import PERSISTENT_GATES as GATES
from helpers import PERSISTENT_TOL as TOL
from rnnkit import _extension, reference

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

RESERVE = {"lstm": 5, "gru": 4}


def rounded(x, dtype):
    """x (float64 array) as the kernel's dtype holds it, back in float64."""
    return torch.from_numpy(np.asarray(x, dtype=np.float64)).to(dtype).double().numpy()


def f32(x):
    return np.asarray(x, dtype=np.float32)


def warp_product_16bit(acc, w_s, h_s, m_tiles, n_tiles, chunk_begin, chunk_end):
    """warp_product for 16-bit types, all 32 lanes at once. Lane 4g + q loads 8 consecutive
    k = 32c + 8q + j of rows g, g + 8 of W (lo, hi) and of row g of h (b) and feeds
    mma.sync.m16n8k16 twice: (lo.x, hi.x, lo.y, hi.y | b.x, b.y), then the .z, .w halves.
    The mma itself follows the PTX ISA's fragment layouts: A row-major 16x16 with a0 =
    A[g][2q..2q+1], a1 = A[g+8][2q..], a2 = A[g][2q+8..], a3 = A[g+8][2q+8..]; B 16x8 with
    b0 = B[2q..2q+1][g], b1 = B[2q+8..2q+9][g]; C with c0, c1 = C[g][2q..2q+1] and c2, c3 =
    C[g+8][2q..2q+1]. acc: [m_tiles, n_tiles, 32 lanes, 4]."""
    lanes = np.arange(32)
    g, q = lanes >> 2, lanes & 3
    for chunk in range(chunk_begin, chunk_end):
        k = chunk * 32 + q * 8  # per lane
        cols = k[:, None] + np.arange(8)[None, :]  # [32, 8]
        for mt in range(m_tiles):
            lo = w_s[(mt * 16 + g)[:, None], cols]
            hi = w_s[(mt * 16 + g + 8)[:, None], cols]
            for nt in range(n_tiles):
                b = h_s[(nt * 8 + g)[:, None], cols]
                for half in (0, 1):  # (x, y), then (z, w)
                    j = 4 * half
                    a0, a2 = lo[:, j:j + 2], lo[:, j + 2:j + 4]
                    a1, a3 = hi[:, j:j + 2], hi[:, j + 2:j + 4]
                    b0, b1 = b[:, j:j + 2], b[:, j + 2:j + 4]
                    A = np.full((16, 16), np.nan)  # every element set by some lane
                    Bm = np.full((16, 8), np.nan)
                    for e in (0, 1):
                        A[g, 2 * q + e] = a0[:, e]
                        A[g + 8, 2 * q + e] = a1[:, e]
                        A[g, 2 * q + 8 + e] = a2[:, e]
                        A[g + 8, 2 * q + 8 + e] = a3[:, e]
                        Bm[2 * q + e, g] = b0[:, e]
                        Bm[2 * q + 8 + e, g] = b1[:, e]
                    C = f32(A) @ f32(Bm)
                    acc[mt, nt, :, 0] += C[g, 2 * q]
                    acc[mt, nt, :, 1] += C[g, 2 * q + 1]
                    acc[mt, nt, :, 2] += C[g + 8, 2 * q]
                    acc[mt, nt, :, 3] += C[g + 8, 2 * q + 1]


def warp_product_float(acc, w_s, h_s, m_tiles, n_tiles, chunk_begin, chunk_end):
    """warp_product for float: lane 4g + q sums over the warp's whole K range rows g, g + 8
    of W against rows 2q, 2q + 1 of each 8-column tile of h, in the same C layout."""
    lanes = np.arange(32)
    g, q = lanes >> 2, lanes & 3
    ks = slice(chunk_begin * 32, chunk_end * 32)
    for mt in range(m_tiles):
        lo = f32(w_s[mt * 16 + g, ks])
        hi = f32(w_s[mt * 16 + g + 8, ks])
        for nt in range(n_tiles):
            h0 = f32(h_s[nt * 8 + 2 * q, ks])
            h1 = f32(h_s[nt * 8 + 2 * q + 1, ks])
            acc[mt, nt, :, 0] += (lo * h0).sum(1)
            acc[mt, nt, :, 1] += (lo * h1).sum(1)
            acc[mt, nt, :, 2] += (hi * h0).sum(1)
            acc[mt, nt, :, 3] += (hi * h1).sum(1)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def run_kernel(cell, dtype, geometry, layer, reverse):
    """The whole grid of one direction, step by step (the step barrier: every block's
    output[t] is written before any block reads it), each block as the kernel runs it."""
    x, lengths, h0, c0 = layer["input_proj"], layer["lengths"], layer["h0"], layer.get("c0")
    w_hh, b_hh = layer["w_hh"], layer["b_hh"]
    T, B, GH = x.shape
    G = GATES[cell]
    H = GH // G
    P = H
    U, S = geometry["units_per_block"], geometry["row_stride"]
    blocks, threads = geometry["blocks"], geometry["threads"]
    rows_padded, batch_padded = geometry["rows_padded"], geometry["batch_padded"]
    k_padded, k_warps = -(-P // 32) * 32, geometry["k_warps"]
    m_tiles, n_tiles, PS = geometry["m_tiles"], geometry["n_tiles"], geometry["partial_stride"]
    kvec = 4 if dtype == torch.float32 else 8  # elements per 16-byte copy
    lens = np.clip(lengths if lengths is not None else np.full(B, T), 0, T)

    output = np.full((T, B, P), np.nan)  # at::empty: every element must be written
    h_n = np.full((B, P), np.nan)
    c_n = np.full((B, H), np.nan)
    reserve = np.full((T, B, RESERVE[cell] * H), np.nan)

    # Prologue, per block: W_hh slice [rows_padded, S], zero h staging, per-pair state.
    state = []
    for blk in range(blocks):
        u0 = blk * U
        units_here = min(H - u0, U)
        w_s = np.zeros((rows_padded, S))
        for r in range(rows_padded):
            gate, u = r // U, r % U
            if r < G * U and u < units_here:
                w_s[r, :P] = w_hh[gate * H + u0 + u, :]
        pairs = []
        for tid in range(threads):
            pair_u, pair_b = tid % U, tid // U
            if not (pair_b < B and pair_u < units_here):
                pairs.append(None)
                continue
            unit = u0 + pair_u
            pr = dict(b=pair_b, unit=unit, length=int(lens[pair_b]),
                      bias=[b_hh[gg * H + unit] if b_hh is not None else 0.0
                            for gg in range(G)],
                      h=h0[pair_b, unit], c=c0[pair_b, unit] if cell == "lstm" else 0.0)
            if pr["length"] == 0:
                h_n[pair_b, unit] = h0[pair_b, unit]
                if cell == "lstm":
                    c_n[pair_b, unit] = c0[pair_b, unit]
            pairs.append(pr)
        state.append(dict(u0=u0, w_s=w_s, h_s=np.zeros((batch_padded, S)), pairs=pairs))

    chunks = k_padded // 32
    for s in range(T):
        t = T - 1 - s if reverse else s
        new_output = {}
        for blk in range(blocks):
            st = state[blk]
            h_s = st["h_s"]
            partial = np.full(k_warps * batch_padded * PS, np.nan)  # read only what was stored
            for warp in range(k_warps):
                chunk_begin = warp * chunks // k_warps
                chunk_end = (warp + 1) * chunks // k_warps
                vectors = (min(chunk_end * 32, P) - chunk_begin * 32) // kvec
                # 2. Staging: rows b < B of this warp's K range, 16-byte copies.
                for i in range(B * vectors):
                    b = i // vectors
                    k = chunk_begin * 32 + (i % vectors) * kvec
                    if not reverse:
                        src = h0[b] if t == 0 else output[t - 1, b]
                    else:
                        src = output[t + 1, b] if t + 1 < lens[b] else h0[b]
                    h_s[b, k:k + kvec] = src[k:k + kvec]
                # 3. The product and its partial sums at partial_index.
                acc = np.zeros((m_tiles, n_tiles, 32, 4), dtype=np.float32)
                product = warp_product_float if dtype == torch.float32 else warp_product_16bit
                product(acc, st["w_s"], h_s, m_tiles, n_tiles, chunk_begin, chunk_end)
                lanes = np.arange(32)
                g, q = lanes >> 2, lanes & 3
                mine = warp * batch_padded * PS
                for mt in range(m_tiles):
                    for nt in range(n_tiles):
                        r, n = mt * 16 + g, nt * 8 + 2 * q
                        partial[mine + partial_index(n, r, PS)] = acc[mt, nt, :, 0]
                        partial[mine + partial_index(n + 1, r, PS)] = acc[mt, nt, :, 1]
                        partial[mine + partial_index(n, r + 8, PS)] = acc[mt, nt, :, 2]
                        partial[mine + partial_index(n + 1, r + 8, PS)] = acc[mt, nt, :, 3]
            # 4. Gate math of each pair.
            for tid, pr in enumerate(st["pairs"]):
                if pr is None:
                    continue
                pair_u, b, unit = tid % U, pr["b"], pr["unit"]
                active = t < pr["length"]
                saved = [0.0] * RESERVE[cell]
                h_new = 0.0
                if active:
                    pre = []
                    for gg in range(G):
                        col = partial_index(b, gg * U + pair_u, PS)
                        total = np.float32(pr["bias"][gg])
                        for w in range(k_warps):
                            total += np.float32(partial[col + w * batch_padded * PS])
                        pre.append(float(total))
                    xs = [x[t, b, gg * H + unit] for gg in range(G)]
                    if cell == "lstm":
                        i_, f_ = sigmoid(xs[0] + pre[0]), sigmoid(xs[1] + pre[1])
                        g_, o_ = np.tanh(xs[2] + pre[2]), sigmoid(xs[3] + pre[3])
                        c = f_ * pr["c"] + i_ * g_
                        h_new = rounded(o_ * np.tanh(c), dtype)
                        saved = [i_, f_, g_, o_, c]
                        pr["c"] = c
                    else:
                        r_, z_ = sigmoid(xs[0] + pre[0]), sigmoid(xs[1] + pre[1])
                        n_ = np.tanh(xs[2] + r_ * pre[2])
                        h_new = rounded((1 - z_) * n_ + z_ * pr["h"], dtype)
                        saved = [r_, z_, n_, pre[2]]
                        pr["h"] = h_new
                new_output[(b, unit)] = h_new
                reserve[t, b, [k * H + unit for k in range(RESERVE[cell])]] = \
                    rounded(np.array(saved), dtype)
                last = active and (t == 0 if reverse else t == pr["length"] - 1)
                if last:
                    h_n[b, unit] = h_new
                    if cell == "lstm":
                        c_n[b, unit] = rounded(pr["c"], dtype)
        for (b, unit), v in new_output.items():  # the barrier: published for the next step
            output[t, b, unit] = v
    outs = [output, h_n] + ([c_n] if cell == "lstm" else []) + [reserve]
    return [torch.from_numpy(o) for o in outs]


def make_layer(cell, T, B, I, H, dtype, packed, seed):
    g = torch.Generator().manual_seed(seed)
    G = GATES[cell]

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).double()

    layer = dict(input=r(T, B, I), h0=r(B, H, scale=0.5), w_ih=r(G * H, I, scale=I ** -0.5),
                 w_hh=r(G * H, H, scale=H ** -0.5), b_ih=r(G * H, scale=0.1),
                 b_hh=r(G * H, scale=0.1), lengths=None)
    if cell == "lstm":
        layer["c0"] = r(B, H, scale=0.5)
    if packed:
        lengths = torch.randint(0, T + 1, (B,), generator=g)
        lengths[0] = T
        if B > 2:
            lengths[1] = 0
        layer["lengths"] = lengths
    return layer


CASES = [
    # (cell, dtype, T, B, I, H, packed, device overrides)
    ("lstm", torch.bfloat16, 4, 5, 24, 40, True, {}),
    ("gru", torch.bfloat16, 4, 3, 16, 72, False, {}),
    ("lstm", torch.float16, 3, 9, 40, 64, True, {"sm_count": 4}),  # U > 8: a wide block
    ("gru", torch.float16, 3, 17, 8, 40, True, {"sm_count": 3}),  # three n tiles
    ("lstm", torch.float32, 4, 2, 20, 36, True, {}),
    ("gru", torch.float32, 3, 6, 12, 100, False, {"sm_count": 5}),  # a ragged last block
]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell, dtype, T, B, I, H, packed, device", CASES,
                         ids=[f"{c[0]}-{str(c[1])[6:]}-B{c[3]}-H{c[5]}" for c in CASES])
def test_transliterated_kernel_matches_reference(cell, dtype, T, B, I, H, packed, device,
                                                 reverse):
    seed = int(torch.randint(0, 2**31, ()).item())
    fits, reason, geometry = persistent_plan(cell, B, H, dtype, {**H100, **device})
    assert fits, reason
    layer = make_layer(cell, T, B, I, H, dtype, packed, seed)
    x2d = layer["input"].reshape(T * B, I)
    # The host's hoisted input projection, b_ih folded in, stored in the kernel's dtype.
    proj = (x2d @ layer["w_ih"].t() + layer["b_ih"]).to(dtype).double().reshape(T, B, -1)
    arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in layer.items()}
    arrays["input_proj"] = proj.numpy()
    got = run_kernel(cell, dtype, geometry, arrays, reverse)

    lengths = layer["lengths"]
    if cell == "lstm":
        want = reference.lstm_layer(layer["input"], lengths, layer["h0"], layer["c0"],
                                    layer["w_ih"], layer["w_hh"], layer["b_ih"], layer["b_hh"],
                                    None, reverse)
    else:
        want = reference.gru_layer(layer["input"], lengths, layer["h0"], layer["w_ih"],
                                   layer["w_hh"], layer["b_ih"], layer["b_hh"], reverse)
    names = ["output", "h_n", "c_n", "reserve"] if cell == "lstm" else ["output", "h_n",
                                                                        "reserve"]
    tol = TOL[dtype]
    for name, a, b in zip(names, got, want, strict=True):
        assert not torch.isnan(a).any(), f"{name}: elements the kernel never writes"
        torch.testing.assert_close(a, b.double(), atol=tol, rtol=tol,
                                   msg=lambda m, n=name: f"{n} (seed {seed}, {geometry}): {m}")
    if packed:  # padded steps are exactly zero
        steps = torch.arange(T).unsqueeze(1)
        padded = steps >= lengths.unsqueeze(0)
        assert (got[0][padded] == 0).all() and (got[-1][padded] == 0).all()
