"""The compiled CPU layer ops against the executable spec (rnnkit.reference).

Every forward op is compared output by output, reserve included, and every
backward op gradient by gradient, over randomly drawn configurations: fresh
sizes and data on each run, with the seed in the failure message so that a
failure can be replayed.
"""

from __future__ import annotations

import functools
import os
import random
import threading

import pytest
import torch

import rnnkit
from helpers import bf16_kernels_run, bf16_product_operands
from rnnkit import _extension, ops, reference

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


def _op_name(cell: str) -> str:
    return "rnn" if cell.startswith("rnn") else cell


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


class Case:
    """One layer op call: its arguments in the op's order, and its backward's."""

    def __init__(self, cell, *, T, B, I, H, P=None, bias=True, reverse=False, lengths=None,
                 dtype=torch.float64, noncontiguous=False):
        self.cell, self.reverse = cell, reverse
        self.sizes = dict(T=T, B=B, I=I, H=H, P=P, bias=bias, reverse=reverse,
                          lengths=None if lengths is None else lengths.tolist(), dtype=dtype)
        G, width = GATES[cell], P if P is not None else H
        scale = max(H, 1) ** -0.5
        opts = dict(dtype=dtype)

        def weight(*shape):
            w = (torch.rand(*shape, dtype=torch.float64) * 2 - 1) * scale
            w = w.to(dtype)
            if noncontiguous and w.dim() == 2:
                w = w.t().contiguous().t()
            return w

        x = torch.randn(T, B, I, **opts)
        if noncontiguous:
            x = torch.randn(B, T, I, **opts).transpose(0, 1)
        self.input = x
        self.lengths = lengths
        self.h0 = torch.randn(B, width, **opts)
        self.c0 = torch.randn(B, H, **opts) if cell == "lstm" else None
        self.w_ih = weight(G * H, I)
        self.w_hh = weight(G * H, width)
        self.b_ih = weight(G * H) if bias else None
        self.b_hh = weight(G * H) if bias else None
        self.w_hr = weight(width, H) if P is not None else None

    @property
    def public_op(self):
        """The differentiable op: no reserve."""
        return getattr(torch.ops.rnnkit, f"{_op_name(self.cell)}_layer").default

    @property
    def forward_op(self):
        """The op autograd runs: with the reserve (RNN keeps none: its public op)."""
        if self.cell.startswith("rnn"):
            return self.public_op
        return getattr(torch.ops.rnnkit, f"{_op_name(self.cell)}_layer_forward").default

    def op(self, *args):
        """forward_op's outputs, with RNN's empty reserve: the reference's outputs."""
        out = self.forward_op(*args)
        return (*out, args[0].new_empty(0)) if self.cell.startswith("rnn") else out

    @property
    def backward_op(self):
        return getattr(torch.ops.rnnkit, f"{_op_name(self.cell)}_layer_backward").default

    @property
    def reference(self):
        return getattr(reference, f"{_op_name(self.cell)}_layer")

    @property
    def reference_backward(self):
        return getattr(reference, f"{_op_name(self.cell)}_layer_backward")

    @property
    def ops_fn(self):
        return getattr(ops, f"{_op_name(self.cell)}_layer")

    def state_args(self):
        """The differentiable tensors, in the op's order (None where absent)."""
        if self.cell == "lstm":
            return [self.input, self.h0, self.c0, self.w_ih, self.w_hh, self.b_ih, self.b_hh,
                    self.w_hr]
        return [self.input, self.h0, self.w_ih, self.w_hh, self.b_ih, self.b_hh]

    def args(self, tensors=None):
        """The forward op's arguments, optionally with other differentiable tensors."""
        t = self.state_args() if tensors is None else list(tensors)
        if self.cell == "lstm":
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = t
            return (x, self.lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, self.reverse)
        x, h0, w_ih, w_hh, b_ih, b_hh = t
        args = (x, self.lengths, h0, w_ih, w_hh, b_ih, b_hh, self.reverse)
        return args + ((self.cell == "rnn_relu",) if self.cell.startswith("rnn") else ())

    def output_grads(self, outputs):
        """Random gradients of output, h_n (and c_n)."""
        n = 3 if self.cell == "lstm" else 2
        return tuple(torch.randn_like(o) for o in outputs[:n])

    def backward_args(self, grads, outputs, input_grad=True, state_grad=True):
        """The backward op's arguments (the reference's too) from op's outputs."""
        saved = (outputs[0],) if self.cell.startswith("rnn") else (outputs[0], outputs[-1])
        return (*grads, *self.args(), *saved, input_grad, state_grad)

    def describe(self, seed):
        return f"{self.cell} {self.sizes} seed={seed}"


