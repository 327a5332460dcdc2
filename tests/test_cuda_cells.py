"""The compiled CUDA cell ops against the CPU ones and torch.nn's cells on the GPU.

Every test here needs a CUDA device and skips without one; on a machine with a GPU a
build without the CUDA cell kernels fails them instead.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit import _extension, ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("exact_fp32", "cuda_kernels_on"),  # tests/conftest.py
]

CELL_OPS = ["rnn_cell", "rnn_cell_backward", "gru_cell", "gru_cell_forward", "gru_cell_backward",
            "lstm_cell", "lstm_cell_forward", "lstm_cell_backward"]
CASES = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("GRUCell", {}),
         ("LSTMCell", {})]


@pytest.fixture(scope="module", autouse=True)
def cuda_cell_kernels():
    assert _extension.loaded(), f"rnnkit._C did not load: {_extension.LOAD_ERROR}"
    missing = [op for op in CELL_OPS if not _extension.has_kernel(op, "cuda")]
    assert not missing, f"no CUDA kernel for {missing}: was rnnkit built with CUDA?"


def _pair(name, kwargs, dtype, bias=True):
    ours = getattr(rnnkit, name)(7, 37, bias=bias, dtype=dtype, **kwargs)
    cpu = getattr(rnnkit, name)(7, 37, bias=bias, dtype=dtype, **kwargs)
    cpu.load_state_dict(ours.state_dict())
    return ours.cuda(), cpu


def _run(module, x, hx):
    out = module(x, hx)
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name, kwargs", CASES)
def test_cells_match_the_cpu_kernels_float64(name, kwargs, bias):
    ours, cpu = _pair(name, kwargs, torch.float64, bias)
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(5, 37, dtype=torch.float64)
    hx = (hx, torch.randn_like(hx)) if name == "LSTMCell" else hx
    on_gpu = (x.detach().cuda().requires_grad_(),
              tuple(h.cuda() for h in hx) if isinstance(hx, tuple) else hx.cuda())
    with ops.record_paths() as paths:
        got = _run(ours, *on_gpu)
    assert {p for _, d, p in paths if d == "cuda"} == {"compiled"}
    want = _run(cpu, x, hx)
    grads = [torch.randn_like(w) for w in want]
    torch.autograd.backward(got, [g.cuda() for g in grads])
    torch.autograd.backward(want, grads)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(on_gpu[0].grad.cpu(), x.grad, rtol=1e-10, atol=1e-10)
    for (n, p), q in zip(ours.named_parameters(), cpu.parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name, kwargs", CASES)
def test_cells_match_torch_nn_on_the_gpu(name, kwargs, dtype):
    ours = getattr(rnnkit, name)(7, 37, dtype=dtype, device="cuda", **kwargs)
    ref = getattr(torch.nn, name)(7, 37, dtype=dtype, device="cuda", **kwargs)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 7, dtype=dtype, device="cuda")
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for g, w in zip(_run(ours, x, None), _run(ref, x, None)):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("name, kwargs", CASES)
def test_opcheck_on_cuda(name, kwargs):
    cell = {"RNNCell": "rnn", "GRUCell": "gru", "LSTMCell": "lstm"}[name]
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    opts = dict(dtype=torch.float64, device="cuda")
    x, h = torch.randn(3, 4, **opts), torch.randn(3, 5, **opts)
    weights = [torch.randn(G * 5, 4, **opts), torch.randn(G * 5, 5, **opts),
               torch.randn(G * 5, **opts), torch.randn(G * 5, **opts)]
    states = [h, torch.randn(3, 5, **opts)] if cell == "lstm" else [h]
    flags = [kwargs.get("nonlinearity") == "relu"] if cell == "rnn" else []
    args = [t.requires_grad_() for t in (x, *states, *weights)] + flags
    torch.library.opcheck(getattr(torch.ops.rnnkit, f"{cell}_cell").default, tuple(args))


def test_cells_run_on_the_current_stream():
    ours = rnnkit.LSTMCell(7, 37, device="cuda")
    x = torch.randn(5, 7, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        h, c = ours(x)
    stream.synchronize()
    h_default, c_default = ours(x)
    torch.testing.assert_close(h, h_default)
