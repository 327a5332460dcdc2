"""The compiled CUDA layer ops against the reference, torch.nn on CPU and cuDNN.

Every test here needs a CUDA device and skips without one. On a machine with a
GPU they must all run: a build without the CUDA kernels fails them instead of
skipping (see `cuda_kernels`).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import _extension, ops, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("exact_fp32"),  # tests/conftest.py
]

LAYER_OPS = ["rnn_layer", "rnn_layer_backward", "gru_layer", "gru_layer_forward",
             "gru_layer_backward", "lstm_layer", "lstm_layer_forward", "lstm_layer_backward"]
CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm", "lstm_proj"]
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4, "lstm_proj": 4}


@pytest.fixture(scope="module", autouse=True)
def cuda_kernels():
    """Fails (not skips) when the extension or its CUDA kernels are missing."""
    assert _extension.loaded(), f"rnnkit._C did not load: {_extension.LOAD_ERROR}"
    missing = [op for op in LAYER_OPS if not _extension.has_kernel(op, "cuda")]
    assert not missing, f"no CUDA kernel for {missing}: was rnnkit built with CUDA?"


# ---------------------------------------------------------------------------
# Building op arguments


def make_args(cell, T=7, B=5, I=6, H=8, P=5, bias=True, lengths="none", dtype=torch.float64,
              device="cuda", seed=0):
    """Keyword arguments of the forward op of `cell` (without `reverse`)."""
    g = torch.Generator().manual_seed(seed)
    G = GATES[cell]
    P = P if cell == "lstm_proj" else H

    def rand(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    # Weights scaled like torch.nn's init (1/sqrt(fan_in)), so that even a relu RNN
    # stays finite over the sequence in float16.
    args = dict(input=rand(T, B, I, scale=1.0), h0=rand(B, P), w_ih=rand(G * H, I, scale=I**-0.5),
                w_hh=rand(G * H, P, scale=max(P, 1)**-0.5), b_ih=rand(G * H, scale=0.1) if bias else None,
                b_hh=rand(G * H, scale=0.1) if bias else None)
    if lengths == "none":
        args["lengths"] = None
    else:
        # Packed lengths are 1..T; the op also allows 0 (a sequence with no real step).
        low = 0 if lengths == "with_zero" else 1
        lens = torch.randint(low, T + 1, (B,), generator=g)
        lens[0] = T
        if lengths == "with_zero":
            lens[-1] = 0
        args["lengths"] = lens.to(device)
    if cell.startswith("lstm"):
        args["c0"] = rand(B, H)
        args["w_hr"] = rand(P, H, scale=H**-0.5) if cell == "lstm_proj" else None
    return args


def forward(impl, cell, a, reverse):
    """impl: torch.ops.rnnkit or rnnkit.reference -> the outputs with the reserve (the
    compiled ops' *_layer_forward; RNN keeps an empty reserve)."""
    if cell.startswith("rnn"):
        out = impl.rnn_layer(a["input"], a["lengths"], a["h0"], a["w_ih"], a["w_hh"],
                             a["b_ih"], a["b_hh"], reverse, cell == "rnn_relu")
        return out if len(out) == 3 else (*out, a["input"].new_empty(0))
    gru = getattr(impl, "gru_layer_forward", impl.gru_layer)
    lstm = getattr(impl, "lstm_layer_forward", impl.lstm_layer)
    if cell == "gru":
        return gru(a["input"], a["lengths"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"],
                   a["b_hh"], reverse)
    return lstm(a["input"], a["lengths"], a["h0"], a["c0"], a["w_ih"], a["w_hh"],
                a["b_ih"], a["b_hh"], a["w_hr"], reverse)


def backward(impl, cell, a, reverse, out, seed=1):
    """Runs the backward op of `impl` on the forward outputs `out` with random grads."""
    g = torch.Generator().manual_seed(seed)

    def like(t):
        return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype)

    if cell.startswith("rnn"):
        output, h_n, reserve = out
        return impl.rnn_layer_backward(like(output), like(h_n), a["input"], a["lengths"], a["h0"],
                                       a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], reverse,
                                       cell == "rnn_relu", output, True)
    if cell == "gru":
        output, h_n, reserve = out
        return impl.gru_layer_backward(like(output), like(h_n), a["input"], a["lengths"], a["h0"],
                                       a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], reverse, output,
                                       reserve, True)
    output, h_n, c_n, reserve = out
    return impl.lstm_layer_backward(like(output), like(h_n), like(c_n), a["input"], a["lengths"],
                                    a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                                    a["w_hr"], reverse, output, reserve, True)


def assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for k, (x, y) in enumerate(zip(got, want)):
        assert x.shape == y.shape, f"result {k}: shape {tuple(x.shape)} != {tuple(y.shape)}"
        assert x.dtype == y.dtype and x.device == y.device, f"result {k}"
        torch.testing.assert_close(x, y, **tol, msg=lambda m, k=k: f"result {k}: {m}")


# ---------------------------------------------------------------------------
# The ops against the reference, op by op (reserve included)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("lengths", ["none", "packed", "with_zero"])
def test_op_matches_reference_float64(cell, reverse, bias, lengths):
    a = make_args(cell, bias=bias, lengths=lengths)
    out = forward(torch.ops.rnnkit, cell, a, reverse)
    want = forward(reference, cell, a, reverse)
    assert_all_close(out, want, rtol=1e-9, atol=1e-10)
    grads = backward(torch.ops.rnnkit, cell, a, reverse, out)
    want_grads = backward(reference, cell, a, reverse, want)
    assert_all_close(grads, want_grads, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_op_matches_reference_float32(cell, reverse):
    a = make_args(cell, T=12, B=9, I=16, H=32, P=12, lengths="packed", dtype=torch.float32)
    out = forward(torch.ops.rnnkit, cell, a, reverse)
    want = forward(reference, cell, a, reverse)
    assert_all_close(out, want, rtol=1e-4, atol=1e-5)
    assert_all_close(backward(torch.ops.rnnkit, cell, a, reverse, out),
                     backward(reference, cell, a, reverse, want), rtol=1e-4, atol=1e-4)


# Reduced precision: the kernels must be no less accurate than the reference run
# in the same dtype, both measured against the float64 result.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cell", CELLS)
def test_op_reduced_precision_no_worse_than_reference(cell, dtype):
    a64 = make_args(cell, T=16, B=8, I=32, H=64, P=24, lengths="packed")
    a = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
         for k, v in a64.items()}
    truth = forward(reference, cell, {k: (v.double() if isinstance(v, torch.Tensor)
                                          and v.is_floating_point() else v)
                                      for k, v in a.items()}, False)
    got = forward(torch.ops.rnnkit, cell, a, False)
    ref = forward(reference, cell, a, False)
    floor = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for k, (x, r, t) in enumerate(zip(got, ref, truth)):
        if t.numel() == 0:
            continue
        err = (x.double() - t).abs().max().item()
        ref_err = (r.double() - t).abs().max().item()
        assert err <= 2 * ref_err + floor, f"result {k}: error {err}, reference's {ref_err}"


def test_out_of_range_lengths_act_clamped():
    """lengths are documented to behave as clamped to [0, T]; they never index memory."""
    a = make_args("lstm", T=6, B=4, lengths="packed")
    a["lengths"] = torch.tensor([-3, 0, 6, 1000], device="cuda")
    clamped = dict(a, lengths=a["lengths"].clamp(0, 6))
    for reverse in (False, True):
        out = forward(torch.ops.rnnkit, "lstm", a, reverse)
        assert_all_close(out, forward(reference, "lstm", clamped, reverse),
                         rtol=1e-9, atol=1e-10)
        assert_all_close(backward(torch.ops.rnnkit, "lstm", a, reverse, out),
                         backward(reference, "lstm", clamped, reverse, out),
                         rtol=1e-8, atol=1e-9)


