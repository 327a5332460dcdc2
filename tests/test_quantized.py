"""rnnkit.quantize and the int8 modules: the compiled op against its reference, the
modules against float32 on the dequantized weights (tight) and on the original
weights (a derived bound), torch's dynamic quantized modules, serialization,
torch.compile / torch.export, and bad input."""

from __future__ import annotations

import copy
import gc
import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import quantized
from rnnkit.quantized_modules import QuantizedLSTM

pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensors.*deprecated")

# The instruction sets to run the compiled op at: the widest one, AVX-512 (its
# 8-bit kernels, in AMX tiles where the CPU has them, else as auto), AVX-512 with
# VNNI but not AMX, AVX2 with AVX-VNNI (8-bit levels where the CPU has it, else as
# avx2), AVX2 (int16 levels) and "generic", where the modules fall back on the
# reference.
ISAS = ["auto", "avx512", "avx512_vnni", "avx2_vnni", "avx2", "generic"]


def _kernels() -> bool:
    return bool(quantized.kernels(1))


def _depth(K: int = 64) -> int:
    """The depth of the kernels the modules run now (RNNKIT_CPU_ISA as set)."""
    return quantized.depth_of(quantized.kernels(K))


def tight(K: int = 64) -> float:
    """The tolerance of a module against float32 on its dequantized weights: with int16
    levels (max|x| / 2Q per operand element, Q >= 16383 here) a few 1e-5 of a
    pre-activation; with 8-bit levels (Q = 127) the operand's rounding is at most
    max|x| * sum_k |w_jk| / 254 per pre-activation, up to ~0.05 for the inputs and
    weights of these tests (|x| <= 4, K <= 26 weights below 1/sqrt(13)); the K
    roundings are independent and of either sign, so their sum stays near sqrt(K)
    of one, below 0.02."""
    return 2e-4 if _depth(K) == 2 else 0.02


def dequantized(module: nn.Module) -> nn.Module:
    """A copy of a float module with each weight replaced by its int8 rounding."""
    f = copy.deepcopy(module)
    with torch.no_grad():
        for name, p in f.named_parameters():
            if name.startswith("weight"):
                p.copy_(quantized.dequantize(*quantized.quantize_weight(p)))
    return f


def flat(result) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, nn.utils.rnn.PackedSequence):
        return [result.data]
    return [t for r in result for t in flat(r)]