def random_case(cell, rng: random.Random, dtype, **overrides):
    T = rng.randint(1, 7)
    B = rng.choice([0, 1, 2, 3, 5])
    H = rng.choice([1, 3, 8, 13, 20])
    kw = dict(T=T, B=B, I=rng.randint(1, 9), H=H, bias=rng.random() < 0.7,
              reverse=rng.random() < 0.5, dtype=dtype, noncontiguous=rng.random() < 0.2)
    if cell == "lstm" and H > 1 and rng.random() < 0.4:
        kw["P"] = rng.randint(1, H - 1)  # torch.nn's rule, which the ops check: 0 < P < H
    if rng.random() < 0.6:
        # Unsorted, with zeros and full lengths.
        kw["lengths"] = torch.tensor([rng.randint(0, T) for _ in range(B)], dtype=torch.int64)
    kw.update(overrides)
    return Case(cell, **kw)


def assert_close(actual, expected, atol, rtol, what):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def check_against_reference(case, seed, atol, rtol):
    with torch.no_grad():
        got = case.op(*case.args())
        want = case.reference(*case.args())
        names = ["output", "h_n", "c_n", "reserve"] if case.cell == "lstm" else \
            ["output", "h_n", "reserve"]
        for name, g, w in zip(names, got, want):
            assert_close(g, w, atol, rtol, f"{case.describe(seed)} {name}")
        grads = case.output_grads(got)
        got_grads = case.backward_op(*case.backward_args(grads, got))
        want_grads = case.reference_backward(*case.backward_args(grads, want))
        names = ["input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"] \
            if case.cell == "lstm" else ["input", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]
        for name, g, w in zip(names, got_grads, want_grads):
            assert_close(g, w, atol, rtol, f"{case.describe(seed)} grad_{name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference_on_random_configurations(cell, dtype):
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    atol, rtol = (1e-10, 1e-9) if dtype == torch.float64 else (2e-5, 1e-4)
    for _ in range(8):
        check_against_reference(random_case(cell, rng, dtype), seed, atol, rtol)


@pytest.mark.parametrize("cell", CELLS)
def test_edge_configurations(cell):
    """B = 0, all lengths zero, lengths equal to T, one step, wide hidden sizes."""
    seed = _fresh_seed()
    torch.manual_seed(seed)
    P = 3 if cell == "lstm" else None
    cases = [
        Case(cell, T=3, B=0, I=4, H=5, P=P),
        Case(cell, T=3, B=0, I=4, H=5, lengths=torch.zeros(0, dtype=torch.int64), reverse=True),
        Case(cell, T=4, B=3, I=2, H=6, lengths=torch.zeros(3, dtype=torch.int64)),
        Case(cell, T=4, B=3, I=2, H=6, P=P, lengths=torch.tensor([4, 4, 4]), reverse=True),
        Case(cell, T=1, B=2, I=3, H=7, bias=False),
        Case(cell, T=5, B=4, I=3, H=70, lengths=torch.tensor([2, 5, 0, 3]), reverse=True),
        Case(cell, T=3, B=2, I=3, H=33, P=P, dtype=torch.float32, noncontiguous=True),
    ]
    for case in cases:
        atol, rtol = (1e-10, 1e-9) if case.input.dtype == torch.float64 else (2e-5, 1e-4)
        check_against_reference(case, seed, atol, rtol)


@pytest.mark.parametrize("cell", CELLS)
def test_single_step(cell):
    """T = 1, the streaming case, runs as one cell step (csrc/cpu/single_step.h) unless a
    sequence has length 0 or the LSTM projects: every variant against the reference, the
    outputs distinct tensors, the reserve with the layer's layout."""
    seed = _fresh_seed()
    torch.manual_seed(seed)
    P = 3 if cell == "lstm" else None
    cases = [
        Case(cell, T=1, B=1, I=3, H=8),
        Case(cell, T=1, B=4, I=5, H=17, bias=False, reverse=True),
        Case(cell, T=1, B=3, I=2, H=6, lengths=torch.tensor([1, 1, 1])),
        Case(cell, T=1, B=3, I=2, H=6, lengths=torch.tensor([1, 0, 1])),  # the general path
        Case(cell, T=1, B=2, I=4, H=5, P=P),
        Case(cell, T=1, B=5, I=4, H=40, dtype=torch.float32, noncontiguous=True),
    ]
    for case in cases:
        atol, rtol = (1e-10, 1e-9) if case.input.dtype == torch.float64 else (2e-5, 1e-4)
        check_against_reference(case, seed, atol, rtol)
        with torch.no_grad():
            out = case.op(*case.args())
        storages = {o.untyped_storage().data_ptr() for o in out if o.numel()}
        assert len(storages) == sum(1 for o in out if o.numel()), case.describe(seed)
        grads = case.output_grads(out)
        some = case.backward_op(*case.backward_args(grads, out, False))
        every = case.backward_op(*case.backward_args(grads, out, True))
        assert some[0].shape == (0,)
        for a, b in zip(some[1:], every[1:]):
            assert torch.equal(a, b), case.describe(seed)
        # Without the initial state's gradient the step saves a product (one_step).
        n_states = 2 if case.cell == "lstm" else 1
        stateless = case.backward_op(*case.backward_args(grads, out, True, False))
        for i, (a, b) in enumerate(zip(stateless, every)):
            if 1 <= i <= n_states:
                assert a.shape == (0,), case.describe(seed)
            else:
                assert torch.equal(a, b), case.describe(seed)


def _upcast(args):
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", CELLS)
def test_half_precision_against_float_reference(cell, dtype):
    """float16/bfloat16 compute in float: compare with the float32 reference on the
    same (rounded) inputs; outputs and gradients come back in the input dtype. Where the
    bfloat16 kernels run, the reference rounds the products' operands as they do (a
    relu's gradient would otherwise differ wherever the two forwards straddle 0)."""
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    rounded = functools.partial(bf16_product_operands,
                                dtype == torch.bfloat16 and bf16_kernels_run())
    for _ in range(4):
        case = random_case(cell, rng, dtype)
        with torch.no_grad(), rounded():
            got = case.op(*case.args())
            want = case.reference(*_upcast(case.args()))
            for g, w in zip(got, want):
                assert g.dtype == dtype
                assert_close(g.float(), w, tol, tol, f"{case.describe(seed)} forward")
            grads = case.output_grads(got)
            got_grads = case.backward_op(*case.backward_args(grads, got))
            with rounded():
                want_grads = case.reference_backward(*_upcast(case.backward_args(grads, got)))
            for g, w in zip(got_grads, want_grads):
                assert g.dtype == dtype
                # Gradients sum over T*B rows: scale the tolerance by their size.
                scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
                assert_close(g.float(), w, tol * scale, tol, f"{case.describe(seed)} backward")


def _opcheck_cases(cell):
    P = 2 if cell == "lstm" else None
    return [
        Case(cell, T=3, B=2, I=3, H=4, P=P, lengths=torch.tensor([3, 1]), reverse=True),
        Case(cell, T=2, B=3, I=2, H=5, bias=False, dtype=torch.float32),
        Case(cell, T=1, B=2, I=3, H=4),  # one step: the cell kernels
    ]


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck_forward(cell):
    for case in _opcheck_cases(cell):
        # The forward op is what autograd runs below the autograd key: on plain tensors.
        torch.library.opcheck(case.forward_op, case.args())
        for t in case.state_args():
            if t is not None:
                t.requires_grad_(True)
        torch.library.opcheck(case.public_op, case.args())


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck_backward(cell):
    for case in _opcheck_cases(cell):
        with torch.no_grad():
            outputs = case.op(*case.args())
        grads = case.output_grads(outputs)
        for input_grad, state_grad in ((True, True), (False, True), (True, False)):
            torch.library.opcheck(case.backward_op,
                                  case.backward_args(grads, outputs, input_grad, state_grad))


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_through_ops(cell):
    seed = _fresh_seed()
    torch.manual_seed(seed)
    P = 2 if cell == "lstm" else None
    for reverse, lengths in [(False, torch.tensor([3, 1])), (True, torch.tensor([2, 3])),
                             (True, None)]:
        case = Case(cell, T=3, B=2, I=3, H=3, P=P, reverse=reverse, lengths=lengths)
        tensors = [t for t in case.state_args() if t is not None]
        present = [t is not None for t in case.state_args()]

        def fn(*flat):
            it = iter(flat)
            full = [next(it) if p else None for p in present]
            return case.ops_fn(*case.args(full))

        inputs = [t.detach().requires_grad_(True) for t in tensors]
        assert torch.autograd.gradcheck(fn, inputs), case.describe(seed)


def test_record_paths_reports_compiled():
    covered = []
    for cell in CELLS:
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            covered.append(Case(cell, T=2, B=2, I=3, H=4, dtype=dtype,
                                lengths=torch.tensor([2, 1]), reverse=True,
                                P=2 if cell == "lstm" else None))
    with ops.record_paths() as paths:
        for case in covered:
            case.ops_fn(*case.args())
    assert len(paths) == len(covered)
    assert all(path == "compiled" and device == "cpu" for _, device, path in paths), paths


def test_two_threads_share_a_module():
    torch.manual_seed(_fresh_seed())
    lstm = rnnkit.LSTM(16, 32, num_layers=2, bidirectional=True)
    inputs = [torch.randn(20, 4, 16) for _ in range(2)]
    with torch.no_grad():
        expected = [lstm(x)[0] for x in inputs]
    results = [None, None]
    errors = []
    start = threading.Barrier(2)

    def work(k):
        try:
            start.wait()
            with torch.no_grad():
                for _ in range(5):
                    results[k] = lstm(inputs[k])[0]
                    torch.testing.assert_close(results[k], expected[k], atol=0, rtol=0)
        except Exception as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad, match", [
    (torch.tensor([2, 1], dtype=torch.int32), "int64"),
    (torch.tensor([2, 1, 1]), "shape"),
    (torch.tensor([[2, 1]]), "shape"),
    (torch.tensor([4, 1]), "out of range"),
    (torch.tensor([2, -1]), "out of range"),
])
def test_bad_lengths_raise(cell, bad, match):
    case = Case(cell, T=3, B=2, I=2, H=3, lengths=bad)
    with pytest.raises(RuntimeError, match=match):
        case.op(*case.args())
    good = Case(cell, T=3, B=2, I=2, H=3)
    with torch.no_grad():
        outputs = good.op(*good.args())
    grads = good.output_grads(outputs)
    case_args = good.backward_args(grads, outputs)
    lengths_at = 4 if cell == "lstm" else 3
    bad_args = case_args[:lengths_at] + (bad,) + case_args[lengths_at + 1:]
    with pytest.raises(RuntimeError, match=match):
        good.backward_op(*bad_args)