def test_non_contiguous_arguments():
    a = make_args("gru", lengths="packed")
    strided = dict(a, input=a["input"].transpose(0, 1).contiguous().transpose(0, 1),
                   w_hh=a["w_hh"].t().contiguous().t())
    assert not strided["input"].is_contiguous() and not strided["w_hh"].is_contiguous()
    assert_all_close(forward(torch.ops.rnnkit, "gru", strided, True),
                     forward(reference, "gru", a, True), rtol=1e-9, atol=1e-10)


def test_single_step_and_single_sequence():
    for cell in CELLS:
        a = make_args(cell, T=1, B=1, lengths="packed")
        out = forward(torch.ops.rnnkit, cell, a, False)
        assert_all_close(out, forward(reference, cell, a, False), rtol=1e-9, atol=1e-10)
        assert_all_close(backward(torch.ops.rnnkit, cell, a, False, out),
                         backward(reference, cell, a, False, out), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
@pytest.mark.parametrize("lengths", ["none", "with_zero"])
def test_hidden_size_zero(cell, lengths):
    # torch.nn's cells allow hidden_size=0: empty outputs, and zero or empty gradients.
    a = make_args(cell, H=0, lengths=lengths)
    for reverse in (False, True):
        out = forward(torch.ops.rnnkit, cell, a, reverse)
        assert_all_close(out, forward(reference, cell, a, reverse), rtol=0, atol=0)
        assert_all_close(backward(torch.ops.rnnkit, cell, a, reverse, out),
                         backward(reference, cell, a, reverse, out), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# Argument validation


def test_lengths_validation():
    a = make_args("lstm", lengths="packed")
    B = a["input"].shape[1]
    bad = {
        "int64": a["lengths"].int(),
        "device": a["lengths"].cpu(),
        "shape": a["lengths"][:-1],
        "dims": a["lengths"].view(1, B),
    }
    for what, lengths in bad.items():
        with pytest.raises(RuntimeError, match="lengths"):
            forward(torch.ops.rnnkit, "lstm", dict(a, lengths=lengths), False)


def test_argument_validation():
    a = make_args("lstm")
    with pytest.raises(RuntimeError, match="dtype"):
        forward(torch.ops.rnnkit, "lstm", dict(a, h0=a["h0"].float()), False)
    with pytest.raises(RuntimeError, match="h0"):
        forward(torch.ops.rnnkit, "lstm", dict(a, h0=a["h0"][:-1]), False)
    with pytest.raises(RuntimeError, match="b_ih and b_hh"):
        forward(torch.ops.rnnkit, "lstm", dict(a, b_hh=None), False)
    with pytest.raises(RuntimeError, match="w_ih"):
        forward(torch.ops.rnnkit, "lstm", dict(a, w_ih=a["w_ih"][:, :-1]), False)
    with pytest.raises(RuntimeError):
        forward(torch.ops.rnnkit, "lstm", dict(a, input=a["input"][:0]), False)


# ---------------------------------------------------------------------------
# opcheck: schema, fake kernel, autograd registration, on CUDA


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", ["none", "packed"])
def test_opcheck(cell, lengths):
    a = make_args(cell, T=4, B=3, I=5, H=6, P=4, lengths=lengths)
    out = forward(torch.ops.rnnkit, cell, a, True)
    # Backward op first, from plain tensors.
    g = torch.Generator().manual_seed(3)

    def like(t):
        return torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)

    r = torch.ops.rnnkit
    if cell.startswith("rnn"):
        ops_, bop = [r.rnn_layer], r.rnn_layer_backward
        fargs = (a["input"], a["lengths"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                 True, cell == "rnn_relu")
        bargs = (like(out[0]), like(out[1]), *fargs, out[0])
    elif cell == "gru":
        ops_, bop = [r.gru_layer, r.gru_layer_forward], r.gru_layer_backward
        fargs = (a["input"], a["lengths"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                 True)
        bargs = (like(out[0]), like(out[1]), *fargs, out[0], out[2])
    else:
        ops_, bop = [r.lstm_layer, r.lstm_layer_forward], r.lstm_layer_backward
        fargs = (a["input"], a["lengths"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"],
                 a["b_hh"], a["w_hr"], True)
        bargs = (like(out[0]), like(out[1]), like(out[2]), *fargs, out[0], out[3])
    for input_grad, state_grad in ((True, True), (False, True), (True, False)):
        torch.library.opcheck(bop, bargs + (input_grad, state_grad))
    fargs = tuple(x.clone().requires_grad_(x.is_floating_point()) if isinstance(x, torch.Tensor)
                  else x for x in fargs)
    for op in ops_:
        torch.library.opcheck(op, fargs)


# ---------------------------------------------------------------------------
# Modules with RNNKIT_CUDA_KERNELS=1: against torch.nn on CPU in float64, and
# against cuDNN in float32 / bfloat16 / float16

MODULE_CONFIGS = [
    # (kind, kwargs)
    ("LSTM", dict(num_layers=1)),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=2, proj_size=5)),
    ("LSTM", dict(num_layers=1, bias=False, batch_first=True)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(num_layers=1, bias=False, batch_first=True)),
    ("RNN", dict(num_layers=2, nonlinearity="tanh", bidirectional=True)),
    ("RNN", dict(num_layers=1, nonlinearity="relu")),
]


def _config_id(config):
    kind, kw = config
    return kind + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def _module_pair(kind, kw, I, H, device, dtype, seed=0):
    torch.manual_seed(seed)
    theirs = getattr(nn, kind)(I, H, **kw).to(device, dtype)
    ours = getattr(rnnkit, kind)(I, H, **kw).to(device, dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _run_module(module, x, packed_lengths=None, hx=None):
    """-> (output, flat list of states), with padded output if packed."""
    if packed_lengths is not None:
        x = pack_padded_sequence(x, packed_lengths, batch_first=module.batch_first,
                                 enforce_sorted=False)
    output, hidden = module(x) if hx is None else module(x, hx)
    if packed_lengths is not None:
        output, _ = pad_packed_sequence(output, batch_first=module.batch_first)
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    return output, states


def _grads_of(module, x, output, states, seed=5):
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype))
               .sum() for t in [output, *states])
    params = [p for p in module.parameters()]
    return torch.autograd.grad(loss, [x, *params])


