"""The one-step cell ops (rnnkit::rnn_cell, gru_cell, lstm_cell) that RNNCell, GRUCell and
LSTMCell run: against the reference in float64, opcheck (schemas, fake kernels, the C++
autograd under torch.compile's tracing), double backward, the output mask of the backward
(frozen weights, inputs without gradient) and every instruction-set level of this CPU."""

import pytest
import torch

from rnnkit import _extension, reference

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _args(cell, B=3, I=5, H=6, bias=True, dtype=torch.float64, requires_grad=False):
    G = GATES[cell]
    x = torch.randn(B, I, dtype=dtype)
    states = [torch.randn(B, H, dtype=dtype) for _ in range(2 if cell == "lstm" else 1)]
    weights = [torch.randn(G * H, I, dtype=dtype) * 0.4, torch.randn(G * H, H, dtype=dtype) * 0.4]
    biases = [torch.randn(G * H, dtype=dtype), torch.randn(G * H, dtype=dtype)] if bias \
        else [None, None]
    tensors = [x, *states, *weights, *biases]
    if requires_grad:
        for t in tensors:
            if t is not None:
                t.requires_grad_()
    return tensors


def _call(cell, tensors, relu=False, fn=None):
    fn = fn or getattr(torch.ops.rnnkit, f"{cell}_cell")
    return fn(*tensors, relu) if cell == "rnn" else fn(*tensors)


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


