"""rnnkit inside the rest of PyTorch: torch.compile, autocast, DistributedDataParallel.

Everything runs on CPU and works on either path of the ops (compiled kernel or
reference), since neither may assume which one is present.
"""

import copy
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import rnnkit
from helpers import (DEVICES, ON_CUDA, cpu_autocast_output_dtypes, cpu_autocast_reference,
                     torch_bf16_autocast_is_native)

# ---------------------------------------------------------------------------
# Small models built from rnnkit modules


class SequenceModel(nn.Module):
    """A recurrent layer and a linear head over its last output and its final state."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn
        width = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        output, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        last = output[:, -1] if self.rnn.batch_first else output[-1]
        return self.head(last) + h.sum(0).sum(-1, keepdim=True)


class CellLoop(nn.Module):
    """A cell unrolled by hand, the way decoders use cells."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, x):  # x: [T, B, I]
        state = None
        outputs = []
        for step in x.unbind(0):
            state = self.cell(step, state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(outputs)


MODELS = {
    "lstm-2layer-batch_first": lambda: SequenceModel(rnnkit.LSTM(4, 6, num_layers=2,
                                                                 batch_first=True)),
    "gru-bidirectional": lambda: SequenceModel(rnnkit.GRU(4, 5, bidirectional=True)),
    "rnn-relu": lambda: SequenceModel(rnnkit.RNN(4, 5, nonlinearity="relu")),
    "lstm-proj": lambda: SequenceModel(rnnkit.LSTM(4, 6, proj_size=3)),
    "lstmcell-loop": lambda: CellLoop(rnnkit.LSTMCell(4, 5)),
    "grucell-loop": lambda: CellLoop(rnnkit.GRUCell(4, 5)),
}


def _input_for(model, steps=3, batch=2):
    x = torch.randn(steps, batch, 4)
    rnn = getattr(model, "rnn", None)
    return x.transpose(0, 1).contiguous() if rnn is not None and rnn.batch_first else x


def _forward_backward(model, x, parameters_of=None):
    """-> (output, input gradient, parameter gradients by name); `parameters_of` is the
    module whose parameter names to use (the original one, for a compiled model)."""
    parameters_of = parameters_of or model
    parameters_of.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in parameters_of.named_parameters()}


def _assert_same_run(got, want, **tol):
    (out, dx, grads), (ref_out, ref_dx, ref_grads) = got, want
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(dx, ref_dx, **tol)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **tol, msg=name)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ---------------------------------------------------------------------------
# torch.compile

# rnnkit/ops.py picks compiled kernel or reference once, at trace time, so the
# whole model, both ops and their autograd, lands in one graph.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compile_fullgraph_matches_eager(name, backend, device):
    model = MODELS[name]().to(device)
    x = _input_for(model).to(device)
    expected = _forward_backward(model, x)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    _assert_same_run(_forward_backward(compiled, x, model), expected)
    # A second call runs the cached graph, which must agree as well.
    _assert_same_run(_forward_backward(compiled, x, model), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["lstm-2layer-batch_first", "gru-bidirectional", "rnn-relu"])
def test_compile_fullgraph_inference_matches_eager(name, device):
    # Under no_grad the ops take their overloads without a reserve (rnnkit/ops.py).
    model = MODELS[name]().to(device).eval()
    x = _input_for(model).to(device)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), expected)


@pytest.mark.slow  # ~5 s with a warm inductor cache, ~50 s on two cores with a cold one
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_inductor_matches_eager(device):
    # Inductor compiles C++ for every graph; on a small CPU one tiny model is what fits.
    model = SequenceModel(rnnkit.GRU(4, 5)).to(device)
    x = _input_for(model).to(device)
    expected = _forward_backward(model, x)
    compiled = torch.compile(model, fullgraph=True)
    _assert_same_run(_forward_backward(compiled, x, model), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm-2layer-batch_first", "grucell-loop"])
def test_compile_with_graph_breaks_matches_eager(name):
    model = MODELS[name]()
    x = _input_for(model)
    expected = _forward_backward(model, x)
    compiled = torch.compile(model, backend="aot_eager")
    _assert_same_run(_forward_backward(compiled, x, model), expected)


# ---------------------------------------------------------------------------
# torch.autocast (CPU bfloat16; CUDA float16 and bfloat16).
#
# On CUDA rnnkit must give what torch.nn (cuDNN) gives. On CPU torch.nn's results depend on
# the machine (its bfloat16 LSTM needs oneDNN's AVX-512 BF16 path: elsewhere it raises or
# returns float32), so rnnkit follows one rule (helpers.py, README "Autocast") and is checked
# against torch.nn in float32 on the rounded inputs and weights, and against torch.nn itself
# where its bfloat16 path works. The rule is not uniform across module kinds because torch.nn's
# is not: GRU, GRUCell, LSTMCell and the projected LSTM's c mix low-precision gates with the
# state in an elementwise update, where the state's dtype wins. Hence the grid over input and
# state dtypes.

AUTOCAST_MODULES = [
    ("LSTM", {}, "LSTM"),
    ("LSTM", dict(num_layers=2, bidirectional=True), "LSTM-2layer-bidir"),
    ("LSTM", dict(proj_size=3), "LSTM-proj"),
    ("GRU", dict(num_layers=2), "GRU-2layer"),
    # tanh: relu's kink at 0 makes bfloat16 gradients flip (rounding moves inputs across it).
    ("RNN", {}, "RNN-tanh"),
    ("RNNCell", {}, "RNNCell"),
    ("GRUCell", {}, "GRUCell"),
    ("LSTMCell", {}, "LSTMCell"),
]
X_DTYPES = {"x_f32": torch.float32, "x_bf16": torch.bfloat16}
STATE_DTYPES = {"no_hx": None, "hx_f32": torch.float32, "hx_bf16": torch.bfloat16}


def _autocast_cases():
    for name, kwargs, label in AUTOCAST_MODULES:
        for x_id, x_dtype in X_DTYPES.items():
            for state_id, state_dtype in STATE_DTYPES.items():
                yield pytest.param(name, kwargs, x_dtype, state_dtype,
                                   id=f"{label}-{x_id}-{state_id}")


def _flat(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in _flat(item)]


def _autocast_inputs(module, x_dtype, state_dtype):
    cell = isinstance(module, nn.RNNCellBase)
    x = torch.randn(2, 4) if cell else torch.randn(3, 2, 4)
    if state_dtype is None:
        return x.to(x_dtype), None
    lead = (2,) if cell else ((2 if module.bidirectional else 1) * module.num_layers, 2)
    h = torch.randn(*lead, getattr(module, "proj_size", 0) or module.hidden_size)
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return x.to(x_dtype), (h.to(state_dtype), torch.randn(*lead, 6).to(state_dtype))
    return x.to(x_dtype), h.to(state_dtype)


def _states_list(hx):
    return [] if hx is None else ([hx] if torch.is_tensor(hx) else list(hx))


def _run_and_backward(module, x, hx, autocast_dtype=None):
    """module(x, hx) (under autocast when a dtype is given), then backward of the float sum of
    its outputs: (outputs, parameter gradients)."""
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        out = _flat(module(x, hx))
    sum(o.float().sum() for o in out).backward()
    return out, [p.grad for p in module.parameters()]


def _assert_autocast_close(ours, theirs):
    (our_out, our_grads), (ref_out, ref_grads) = ours, theirs
    # Part of the step runs in the low dtype, so results agree to its precision.
    for got, want in zip(our_out, ref_out, strict=True):
        torch.testing.assert_close(got.float(), want.float(), rtol=5e-2, atol=5e-2)
    # Parameters stay float32 and so do their gradients.
    assert [g.dtype for g in our_grads] == [torch.float32] * len(our_grads)
    for got, want in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-1, atol=1e-1)