@pytest.mark.usefixtures("cuda_kernels_on")
@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=_config_id)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_module_float64_matches_torch_cpu(config, packed):
    kind, kw = config
    T, B, I, H = 6, 4, 5, 7
    ours, _ = _module_pair(kind, kw, I, H, "cuda", torch.float64)
    theirs = getattr(nn, kind)(I, H, **kw).double()
    theirs.load_state_dict({k: v.cpu() for k, v in ours.state_dict().items()})
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    x_cpu = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x_gpu = x_cpu.detach().cuda().requires_grad_()
    lens = torch.tensor([6, 2, 5, 1]) if packed else None

    with ops.record_paths() as paths:
        out, states = _run_module(ours, x_gpu, lens)
        grads = _grads_of(ours, x_gpu, out, states)
    assert paths and all(p[2] == "compiled" for p in paths), paths
    want_out, want_states = _run_module(theirs, x_cpu, lens)
    want_grads = _grads_of(theirs, x_cpu, want_out, want_states)
    for got, want in zip([out, *states, *grads], [want_out, *want_states, *want_grads]):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-10)


# Against cuDNN: float32 elementwise; in bfloat16 / float16 single elements of
# gradients summed over many steps can differ by their own size, so there the
# bound is on the relative error of the whole tensor (in norm). And against
# float64: no less accurate than cuDNN, up to a per-dtype floor.
CUDNN_TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
ERROR_FLOOR = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}


def assert_close_to_cudnn(got, want, dtype, name):
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=CUDNN_TOL[dtype], atol=CUDNN_TOL[dtype],
                                   msg=lambda m: f"{name}: {m}")
        return
    diff = (got.double() - want.double()).norm().item()
    scale = want.double().norm().item()
    assert diff <= CUDNN_TOL[dtype] * max(scale, 1e-3), \
        f"{name}: relative error {diff / max(scale, 1e-12):.3g} against cuDNN"