CASES = [("rnn", False), ("rnn", True), ("gru", False), ("lstm", False)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell, relu", CASES)
def test_cell_op_matches_the_reference_with_gradients(cell, relu, bias):
    tensors = _args(cell, bias=bias, requires_grad=True)
    got = _outputs(_call(cell, tensors, relu))
    want = _outputs(_call(cell, tensors, relu, fn=getattr(reference, f"{cell}_cell")))
    grads = [torch.randn_like(o) for o in want]
    leaves = [t for t in tensors if t is not None]
    got_grads = torch.autograd.grad(got, leaves, grads)
    want_grads = torch.autograd.grad(want, leaves, grads)
    for a, b in zip(got + list(got_grads), want + list(want_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cell, relu", CASES)
def test_cell_op_opcheck(cell, relu):
    tensors = _args(cell, dtype=torch.float32, requires_grad=True)
    op = getattr(torch.ops.rnnkit, f"{cell}_cell").default
    args = (*tensors, relu) if cell == "rnn" else tuple(tensors)
    torch.library.opcheck(op, args)
    with torch.no_grad():
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell, relu", CASES)
def test_backward_op_opcheck_for_every_mask(cell, relu, bias):
    # Gradients not asked for come back empty, each its own tensor (outputs never alias).
    x, *states, w_ih, w_hh, b_ih, b_hh = _args(cell, bias=bias)
    r = torch.ops.rnnkit
    if cell == "rnn":
        h = r.rnn_cell(x, *states, w_ih, w_hh, b_ih, b_hh, relu)
        saved, grads, fixed = (h,), (torch.randn_like(h),), (bias, relu)
    else:
        out = getattr(r, f"{cell}_cell_forward")(x, *states, w_ih, w_hh, b_ih, b_hh)
        saved, grads, fixed = (out[-1],), tuple(torch.randn_like(o) for o in out[:-1]), (bias,)
    op = getattr(r, f"{cell}_cell_backward").default
    for mask in ([True, True, True], [False, True, False], [True, False, False],
                 [False, False, True], [False, False, False]):
        args = (*grads, x, *states, w_ih, w_hh, *fixed, *saved, mask)
        outputs = op(*args)
        assert len({id(o) for o in outputs}) == len(outputs)
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("cell, relu", [("rnn", False), ("gru", False), ("lstm", False)])
def test_cell_op_gradcheck_and_gradgradcheck(cell, relu):
    tensors = _args(cell, B=2, I=3, H=3, requires_grad=True)
    n = len(tensors)

    def fn(*ts):
        return _call(cell, list(ts), relu)

    assert torch.autograd.gradcheck(fn, tuple(tensors[:n]))
    assert torch.autograd.gradgradcheck(fn, tuple(tensors[:n]))


@pytest.mark.parametrize("which", ["input_only", "weights_only", "state_only"])
@pytest.mark.parametrize("cell, relu", CASES)
def test_only_the_wanted_gradients(cell, relu, which):
    """The backward's output mask: gradients of a subset equal those of the full backward."""
    tensors = _args(cell)
    n_states = 2 if cell == "lstm" else 1
    wanted = {"input_only": [0], "state_only": list(range(1, 1 + n_states)),
              "weights_only": list(range(1 + n_states, len(tensors)))}[which]
    for i in wanted:
        tensors[i].requires_grad_()
    out = _outputs(_call(cell, tensors, relu))
    grads = [torch.randn_like(o) for o in out]
    got = torch.autograd.grad(out, [tensors[i] for i in wanted], grads)
    full = [t.detach().clone().requires_grad_() for t in tensors]
    want = torch.autograd.grad(_outputs(_call(cell, full, relu, fn=getattr(reference,
                                                                            f"{cell}_cell"))),
                               [full[i] for i in wanted], grads)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("level", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("cell, relu", CASES)
def test_float32_at_every_level(cell, relu, level, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPU_ISA", level)
    if torch.ops.rnnkit._cpu_isa() != level:
        pytest.skip(f"this CPU has no {level}")
    # H = 37: whole vectors and a tail at every width; B = 5 rows.
    tensors = _args(cell, B=5, I=7, H=37, dtype=torch.float32)
    tensors[0][1, 2] = float("nan")  # a NaN comes through as in the reference
    with torch.no_grad():
        got = _outputs(_call(cell, tensors, relu))
        want = _outputs(_call(cell, [None if t is None else t.double() for t in tensors], relu,
                              fn=getattr(reference, f"{cell}_cell")))
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.isnan(), b.isnan())
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=2e-6, equal_nan=True)


@pytest.mark.parametrize("level", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("cell, relu", CASES)
def test_float64_and_gradients_at_every_level(cell, relu, level, monkeypatch):
    # The double-precision passes and the LSTM backward pass of each instruction set:
    # exp and tanh to the last bits, over small, moderate and saturating pre-activations.
    monkeypatch.setenv("RNNKIT_CPU_ISA", level)
    if torch.ops.rnnkit._cpu_isa() != level:
        pytest.skip(f"this CPU has no {level}")
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        tensors = _args(cell, B=5, I=7, H=37, dtype=dtype)
        tensors[0] = tensors[0] * torch.logspace(-6, 1.5, 7, dtype=dtype)  # up to |x| ~ 100
        leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
        out = _outputs(_call(cell, leaves, relu))
        grads = [torch.randn_like(o) for o in out]
        got = torch.autograd.grad(out, [t for t in leaves if t is not None], grads)
        full = [None if t is None else t.detach().double().requires_grad_() for t in tensors]
        want_out = _outputs(_call(cell, full, relu, fn=getattr(reference, f"{cell}_cell")))
        want = torch.autograd.grad(want_out, [t for t in full if t is not None],
                                   [g.double() for g in grads])
        for a, b in zip((*out, *got), (*want_out, *want), strict=True):
            # A weight gradient sums B rows of products with |x| up to ~30: in float32 its
            # rounding error scales with its size, as in test_cpu_kernels.
            scale = max(1.0, b.abs().max().item()) if dtype == torch.float32 else 1.0
            torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("level", ["avx512", "avx2"])
@pytest.mark.parametrize("cell, relu", CASES)
def test_small_batch_products_at_every_level(cell, relu, level, monkeypatch):
    """At small batches the products are the kernels' rows product, not GEMM calls: every
    B from 1 to 5 (5 with short products: ATen's GEMM, but on AMD CPUs at AVX2), K with
    and without a vector tail,
    G*H not a multiple of the rows taken at a time, with and without biases, forward and
    backward;
    groups of 4 rows for long products; against the reference in float64; and
    weights big enough to be split over the threads give the same bits on 1 thread and
    on 2."""
    monkeypatch.setenv("RNNKIT_CPU_ISA", level)
    if torch.ops.rnnkit._cpu_isa() != level:
        pytest.skip(f"this CPU has no {level}")
    reference_fn = getattr(reference, f"{cell}_cell")
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        for B in range(1, 6):
            for I in (1, 16, 37):
                for bias in (True, False):
                    # With every gradient: the backward's products at B <= 4 are the
                    # rows kernels' too.
                    tensors = _args(cell, B=B, I=I, H=9, bias=bias, dtype=dtype,
                                    requires_grad=True)
                    got = _outputs(_call(cell, tensors, relu))
                    full = [None if t is None else t.detach().double().requires_grad_()
                            for t in tensors]
                    want = _outputs(_call(cell, full, relu, fn=reference_fn))
                    grads = [torch.randn_like(o) for o in got]
                    got += torch.autograd.grad(got, [t for t in tensors if t is not None],
                                               grads)
                    want += torch.autograd.grad(want, [t for t in full if t is not None],
                                                [g.double() for g in grads])
                    for a, b in zip(got, want, strict=True):
                        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)
        # Past 4 rows, in groups of 4, for products at least 256 long (up to 8 rows at
        # AVX2, 32 at AVX-512 and at AVX2 on AMD CPUs; 33 rows: ATen's), on AMD CPUs at
        # AVX2 for shorter ones too (up to 16 rows), and on a Zen 1 up to 64 rows for
        # float32 products at least 512 long (65: ATen's).
        for B, I, H in ((6, 260, 9), (8, 256, 3), (17, 257, 258), (32, 300, 5),
                        (33, 256, 256), (7, 37, 5), (13, 64, 11), (16, 9, 20),
                        (63, 512, 66), (64, 515, 7), (65, 600, 5)):
            tensors = _args(cell, B=B, I=I, H=H, dtype=dtype)
            with torch.no_grad():
                got = _outputs(_call(cell, tensors, relu))
                want = _outputs(_call(cell, [None if t is None else t.double() for t in tensors],
                                      relu, fn=reference_fn))
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * 10)
    tensors = _args(cell, B=3, I=300, H=130, dtype=torch.float32, requires_grad=True)
    leaves = [t for t in tensors if t is not None]
    grads = None

    def run():
        nonlocal grads
        out = _outputs(_call(cell, tensors, relu))
        grads = grads or [torch.randn_like(o) for o in out]
        return [o.detach() for o in out] + list(torch.autograd.grad(out, leaves, grads))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell, relu", CASES)
def test_cell_op_errors(cell, relu):
    x, *rest = _args(cell)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 4 expected 5"):
        _call(cell, [x[:, :4], *rest], relu)
    with pytest.raises(RuntimeError, match="Input batch size 2 doesn't match hidden0 batch size 3"):
        _call(cell, [x[:2], *rest], relu)
    with pytest.raises(RuntimeError, match="expected w_ih to have the input's dtype"):
        _call(cell, [x, *rest[:-4], rest[-4].float(), *rest[-3:]], relu)
    with pytest.raises(RuntimeError, match="b_ih and b_hh must be both given"):
        _call(cell, [x, *rest[:-1], None], relu)