AUTOCASTS = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
             pytest.param("cuda", torch.float16, id="cuda-fp16", marks=ON_CUDA),
             pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=ON_CUDA)]


@pytest.mark.parametrize("device,dtype", AUTOCASTS)
@pytest.mark.parametrize("name,kwargs,x_dtype,state_dtype", list(_autocast_cases()))
def test_autocast_matches_torch(name, kwargs, x_dtype, state_dtype, device, dtype):
    reference = getattr(nn, name)(4, 6, **kwargs).to(device)
    ours = getattr(rnnkit, name)(4, 6, **kwargs).to(device)
    ours.load_state_dict(reference.state_dict())
    x, hx = _autocast_inputs(reference, x_dtype, state_dtype)
    x = x.to(device)
    hx = None if hx is None else (hx.to(device) if torch.is_tensor(hx)
                                  else tuple(h.to(device) for h in hx))
    result = _run_and_backward(ours, x, hx, dtype)
    our_dtypes = [o.dtype for o in result[0]]
    if device == "cpu":
        states = _states_list(hx)
        assert our_dtypes == cpu_autocast_output_dtypes(name, reference, dtype, x.dtype, states)
        rounded, rx, rstates = cpu_autocast_reference(name, reference, dtype, x, states)
        rhx = None if not rstates else (rstates[0] if torch.is_tensor(hx) else tuple(rstates))
        _assert_autocast_close(result, _run_and_backward(rounded, rx, rhx))
    if device == "cuda" or torch_bf16_autocast_is_native():
        native = _run_and_backward(reference, x, hx, dtype)
        assert our_dtypes == [o.dtype for o in native[0]]
        _assert_autocast_close(result, native)


# ---------------------------------------------------------------------------
# DistributedDataParallel: two CPU processes over gloo train like one process.

STEPS, GLOBAL_BATCH, LR = 3, 8, 0.1


def _ddp_model():
    torch.manual_seed(1234)
    return SequenceModel(rnnkit.GRU(4, 6, num_layers=2, batch_first=True))


def _ddp_data():
    generator = torch.Generator().manual_seed(99)
    xs = torch.randn(STEPS, GLOBAL_BATCH, 5, 4, generator=generator)
    ys = torch.randn(STEPS, GLOBAL_BATCH, 2, generator=generator)
    return xs, ys


def _train(model, xs, ys):
    """SGD steps with a mean loss -> gradients of the first step, final weights."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    first_grads = None
    for x, y in zip(xs, ys):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
    return first_grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def _ddp_worker(rank, world_size, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = nn.parallel.DistributedDataParallel(_ddp_model())
        xs, ys = _ddp_data()
        shard = GLOBAL_BATCH // world_size
        part = slice(rank * shard, (rank + 1) * shard)
        grads, weights = _train(model, xs[:, part], ys[:, part])
        strip = len("module.")
        torch.save({"grads": {n[strip:]: g for n, g in grads.items()},
                    "weights": {n[strip:]: w for n, w in weights.items()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo on Windows is not tested")
def test_ddp_two_processes_match_one(tmp_path):
    world_size = 2
    mp.spawn(_ddp_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size,
             join=True)
    grads, weights = _train(_ddp_model(), *_ddp_data())
    for rank in range(world_size):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        # Averaged over ranks, the half-batch mean losses give the full-batch gradient.
        assert result["grads"].keys() == grads.keys()
        for name in grads:
            torch.testing.assert_close(result["grads"][name], grads[name], msg=name)
            torch.testing.assert_close(result["weights"][name], weights[name], msg=name)