def assert_all_close(a, b, atol, rtol=0.0):
    for x, y in zip(flat(a), flat(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


# ---------------------------------------------------------------- the op


def _op_args(mode, T, B, I, H, P, bias, lengths, reverse):
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    w_ih, s_ih = quantized.quantize_weight(torch.randn(G * H, I) / I**0.5)
    w_hh, s_hh = quantized.quantize_weight(torch.randn(G * H, P) / P**0.5)
    b_ih, b_hh = (torch.randn(G * H), torch.randn(G * H)) if bias else (None, None)
    w_hr, s_hr = quantized.quantize_weight(torch.randn(P, H) / H**0.5) if P != H else (None, None)
    c0 = torch.randn(B, H) if mode == "LSTM" else None
    return (mode, torch.randn(T, B, I), lengths, torch.randn(B, P), c0, w_ih, s_ih, w_hh, s_hh,
            b_ih, b_hh, w_hr, s_hr, reverse)


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
@pytest.mark.parametrize("mode", quantized.MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("isa", ["auto", "avx512", "avx512_vnni", "avx2_vnni", "avx2"])
def test_op_matches_reference(mode, reverse, packed, isa, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", isa)
    T, B = 9, 7
    I, H = int(torch.randint(1, 70, ()).item()), int(torch.randint(1, 70, ()).item())
    P = int(torch.randint(1, H + 1, ()).item()) if mode == "LSTM" and H > 1 else H
    lengths = torch.randint(0, T + 1, (B,)) if packed else None
    args = _op_args(mode, T, B, I, H, P, bias=bool(torch.rand(()) < 0.7), lengths=lengths,
                    reverse=reverse)
    depth = _depth(max(I, P, H))
    got = torch.ops.rnnkit.quantized_layer(*args)
    want = quantized.reference_layer(*args, depth=depth)
    # The integers agree exactly; the float math around them differs in the last bits
    # (the cells' exp and tanh; the compiler may fuse the scaling of a sum with the add
    # that follows), which may move a rounding of the next step's state by one level (a
    # change of max|h| / Q times a weight: Q = 32767 or more for int16 levels, 127 for
    # 8-bit ones, where a level of |h| <= 3 times a weight below 1/sqrt(P) moves a
    # pre-activation by up to ~0.02), and a relu RNN's unbounded state carries such a
    # change on.
    atol = 1e-3 if depth == 2 else 2e-2
    assert_all_close(got, want, atol=atol, rtol=1e-3)


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
@pytest.mark.parametrize("mode", quantized.MODES)
@pytest.mark.parametrize("isa", ["auto", "avx512_vnni", "avx2_vnni", "avx2"])
def test_op_matches_reference_at_every_row_block(mode, isa, monkeypatch):
    # The kernels cut the batch into row blocks of up to 4-16 rows, each taken in one
    # pass over all of a panel's vectors or in several passes, by its size and the
    # registers the instruction set has (panel_product and wide_rows in
    # fast_kernels_impl.h): batches 1 to 17 meet every block size of every level.
    monkeypatch.setenv("RNNKIT_CPU_ISA", isa)
    for B in range(1, 18):
        I, H = int(torch.randint(1, 40, ()).item()), int(torch.randint(9, 40, ()).item())
        P = int(torch.randint(1, H + 1, ()).item()) if mode == "LSTM" else H
        args = _op_args(mode, 3, B, I, H, P, bias=True, lengths=None, reverse=False)
        depth = _depth(max(I, P, H))
        got = torch.ops.rnnkit.quantized_layer(*args)
        want = quantized.reference_layer(*args, depth=depth)
        # As in test_op_matches_reference.
        assert_all_close(got, want, atol=1e-3 if depth == 2 else 2e-2, rtol=1e-3)


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
@pytest.mark.parametrize("isa", ["auto", "avx512_vnni", "avx2_vnni", "avx2"])
def test_results_do_not_depend_on_thread_count(isa, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", isa)
    # Big enough for two workers; B = 9 takes AMX's tiles where the CPU has them.
    args = _op_args("LSTM", 5, 9, 40, 300, 300, True, torch.tensor([5, 2, 5, 0, 3, 5, 1, 5, 4]),
                    False)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(torch.ops.rnnkit.quantized_layer(*args))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
def test_opcheck():
    for mode in quantized.MODES:
        args = _op_args(mode, 4, 3, 5, 6, 6, bias=True, lengths=torch.tensor([4, 1, 3]),
                        reverse=False)
        torch.library.opcheck(torch.ops.rnnkit.quantized_layer.default, args)


def test_quantize_rows_levels_and_special_rows():
    x = torch.randn(5, 300)
    x[1] = 0
    x[2, 7] = float("nan")
    x[3, 0] = float("inf")
    q, scale = quantized.quantize_rows(x)
    Q = quantized.levels(300)
    assert Q == 32767 and quantized.levels(1024) == 16383
    assert q.abs().max() <= Q
    assert scale[1] == 0 and torch.isnan(scale[2]) and torch.isnan(scale[3])
    # Half a level, and the float rounding of x * (Q / top): a few thousandths of one.
    torch.testing.assert_close(q[0] * scale[0], x[0], atol=float(scale[0]) * 0.51, rtol=0)
    # The sums of K products of levels with weights up to 128 stay within int32.
    for K in (1, 513, 1024, 4097, 100_000):
        assert quantized.levels(K) * 128 * K < 2**31
    # 8-bit levels: Q = 127, and the 8-bit kernels' sums of (level + 128) up to 255
    # stay within int32 up to VNNI_MAX_K.
    q8, scale8 = quantized.quantize_rows(x, depth=4)
    assert quantized.levels(300, 4) == 127 and q8.abs().max() <= 127
    assert scale8[1] == 0 and torch.isnan(scale8[2])
    torch.testing.assert_close(q8[0] * scale8[0], x[0], atol=float(scale8[0]) * 0.51, rtol=0)
    assert quantized.VNNI_MAX_K * 255 * 128 < 2**31 <= (quantized.VNNI_MAX_K + 1) * 255 * 128


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
def test_long_products_leave_the_8bit_kernels():
    """Past VNNI_MAX_K the 8-bit sums could overflow: the int16 kernels take over."""
    assert quantized.kernels(quantized.VNNI_MAX_K + 1) == "avx2"
    assert quantized.depth_of(quantized.kernels(quantized.VNNI_MAX_K + 1)) == 2


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
def test_nan_input_gives_nan_rows():
    args = list(_op_args("LSTM", 3, 4, 8, 8, 8, True, None, False))
    args[1][1, 2, 3] = float("nan")
    out, h, c = torch.ops.rnnkit.quantized_layer(*args)
    assert torch.isnan(out[1:, 2]).all() and not torch.isnan(out[:, [0, 1, 3]]).any()
    assert not torch.isnan(out[0]).any()


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
def test_packed_weights_are_kept_and_follow_changes():
    packed = torch.ops.rnnkit._quantized_packed
    torch.ops.rnnkit._quantized_clear_packed()
    m = rnnkit.quantize(nn.LSTM(12, 16).eval())
    other = rnnkit.quantize(nn.LSTM(12, 16).eval())
    x = torch.randn(5, 3, 12)
    with torch.no_grad():
        first = m(x)[0]
        assert packed()[0] == 2 and packed()[1] > 0  # W_ih and W_hh
        assert torch.equal(m(x)[0], first) and packed()[0] == 2  # used again
        # In-place changes bump the versions and repack: load_state_dict's copies, a
        # change of the scales alone.
        m.load_state_dict(other.state_dict())
        assert torch.equal(m(x)[0], other(x)[0])
        m.weight_hh_l0_scale.mul_(2)
        twice = copy.deepcopy(other)
        twice.weight_hh_l0_scale.mul_(2)
        assert torch.equal(m(x)[0], twice(x)[0])
        # The packings of freed weights go when the next ones are kept.
        before = packed()[0]
        del m, other, twice
        gc.collect()
        rnnkit.quantize(nn.LSTM(12, 16).eval())(x)
        assert packed()[0] == 2 < before


@pytest.mark.skipif(not _kernels(), reason="no compiled int8 kernels on this CPU")
def test_inference_mode_weights_run_unkept():
    torch.ops.rnnkit._quantized_clear_packed()
    x = torch.randn(4, 2, 6)
    with torch.inference_mode():
        m = rnnkit.quantize(nn.GRU(6, 8).eval())  # inference tensors: no version counter
        got = m(x)[0]
        assert torch.ops.rnnkit._quantized_packed()[0] == 0
    want = quantized.reference_layer("GRU", x, None, torch.zeros(2, 8), None, m.weight_ih_l0,
                                     m.weight_ih_l0_scale, m.weight_hh_l0, m.weight_hh_l0_scale,
                                     m.bias_ih_l0, m.bias_hh_l0, None, None, False,
                                     depth=_depth(8))[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the modules

CONFIGS = [
    (nn.LSTM, dict()),
    (nn.LSTM, dict(num_layers=2, bidirectional=True)),
    (nn.LSTM, dict(proj_size=5, batch_first=True)),
    (nn.LSTM, dict(num_layers=2, proj_size=3, bidirectional=True, bias=False)),
    (nn.GRU, dict(num_layers=2, batch_first=True)),
    (nn.GRU, dict(bidirectional=True, bias=False)),
    (nn.RNN, dict(nonlinearity="relu", num_layers=2)),
    (nn.RNN, dict(bidirectional=True)),
]


def _config_id(c):
    return c[0].__name__ + "-" + "-".join(f"{k}={v}" for k, v in c[1].items())


def _hx(module, batch, unbatched=False):
    D = 2 if module.bidirectional else 1
    shape = (module.num_layers * D,) + (() if unbatched else (batch,))
    h = torch.randn(*shape, module.proj_size or module.hidden_size)
    if isinstance(module, nn.LSTM):
        return (h, torch.randn(*shape, module.hidden_size))
    return h


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_module_matches_float_on_dequantized_weights(config, isa, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", isa)
    cls, kwargs = config
    m = cls(11, 13, **kwargs).eval()
    q = rnnkit.quantize(copy.deepcopy(m))
    f = dequantized(m)
    T, B = 6, 4
    x = torch.randn(B, T, 11) if m.batch_first else torch.randn(T, B, 11)
    hx = _hx(m, B)
    with torch.no_grad():
        tol = tight()
        assert_all_close(q(x), f(x), atol=tol)
        assert_all_close(q(x, hx), f(x, hx), atol=tol)
        # Unbatched.
        assert_all_close(q(x[0] if m.batch_first else x[:, 0]),
                         f(x[0] if m.batch_first else x[:, 0]), atol=tol)
        # Packed, unsorted lengths, with hx.
        lengths = torch.randint(1, T + 1, (B,))
        packed = pack_padded_sequence(x, lengths, batch_first=m.batch_first,
                                      enforce_sorted=False)
        assert_all_close(q(packed, hx), f(packed, hx), atol=tol)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
@pytest.mark.parametrize("isa", ISAS)
def test_cells_match_float_on_dequantized_weights(cls, isa, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", isa)
    kwargs = dict(nonlinearity="relu") if cls is nn.RNNCell else {}
    m = cls(7, 9, **kwargs)
    q, f = rnnkit.quantize(copy.deepcopy(m)), dequantized(m)
    x = torch.randn(5, 7)
    hx = (torch.randn(5, 9), torch.randn(5, 9)) if cls is nn.LSTMCell else torch.randn(5, 9)
    with torch.no_grad():
        tol = tight()
        assert_all_close(q(x), f(x), atol=tol)
        assert_all_close(q(x, hx), f(x, hx), atol=tol)
        unbatched = tuple(h[0] for h in hx) if cls is nn.LSTMCell else hx[0]
        assert_all_close(q(x[0], unbatched), f(x[0], unbatched), atol=tol)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_one_step_within_the_weight_rounding_bound(cls):
    """One step from a zero state against the original float weights. Each weight moves
    by at most max_k |w_jk| / 254 (half a step of its row's scale), so pre-activation j
    moves by at most e_j = sum_k |x_k| * max_k |w_ih_jk| / 254 (h0 = 0 adds nothing),
    plus the input's own rounding, max|x| / 2Q per element: at most
    a_j = max|x| * sum_k |w'_jk| / 2Q on the rounded weights w'.
    The LSTM's h = o * tanh(i * g) moves by at most |do|/4 + |di|/4 + |dg| <= 1.5 max e;
    the GRU's h = (1 - z) n by at most |dz|/4 + |dn| <= 1.25 max e (its r multiplies
    b_hn only); tanh by at most e."""
    m = cls(64, 48).eval()
    q = rnnkit.quantize(copy.deepcopy(m))
    x = torch.randn(1, 16, 64)
    with torch.no_grad():
        got, want = q(x)[0], m(x)[0]
    row_max = m.weight_ih_l0.abs().amax(dim=1)  # [G*H]
    e = x[0].abs().sum(dim=1, keepdim=True) * row_max / 254  # [B, G*H]
    w_rounded = quantized.dequantize(*quantized.quantize_weight(m.weight_ih_l0))
    Q = quantized.levels(64, _depth(64))
    a = x[0].abs().amax(dim=1, keepdim=True) * w_rounded.abs().sum(dim=1) / (2 * Q)
    e = (e + a).amax(dim=1) * 1.01  # [B]
    gain = {nn.LSTM: 1.5, nn.GRU: 1.25, nn.RNN: 1.0}[cls]
    err = (got - want).abs()[0].amax(dim=1)
    assert (err <= gain * e + 1e-6).all(), (err, gain * e)


def test_sequence_error_against_float_is_small():
    m = nn.LSTM(32, 64, num_layers=2).eval()
    q = rnnkit.quantize(copy.deepcopy(m))
    x = torch.randn(50, 4, 32)
    with torch.no_grad():
        got, want = q(x)[0], m(x)[0]
    # Per-row int8 weights: about 0.3% of a pre-activation's scale per step, which the
    # contracting LSTM does not let grow.
    assert (got - want).abs().max() < 0.05
    assert (got - want).abs().mean() < 0.005


# ---------------------------------------------------------------- torch's modules


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_from_torch_dynamic_uses_its_int8_weights(cls):
    kwargs = dict(num_layers=2, bidirectional=True) if cls in (nn.LSTM, nn.GRU) else {}
    m = cls(10, 12, **kwargs).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # (quantize_dynamic swaps submodules: the model itself is not replaced.)
        tq = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(m)), {cls},
                                                    dtype=torch.qint8)[0]
    ours = rnnkit.quantize(copy.deepcopy(tq))
    # The same integers and scales as torch's.
    for name, w in tq.get_weight().items():
        assert torch.equal(getattr(ours, name), w.int_repr())
        torch.testing.assert_close(getattr(ours, name + "_scale"),
                                   torch.full((w.size(0),), w.q_scale(), dtype=torch.float32))
    # Against the float module on torch's dequantized weights: tight.
    f = copy.deepcopy(m)
    with torch.no_grad():
        for name, w in tq.get_weight().items():
            getattr(f, name).copy_(w.dequantize())
    x = torch.randn(8, 3, 10) if kwargs else torch.randn(3, 10)
    with torch.no_grad():
        assert_all_close(ours(x), f(x), atol=tight())
        # Against torch's own dynamic module, which also rounds its activations to 8 bits.
        assert_all_close(ours(x), tq(x), atol=0.05)


# ---------------------------------------------------------------- serialization, compile


def test_state_dict_round_trip_and_save_load():
    m = nn.LSTM(9, 10, num_layers=2, bidirectional=True, proj_size=4)
    q = rnnkit.quantize(copy.deepcopy(m))
    sd = q.state_dict()
    assert sd["weight_ih_l0"].dtype == torch.int8
    assert sd["weight_hr_l1_reverse_scale"].dtype == torch.float32
    fresh = QuantizedLSTM(9, 10, num_layers=2, bidirectional=True, proj_size=4)
    fresh.load_state_dict(sd)
    x = torch.randn(5, 2, 9)
    with torch.no_grad():
        assert_all_close(fresh(x), q(x), atol=0)
    buffer = io.BytesIO()
    torch.save(q, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert_all_close(loaded(x), q(x), atol=0)


@pytest.mark.parametrize("cls", [nn.GRU, nn.RNN, nn.LSTM])
def test_torch_compile(cls):
    q = rnnkit.quantize(cls(6, 8, num_layers=2)).eval()
    x = torch.randn(5, 3, 6)
    compiled = torch.compile(q, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert_all_close(compiled(x), q(x), atol=1e-6)


def test_torch_export():
    q = rnnkit.quantize(nn.LSTM(6, 8)).eval()
    x = torch.randn(5, 3, 6)
    with torch.no_grad():
        ep = torch.export.export(q, (x,))
        assert_all_close(ep.module()(x), q(x), atol=1e-6)
    assert any("quantized_layer" in str(n.target) for n in ep.graph.nodes)


# ---------------------------------------------------------------- bad input


def test_training_raises():
    q = rnnkit.quantize(nn.GRU(4, 5))
    with pytest.raises(RuntimeError, match="is for inference"):
        q(torch.randn(3, 2, 4, requires_grad=True))
    assert list(q.parameters()) == []


def test_wrong_dtype_and_size_raise():
    q = rnnkit.quantize(nn.LSTM(4, 5))
    with pytest.raises(ValueError, match="torch.float32"):
        q(torch.randn(3, 2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input_size"):
        q(torch.randn(3, 2, 7))


def test_refused_modules_stay_with_a_warning():
    class MyLSTM(nn.LSTM):
        pass

    bad = nn.GRU(3, 4)
    with torch.no_grad():
        bad.weight_hh_l0[0, 0] = float("nan")
    model = nn.ModuleList([MyLSTM(3, 4), bad, nn.RNNCell(3, 4)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rnnkit.quantize(model)
    messages = [str(r.message) for r in record]
    assert any("left 0 (MyLSTM) unquantized:" in m and "is a subclass" in m for m in messages)
    assert any("left 1 (GRU) unquantized: its weights ['weight_hh_l0'] hold NaN" in m
               for m in messages)
    assert type(model[0]) is MyLSTM and type(model[1]) is nn.GRU
    assert type(model[2]).__name__ == "QuantizedRNNCell"


def test_non_cpu_module_is_an_error():
    with pytest.raises(RuntimeError, match="run on the CPU"):
        rnnkit.quantize(nn.LSTM(3, 4, device="meta"))
