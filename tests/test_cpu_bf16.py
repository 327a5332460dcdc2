"""The bfloat16 layers on the CPU's bfloat16 kernels (csrc/cpu/bf16_kernels.h): the
user's bfloat16 input and weights in vdpbf16ps products, each step's state rounded
to bfloat16 for its product, everything else in float32.

Their specification is the float64 reference with the first operand of every
product rounded to bfloat16 (the input already is; the running state and the
projection's h_full are rounded there): the kernels differ from it by their float32
sums and cell math, and by a rounding of the state that lands the other way when the
float32 state is within an ulp of a bfloat16 midpoint. Where the CPU has no
AVX512-BF16, bfloat16 layers compute in float32 (test_cpu_kernels.py covers them)
and these tests skip.
"""

from __future__ import annotations

import random

import pytest
import torch

from helpers import bf16_product_operands
from rnnkit import _extension
from test_cpu_kernels import CELLS, Case, _fresh_seed

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

BF16 = torch.bfloat16
# Forward: float32 sums against float64 ones over a few steps, and a state rounded
# the other way now and then (half a bfloat16 ulp, 2^-9 relative, times a weight).
ATOL, RTOL = 4e-3, 1e-2


@pytest.fixture
def kernels(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", "avx512")
    if torch.ops.rnnkit._cpu_bf16_isa() != "avx512_bf16":
        pytest.skip("this CPU has no AVX512-BF16: bfloat16 layers compute in float32")


def _cpu_has_avx512_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags and " avx512bw" in flags and " avx512vl" in flags


def _double(args):
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


def _spec(case, fn=None, args=None):
    """The float64 reference (fn, by default the forward, on args, by default the
    forward's) with each product's first operand rounded to bfloat16."""
    with bf16_product_operands():
        return (fn or case.reference)(*_double(args if args is not None else case.args()))


def _case(cell, rng, **kw):
    T = kw.pop("T", rng.randint(1, 6))
    B = kw.pop("B", rng.choice([1, 2, 3, 7, 9, 13]))
    H = kw.pop("H", rng.choice([1, 5, 15, 16, 17, 31, 33, 63, 65, 70]))
    lengths = None
    if rng.random() < 0.5:
        lengths = torch.tensor([rng.randint(0, T) for _ in range(B)], dtype=torch.int64)
    P = rng.randint(1, H - 1) if cell == "lstm" and H > 1 and rng.random() < 0.5 else None
    args = dict(T=T, B=B, I=rng.randint(1, 9), H=H, P=P, bias=rng.random() < 0.7,
                reverse=rng.random() < 0.5, lengths=lengths, dtype=BF16,
                noncontiguous=rng.random() < 0.2)
    args.update(kw)
    return Case(cell, **args)


def _check(case, seed):
    what = case.describe(seed)
    with torch.no_grad():
        got = case.op(*case.args())
        want = _spec(case)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == BF16, what
        torch.testing.assert_close(g.double(), w, atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{what} forward output {k}: {m}")


def test_the_kernels_run_where_the_cpu_has_them(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", "avx512")
    want = "avx512_bf16" if _cpu_has_avx512_bf16() and torch.ops.rnnkit._cpu_isa() == "avx512" else ""
    assert torch.ops.rnnkit._cpu_bf16_isa() == want
    # Narrowed to AVX2 (or the portable path), bfloat16 layers compute in float32.
    for isa in ("avx2", "generic"):
        monkeypatch.setenv("RNNKIT_CPU_ISA", isa)
        assert torch.ops.rnnkit._cpu_bf16_isa() == ""


@pytest.mark.parametrize("cell", CELLS)
def test_matches_the_rounded_reference(kernels, cell, monkeypatch):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for _ in range(10):
        _check(_case(cell, rng), seed)


@pytest.mark.parametrize("cell", CELLS)
def test_edges(kernels, cell, monkeypatch):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    cases = [
        _case(cell, rng, B=1, H=130, T=4),  # several blocks, a tail
        _case(cell, rng, B=13, H=47, T=5, reverse=True,
              lengths=torch.tensor([5, 0, 3, 5, 1, 2, 4, 5, 0, 1, 5, 3, 2])),
        _case(cell, rng, B=4, H=9, T=3, I=0),  # no input features
        _case(cell, rng, B=3, H=20, T=3, lengths=torch.zeros(3, dtype=torch.int64)),
        # Odd input and hidden sizes (the pairs of K padded), several workers, and the
        # tall row blocks above 8 rows.
        _case(cell, rng, B=21, H=257, T=3, I=129),
        _case(cell, rng, B=9, H=64, T=3, I=64, noncontiguous=True),
    ]
    if cell == "lstm":
        cases.append(_case(cell, rng, B=5, H=200, P=77, T=4, I=15))
    for case in cases:
        _check(case, seed)


@pytest.mark.parametrize("cell", CELLS)
def test_large_calls_one_after_another(kernels, cell, monkeypatch):
    # Outputs and reserves of 1 MiB and more go through float32 buffers in memory the
    # thread keeps (kept_floats): a second call, with other lengths and more padding,
    # must see its own data. Several input chunks (T*B > 512), in reverse, lengths
    # longest first as a PackedSequence's and in no order.
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    T, B = 120, 24  # the RNN's output alone is 1.1 MB
    for lengths, reverse in ((None, False),
                             (sorted((rng.randint(0, T) for _ in range(B)), reverse=True), True),
                             ([rng.randint(0, T) for _ in range(B)], False)):
        case = _case(cell, rng, T=T, B=B, H=96, I=rng.choice([31, 64]), reverse=reverse,
                     lengths=None if lengths is None else torch.tensor(lengths))
        _check(case, seed)
        got = case.op(*case.args())  # with the reserve (and its kept float32 buffer)
        want = _spec(case)
        for k, (g, w) in enumerate(zip(got, want)):
            torch.testing.assert_close(g.double(), w, atol=ATOL, rtol=RTOL,
                                       msg=lambda m: f"{case.describe(seed)} output {k}: {m}")


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch(kernels, cell):
    case = Case(cell, T=3, B=0, I=4, H=5, dtype=BF16)
    with torch.no_grad():
        out = case.op(*case.args())
    assert out[0].shape == (3, 0, 5) and out[0].dtype == BF16


def test_weights_at_odd_offsets(kernels, monkeypatch):
    # A bfloat16 weight that starts 2 bytes into its storage: its pairs are not
    # 4-byte aligned, and the packer copies it first.
    seed = _fresh_seed()
    torch.manual_seed(seed)
    case = Case("lstm", T=3, B=4, I=6, H=24, dtype=BF16)
    for name in ("w_ih", "w_hh"):
        w = getattr(case, name)
        storage = torch.empty(w.numel() + 1, dtype=BF16)
        shifted = storage[1:].view_as(w)
        shifted.copy_(w)
        setattr(case, name, shifted)
    _check(case, seed)


@pytest.mark.parametrize("cell", CELLS)
def test_results_do_not_depend_on_thread_count(kernels, cell):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    case = _case(cell, rng, B=16, H=160, T=4, I=40)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                outs.append(case.op(*case.args()))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b), case.describe(seed)


@pytest.mark.parametrize("cell", CELLS)
def test_training_gradients(kernels, cell, monkeypatch):
    # The forward with its reserve, then the float32 backward on it: the gradients
    # of the rounded reference (its roundings passed straight through), to
    # bfloat16's precision (the gradients come back in bfloat16).
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    case = _case(cell, rng, B=6, H=40, T=5, I=12)
    got = case.op(*case.args())
    grads = case.output_grads(got)
    got_grads = case.backward_op(*case.backward_args(grads, got))
    want_grads = _spec(case, case.reference_backward, case.backward_args(grads, got))
    for k, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert g.dtype == BF16
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        torch.testing.assert_close(g.double(), w, atol=3e-2 * scale, rtol=3e-2,
                                   msg=lambda m: f"{case.describe(seed)} gradient {k}: {m}")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_as_close_to_float32_as_torch_nn(kernels, kind):
    # rnnkit's bfloat16 module against the float32 module on the same bfloat16
    # weights, no further from it than torch.nn's bfloat16 module (with some slack).
    seed = _fresh_seed()
    torch.manual_seed(seed)
    import rnnkit

    ref = getattr(torch.nn, kind)(24, 48, num_layers=2, bidirectional=True).to(BF16)
    ours = getattr(rnnkit, kind)(24, 48, num_layers=2, bidirectional=True).to(BF16)
    ours.load_state_dict(ref.state_dict())
    exact = getattr(torch.nn, kind)(24, 48, num_layers=2, bidirectional=True)
    exact.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(30, 5, 24).to(BF16)
    with torch.no_grad():
        want = exact(x.float())[0]
        ours_err = (ours(x)[0].float() - want).abs().max().item()
        torch_err = (ref(x)[0].float() - want).abs().max().item()
    assert ours_err <= 2 * torch_err + 2e-3, f"seed={seed}: {ours_err} vs torch.nn's {torch_err}"


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("B, H", [(64, 128), (2, 512), (64, 256)])
def test_cells_with_large_products_as_close_as_torch_nn(kernels, kind, B, H):
    # Products of 2M multiply-adds and weights of 512K elements run as bfloat16 GEMMs on
    # the weights as they are (cell_cpu.cpp), rounded to bfloat16 as torch.nn's cells',
    # forward and backward.
    seed = _fresh_seed()
    torch.manual_seed(seed)
    import rnnkit

    ref = getattr(torch.nn, kind)(H, H).to(BF16)
    ours = getattr(rnnkit, kind)(H, H).to(BF16)
    ours.load_state_dict(ref.state_dict())
    exact = getattr(torch.nn, kind)(H, H)
    exact.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(B, H).to(BF16)
    h = torch.randn(B, H).to(BF16)
    state = (h, torch.randn(B, H).to(BF16)) if kind == "LSTMCell" else h
    exact_state = tuple(s.float() for s in state) if kind == "LSTMCell" else h.float()
    with torch.no_grad():
        first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
        want = first(exact(x.float(), exact_state))
        got = first(ours(x, state))
        assert got.dtype == BF16
        ours_err = (got.float() - want).abs().max().item()
        torch_err = (first(ref(x, state)).float() - want).abs().max().item()
    assert ours_err <= 2 * torch_err + 2e-3, f"seed={seed}: {ours_err} vs torch.nn's {torch_err}"
    # The backward's products too: the gradients of the weights and the input.
    g = torch.randn(B, H)
    grads = {}
    for name, module, inp, st in (("exact", exact, x.float(), exact_state), ("ours", ours, x, state),
                                  ("torch", ref, x, state)):
        xi = inp.clone().requires_grad_()
        (first(module(xi, st)).float() * g).sum().backward()
        grads[name] = [xi.grad.float(), module.weight_ih.grad.float(), module.weight_hh.grad.float()]
    for k, what in enumerate(("input", "weight_ih", "weight_hh")):
        ours_err = (grads["ours"][k] - grads["exact"][k]).abs().max().item()
        torch_err = (grads["torch"][k] - grads["exact"][k]).abs().max().item()
        scale = grads["exact"][k].abs().max().item()
        assert ours_err <= 2 * torch_err + 1e-2 * scale, (
            f"seed={seed} {what}: {ours_err} vs torch.nn's {torch_err}")
