"""The fast path of the CPU layer ops (csrc/cpu/fast_path.h), float32 and float64,
at every instruction-set level that this CPU has, forced through RNNKIT_CPU_ISA.

Each level is compared with the plain-PyTorch reference run in float64 on the
same inputs (float32 to ~1e-5, float64 to 1e-9), over sizes that exercise the tails
of the vector blocks and of the register tiles (H not a multiple of 8 or 16, odd
batches, B = 1), lengths, reverse and the LSTM projection (whose backward keeps the
portable path). The results must also be bit for bit the same whatever the number
of threads (on the vector levels).
"""

from __future__ import annotations

import functools
import os
import random

import pytest
import torch

from rnnkit import _extension, reference
from test_cpu_kernels import CELLS, Case, _fresh_seed, _op_name

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

LEVELS = ["avx512", "avx2", "generic"]
DTYPES = [torch.float32, torch.float64]
# (forward atol, rtol; gradient atol per unit of the gradient's size, rtol)
TOLERANCES = {torch.float32: (2e-5, 1e-4, 5e-5, 1e-4),
              torch.float64: (1e-10, 1e-9, 1e-10, 1e-9)}


def _isa_now() -> str:
    return torch.ops.rnnkit._cpu_isa()


@pytest.fixture(params=LEVELS)
def level(request, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", request.param)
    if _isa_now() != request.param:
        pytest.skip(f"this CPU has no {request.param} (falls back to {_isa_now()})")
    return request.param


def _double(args):
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


def _check(case, seed):
    """The op and its backward op against the float64 reference on the same inputs."""
    what = case.describe(seed)
    dtype = case.input.dtype
    atol, rtol, grad_atol, grad_rtol = TOLERANCES[dtype]
    with torch.no_grad():
        got = case.op(*case.args())
        want = case.reference(*_double(case.args()))
        for k, (g, w) in enumerate(zip(got, want)):
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), w, atol=atol, rtol=rtol,
                                       msg=lambda m: f"{what} forward output {k}: {m}")
        grads = case.output_grads(got)
        got_grads = case.backward_op(*case.backward_args(grads, got))
        want_grads = case.reference_backward(*_double(case.backward_args(grads, want)))
        for k, (g, w) in enumerate(zip(got_grads, want_grads)):
            scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
            torch.testing.assert_close(g.double(), w, atol=grad_atol * scale, rtol=grad_rtol,
                                       msg=lambda m: f"{what} gradient {k}: {m}")