@pytest.mark.parametrize("cell", CELLS)
def test_bad_shapes_and_dtypes_raise(cell):
    case = Case(cell, T=3, B=2, I=2, H=3)
    args = list(case.args())
    with pytest.raises(RuntimeError, match="h0"):
        broken = list(args)
        broken[2] = torch.zeros(2, 5, dtype=torch.float64)
        case.op(*broken)
    with pytest.raises(RuntimeError, match="dtype"):
        broken = list(args)
        broken[2] = case.h0.float()
        case.op(*broken)
    with pytest.raises(RuntimeError, match="at least one step"):
        broken = list(args)
        broken[0] = case.input[:0]
        case.op(*broken)


# ---------------------------------------------------------------------------
# hidden_size = 0: torch.nn's cells allow it (its modules do not), so the layer ops
# accept H = 0 and return empty outputs and gradients.


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lengths", [None, torch.tensor([3, 0, 1])], ids=["dense", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_hidden_size_zero_matches_reference(cell, dtype, lengths, reverse):
    case = Case(cell, T=3, B=3, I=4, H=0, dtype=dtype, lengths=lengths, reverse=reverse)
    check_against_reference(case, seed=None, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cells_with_hidden_size_zero_match_torch_nn(kind, bias, batched, with_hx):
    ours = getattr(rnnkit, kind)(3, 0, bias=bias).double()
    theirs = getattr(torch.nn, kind)(3, 0, bias=bias).double()
    theirs.load_state_dict(ours.state_dict())
    data = torch.randn(2, 3, dtype=torch.float64)

    def run(module):
        x = (data if batched else data[0]).clone().requires_grad_(True)
        state = torch.zeros(*x.shape[:-1], 0, dtype=torch.float64)
        hx = None
        if with_hx:
            hx = (state, state.clone()) if kind == "LSTMCell" else state
        out = module(x, hx)
        outs = out if isinstance(out, tuple) else (out,)
        sum(o.sum() for o in outs).backward()
        return outs, x.grad, [p.grad for p in module.parameters()]

    with ops.record_paths() as paths:
        got = run(ours)
    assert paths and all(path == "compiled" for _, _, path in paths), paths
    want = run(theirs)
    for g, w in zip(got[0], want[0]):
        assert g.shape == w.shape and g.dtype == w.dtype
    torch.testing.assert_close(got[1], want[1])
    for g, w in zip(got[2], want[2]):
        assert (g is None) == (w is None)
        if w is not None:
            assert g.shape == w.shape


@pytest.mark.parametrize("cell", CELLS)
def test_input_gradient_in_blocks(cell):
    """The input gradient is computed in blocks of rows over the gate gradients'
    storage: enough rows for several blocks, with I below, equal to and above
    the gate width G*H (the last gets its own buffer)."""
    seed = _fresh_seed()
    torch.manual_seed(seed)
    G = GATES[cell]
    H = 160
    for I in (40, G * H, G * H + 24):
        case = Case(cell, T=12, B=40, I=I, H=H, lengths=torch.randint(0, 13, (40,)))
        check_against_reference(case, seed, 1e-10, 1e-9)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_input_gradient(cell):
    """input_grad=False: an empty gradient of the input, the others unchanged; autograd
    asks for it when the input does not require grad. state_grad=False: the same for the
    initial state (h0, and c0 for the LSTM), in the kernels and in the reference."""
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_states = 2 if cell == "lstm" else 1
    for dtype in (torch.float64, torch.float32):
        case = random_case(cell, rng, dtype)
        with torch.no_grad():
            outputs = case.op(*case.args())
        grads = case.output_grads(outputs)
        every = case.backward_op(*case.backward_args(grads, outputs, True))
        some = case.backward_op(*case.backward_args(grads, outputs, False))
        assert some[0].shape == (0,) and some[0].dtype == dtype
        for a, b in zip(every[1:], some[1:]):
            assert torch.equal(a, b), case.describe(seed)
        for fn in (case.backward_op, case.reference_backward):
            stateless = fn(*case.backward_args(grads, outputs, True, False))
            full = every if fn is case.backward_op else \
                fn(*case.backward_args(grads, outputs, True, True))
            for i, (a, b) in enumerate(zip(stateless, full)):
                if 1 <= i <= n_states:
                    assert a.shape == (0,) and a.dtype == dtype, case.describe(seed)
                else:
                    assert torch.equal(a, b), case.describe(seed)
    for t in case.state_args()[1:]:
        if t is not None:
            t.requires_grad_(True)
    out = case.ops_fn(*case.args())
    sum(o.sum() for o in out).backward()
    assert case.input.grad is None
    assert case.w_hh.grad is not None


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_public_op_keeps_no_reserve(cell):
    """The public op returns the forward op's outputs without the reserve, and runs when
    no backward can follow; with one, autograd runs the forward op."""
    seed = _fresh_seed()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        case = random_case(cell, rng, dtype)
        with torch.no_grad():
            full = case.forward_op(*case.args())
            public = case.public_op(*case.args())
            through_ops = case.ops_fn(*case.args())
        assert len(public) == len(full) - 1
        for a, b, c in zip(full, public, through_ops):
            assert torch.equal(a, b) and torch.equal(a, c), case.describe(seed)
        case.w_hh.requires_grad_(True)
        trained = case.ops_fn(*case.args())
        for a, b in zip(full, trained):
            assert torch.equal(a, b), case.describe(seed)
        assert trained[0].grad_fn.name() == f"Rnnkit{cell.upper()}LayerBackward"