@pytest.mark.usefixtures("cuda_kernels_on")
@pytest.mark.parametrize("dtype", list(CUDNN_TOL), ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=_config_id)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_module_matches_cudnn(config, dtype, packed):
    kind, kw = config
    T, B, I, H = 10, 6, 16, 32
    ours, theirs = _module_pair(kind, kw, I, H, "cuda", dtype)
    truth = getattr(nn, kind)(I, H, **kw).double()
    truth.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    x = torch.randn(*shape, device="cuda").to(dtype)
    lens = torch.tensor([10, 3, 7, 1, 10, 5]) if packed else None

    x_ours = x.clone().requires_grad_()
    with ops.record_paths() as paths:
        out, states = _run_module(ours, x_ours, lens)
        grads = _grads_of(ours, x_ours, out, states)
    assert paths and all(p[2] == "compiled" for p in paths), paths
    x_theirs = x.clone().requires_grad_()
    try:
        want_out, want_states = _run_module(theirs, x_theirs, lens)
    except RuntimeError as exc:  # a dtype this cuDNN build has no RNN kernel for
        pytest.skip(f"torch.nn.{kind} on CUDA in {dtype} failed: {exc}")
    want_grads = _grads_of(theirs, x_theirs, want_out, want_states)
    x64 = x.double().cpu().requires_grad_()
    true_out, true_states = _run_module(truth, x64, lens)
    true_grads = _grads_of(truth, x64, true_out, true_states)

    names = ["output"] + [f"state{k}" for k in range(len(states))] + \
        ["grad_input"] + [n for n, _ in ours.named_parameters()]
    for name, got, want, true in zip(names, [out, *states, *grads],
                                     [want_out, *want_states, *want_grads],
                                     [true_out, *true_states, *true_grads]):
        assert_close_to_cudnn(got, want, dtype, name)
        err = (got.double().cpu() - true).abs().max().item()
        cudnn_err = (want.double().cpu() - true).abs().max().item()
        assert err <= 2 * cudnn_err + ERROR_FLOOR[dtype], \
            f"{name}: error {err} against float64, cuDNN's {cudnn_err}"


# ---------------------------------------------------------------------------
# Streams and CUDA graphs


@pytest.mark.parametrize("cell", ["gru", "lstm_proj"])
def test_runs_on_the_current_stream(cell):
    """The op must use the current stream: input written on a side stream after a
    long sleep is only seen by kernels queued behind it on that stream."""
    a = make_args(cell, T=8, B=4, lengths="packed", dtype=torch.float32)
    fresh = torch.randn_like(a["input"])
    want = forward(reference, cell, dict(a, input=fresh), False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~tens of ms: any kernel on another stream runs first
        a["input"].copy_(fresh)
        got = forward(torch.ops.rnnkit, cell, a, False)
        got_grads = backward(torch.ops.rnnkit, cell, a, False, got)
    torch.cuda.current_stream().wait_stream(side)
    assert_all_close(got, want, rtol=1e-4, atol=1e-5)
    assert_all_close(got_grads, backward(reference, cell, a, False, want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", ["none", "packed"])
def test_cuda_graph_capture_and_replay(cell, lengths):
    a = make_args(cell, T=8, B=4, lengths=lengths, dtype=torch.float32)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (cuBLAS handles, workspaces) off the capture
        for _ in range(2):
            forward(torch.ops.rnnkit, cell, a, True)
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(torch.ops.rnnkit, cell, a, True)
    for seed in range(3):
        fresh = make_args(cell, T=8, B=4, lengths=lengths, dtype=torch.float32, seed=10 + seed)
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                v.copy_(fresh[k])
        graph.replay()
        torch.cuda.synchronize()
        assert_all_close(static_out, forward(reference, cell, a, True), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_runs_on_inputs_device_not_current_device():
    a = make_args("lstm", lengths="packed", device="cuda:1")
    with torch.cuda.device(0):
        out = forward(torch.ops.rnnkit, "lstm", a, False)
    assert all(t.device == torch.device("cuda:1") for t in out)
    assert_all_close(out, forward(reference, "lstm", a, False), rtol=1e-9, atol=1e-10)