def _case(cell, rng, **kw):
    T = kw.pop("T", rng.randint(1, 6))
    B = kw.pop("B", rng.choice([1, 2, 3, 7, 9, 13]))
    H = kw.pop("H", rng.choice([1, 5, 8, 15, 16, 17, 31, 33, 63, 65, 70]))
    lengths = None
    if rng.random() < 0.5:
        lengths = torch.tensor([rng.randint(0, T) for _ in range(B)], dtype=torch.int64)
    # The LSTM with a projection (proj_size P < H) half of the time.
    P = rng.randint(1, H - 1) if cell == "lstm" and H > 1 and rng.random() < 0.5 else None
    args = dict(T=T, B=B, I=rng.randint(1, 9), H=H, P=P, bias=rng.random() < 0.7,
                reverse=rng.random() < 0.5, lengths=lengths, dtype=torch.float32,
                noncontiguous=rng.random() < 0.2)
    args.update(kw)
    return Case(cell, **args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_level_matches_reference(level, cell, dtype):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for _ in range(10):
        _check(_case(cell, rng, dtype=dtype), seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_level_edges(level, cell, dtype):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    case_of = functools.partial(_case, dtype=dtype)
    cases = [
        case_of(cell, rng, B=1, H=130, T=4),  # B = 1, several blocks, a tail
        case_of(cell, rng, B=13, H=47, T=5, reverse=True,
                lengths=torch.tensor([5, 0, 3, 5, 1, 2, 4, 5, 0, 1, 5, 3, 2])),
        case_of(cell, rng, B=0, H=9, T=3),
        case_of(cell, rng, B=4, H=0, T=3),  # torch.nn's cells allow hidden_size=0
        case_of(cell, rng, B=4, H=9, T=3, I=0),  # no input features: only the recurrence
        case_of(cell, rng, B=3, H=20, T=3, lengths=torch.zeros(3, dtype=torch.int64)),
        # The input projection runs in chunks of ceil(512 / B) steps: several
        # chunks (the last one short), both directions, with lengths.
        case_of(cell, rng, B=40, H=21, T=30, I=37, reverse=False),
        case_of(cell, rng, B=40, H=21, T=30, I=37, reverse=True,
                lengths=torch.randint(0, 31, (40,))),
    ]
    if cell == "lstm":  # projections: a P of one vector and a tail, several blocks, P = 1
        cases += [case_of(cell, rng, B=5, H=19, P=7, T=4, reverse=True),
                  case_of(cell, rng, B=9, H=150, P=70, T=6,
                          lengths=torch.tensor([6, 2, 6, 0, 3, 6, 1, 6, 5])),
                  case_of(cell, rng, B=3, H=33, P=1, T=3)]
    for case in cases:
        _check(case, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_longest_first(level, cell, dtype):
    # A PackedSequence's order: each step multiplies only the rows up to its last real
    # sequence, the input projection of a chunk only its real rows, and the backward
    # only the rows real at the step before (fast_kernels.h, live_rows). Rows of one
    # length, lengths of 0, ties across the row blocks' edges, both directions.
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for B, T in ((13, 7), (40, 30), (9, 3)):
        lengths = sorted((rng.randint(0, T) for _ in range(B)), reverse=True)
        lengths[0] = T
        P = rng.randint(1, 20) if cell == "lstm" and rng.random() < 0.5 else None
        for reverse in (False, True):
            _check(_case(cell, rng, B=B, T=T, H=rng.choice([21, 33, 70]), P=P,
                         I=rng.randint(1, 40), reverse=reverse, dtype=dtype,
                         lengths=torch.tensor(lengths)), seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_row_blocks_over_several_panels(level, cell, dtype):
    # Batches of two and more row blocks with several panels of units: each row block
    # prefetches its share of the next panel (PanelProduct, backward_block), and
    # batches up to 8 take the LSTM's one-pass row tiles (lstm_rows).
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for B in (4, 5, 7, 8, 9, 12, 17):
        _check(_case(cell, rng, dtype=dtype, B=B, H=rng.choice([40, 70, 97]), T=3), seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_narrow_weight_gradients(level, cell, dtype):
    # Weight gradients with fewer than 12 columns over enough rows that they are
    # computed with the narrow operand first (csrc/transposed_product.h): dW_ih of a
    # small input, and dW_hh of a small hidden size, with and without lengths.
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    cases = [_case(cell, rng, dtype=dtype, T=16, B=64, H=70, I=rng.randint(2, 11), P=None),
             _case(cell, rng, dtype=dtype, T=110, B=64, H=rng.randint(8, 11), I=5, P=None,
                   lengths=None),
             _case(cell, rng, dtype=dtype, T=110, B=64, H=10, I=3, P=None, reverse=True,
                   lengths=torch.randint(0, 111, (64,)))]
    if cell == "lstm":  # a small projection over as many rows (its dW_hr takes the direct form)
        cases.append(_case(cell, rng, dtype=dtype, T=110, B=64, H=40, P=5, I=4))
    for case in cases:
        _check(case, seed)


@pytest.mark.parametrize("cell", CELLS)
def test_kept_pack_memory_is_reused_across_sizes(level, cell):
    # Packs of 1 MiB and more go into memory the thread keeps between calls (kept_memory in
    # fast_path.cpp): calls that grow it, reuse part of it, and alternate forward and
    # backward packs and the input chunk must each see their own, freshly written data.
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for H, I, B in ((540, 530, 3), (700, 520, 2), (520, 720, 5), (540, 530, 3)):
        _check(_case(cell, rng, H=H, I=I, B=B, T=3, dtype=torch.float32), seed)


@pytest.mark.parametrize("cell", CELLS)
def test_half_precision_runs_in_float(level, cell):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    case = _case(cell, rng, B=3, H=21, T=4, dtype=torch.bfloat16)
    with torch.no_grad():
        got = case.op(*case.args())
        want = case.reference(*_double(case.args()))
    for g, w in zip(got, want):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.double(), w, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_results_do_not_depend_on_thread_count(level, cell, dtype):
    if level == "generic":
        pytest.skip("the portable path's ATen GEMMs may split their sums by thread")
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    # Big enough for the step loop to use two workers (fast_path.h's rule).
    case = _case(cell, rng, B=9, H=150, T=4, lengths=torch.tensor([4, 2, 4, 0, 3, 4, 1, 4, 4]),
                 dtype=dtype, P=None)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                out = case.op(*case.args())
                grads = case.backward_op(*case.backward_args(
                    tuple(torch.ones_like(o) for o in out[:3 if cell == "lstm" else 2]), out))
            results.append(list(out) + list(grads))
    finally:
        torch.set_num_threads(before)
    grad_input = len(out)  # the first gradient
    for i, (a, b) in enumerate(zip(*results)):
        if i == grad_input:
            # One ATen GEMM per block of rows (gates' gradients times W_ih), whose
            # library (MKL on an Intel CPU) may split the sums of a thin product by
            # thread: equal up to the rounding of sums of 4H terms in another order.
            bound = 4 * 150 * torch.finfo(a.dtype).eps * float(a.abs().max())
            torch.testing.assert_close(a, b, atol=bound, rtol=0, msg=case.describe(seed))
        else:
            assert torch.equal(a, b), case.describe(seed)
    if cell == "lstm":  # the forward with a projection (its backward is the portable loop)
        case = _case(cell, rng, B=9, H=150, P=70, T=4, dtype=dtype,
                     lengths=torch.tensor([4, 2, 4, 0, 3, 4, 1, 4, 4]))
        outputs = []
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                with torch.no_grad():
                    outputs.append(case.op(*case.args()))
        finally:
            torch.set_num_threads(before)
        for a, b in zip(*outputs):
            assert torch.equal(a, b), case.describe(seed)


def test_bad_isa_value_raises(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", "sse9")
    case = Case("gru", T=2, B=1, I=2, H=3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="RNNKIT_CPU_ISA"):
        case.op(*case.args())


def test_default_is_the_widest_level(monkeypatch):
    monkeypatch.delenv("RNNKIT_CPU_ISA", raising=False)
    default = _isa_now()
    widest = "generic"
    for name in reversed(LEVELS):
        monkeypatch.setenv("RNNKIT_CPU_ISA", name)
        if _isa_now() == name:
            widest = name
    assert default == widest


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_strided_output_gradients(level, cell, dtype):
    """Expanded (stride 0), permuted and strided-along-H gradients of the output,
    which the fast path reads in place or copies."""
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    case = _case(cell, rng, B=5, H=19, T=4, dtype=dtype, P=None)
    T, B, H = 4, 5, 19
    with torch.no_grad():
        out = case.op(*case.args())
    rest = [torch.randn_like(o) for o in out[1:3 if cell == "lstm" else 2]]
    grads = [
        torch.ones((), dtype=dtype).expand(T, B, H),
        torch.randn(B, T, H, dtype=dtype).transpose(0, 1),
        torch.randn(T, B, 2 * H, dtype=dtype)[:, :, ::2],
        torch.randn(T, 1, H, dtype=dtype).expand(T, B, H),
    ]
    for g in grads:
        with torch.no_grad():
            got = case.backward_op(*case.backward_args((g, *rest), out))
            want = case.backward_op(*case.backward_args((g.contiguous(), *rest), out))
        for a, b in zip(got, want):
            assert torch.equal(a, b), f"{case.describe(seed)} grad strides {g.stride()}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_nan_propagates_like_the_reference(level, cell, dtype):
    """A NaN in the input makes the same outputs NaN as in the reference (the vector
    exp, sigmoid, tanh and relu must not clamp it into a finite number)."""
    seed = _fresh_seed()
    torch.manual_seed(seed)
    case = Case(cell, T=4, B=3, I=5, H=19, dtype=dtype)
    case.input[1, 1, 2] = float("nan")
    with torch.no_grad():
        got = case.op(*case.args())
        want = case.reference(*case.args())
    assert want[0].isnan().any()  # the NaN reaches the output: the test can fail
    for k, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g.isnan(), w.isnan()), f"{case.describe(seed)} output {k}"


def test_fma_peak_probe(level):
    """The benchmarks' peak: positive on a vector level, 0 on the portable one."""
    peak = torch.ops.rnnkit._cpu_fma_peak(0.01)
    if level == "generic":
        assert peak == 0.0
    else:
        assert 0.0 < peak < 1e6
    with pytest.raises(RuntimeError, match="seconds must be in"):
        torch.ops.rnnkit._cpu_fma_peak(-1.0)
