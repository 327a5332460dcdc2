"""The fake kernels of the persistent forward ops, without a GPU.

The persistent ops (csrc/persistent_ops.cpp) have CUDA kernels only, but their
schemas are declared in every build and their fake kernels (rnnkit/ops.py) run
anywhere: under FakeTensorMode, on fake CUDA tensors, and on meta tensors. Their
outputs are the layer ops' (layer_contract.h), so the CPU layer op's real outputs
give the shapes and dtypes to expect. tests/test_persistent_cuda.py runs
torch.library.opcheck on the real kernels on a GPU.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from rnnkit import _extension

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

GATES = {"lstm": 4, "gru": 3}
T, B, I, H = 5, 3, 4, 6


def make_direction(cell, dtype, device, bias=True):
    G = GATES[cell]
    d = dict(h0=torch.randn(B, H, dtype=dtype), w_ih=torch.randn(G * H, I, dtype=dtype),
             w_hh=torch.randn(G * H, H, dtype=dtype),
             b_ih=torch.randn(G * H, dtype=dtype) if bias else None,
             b_hh=torch.randn(G * H, dtype=dtype) if bias else None)
    if cell == "lstm":
        d["c0"] = torch.randn(B, H, dtype=dtype)
    return {k: (None if v is None else v.to(device)) for k, v in d.items()}


def direction_args(cell, d):
    if cell == "lstm":
        return (d["h0"], d["c0"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
    return (d["h0"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])


def run_persistent(cell, bidirectional, input, lengths, fwd, rev):
    if bidirectional:
        op = getattr(torch.ops.rnnkit, f"{cell}_bidirectional_layer_persistent")
        return op(input, lengths, *direction_args(cell, fwd), *direction_args(cell, rev))
    op = getattr(torch.ops.rnnkit, f"{cell}_layer_persistent")
    w_hr = (None,) if cell == "lstm" else ()
    return op(input, lengths, *direction_args(cell, fwd), *w_hr, False)


def expected_on_cpu(cell, bidirectional, dtype, lengths, bias):
    """The CPU forward op's outputs (same contract), run for real."""
    input = torch.randn(T, B, I, dtype=dtype)
    op = getattr(torch.ops.rnnkit, f"{cell}_layer_forward")
    w_hr = (None,) if cell == "lstm" else ()
    outs = []
    for reverse in ([False, True] if bidirectional else [False]):
        d = make_direction(cell, dtype, "cpu", bias)
        outs += op(input, lengths, *direction_args(cell, d), *w_hr, reverse)
    return outs


CASES = [(cell, bidirectional) for cell in ("lstm", "gru") for bidirectional in (False, True)]


def _id(case):
    return f"{case[0]}-{'bidirectional' if case[1] else 'one-direction'}"


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_fake_outputs_match_the_layer_contract(case, dtype, packed, bias):
    cell, bidirectional = case
    lengths = torch.tensor([T, 2, 0]) if packed else None
    want = expected_on_cpu(cell, bidirectional, dtype, lengths, bias)
    with FakeTensorMode():
        input = torch.empty(T, B, I, dtype=dtype, device="cuda")
        fake_lengths = None if lengths is None else torch.empty(B, dtype=torch.long,
                                                                device="cuda")
        fwd = make_direction(cell, dtype, "cuda", bias)
        rev = make_direction(cell, dtype, "cuda", bias)
        got = run_persistent(cell, bidirectional, input, fake_lengths, fwd, rev)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}"
        assert g.dtype == w.dtype == dtype, f"output {i}"
        assert g.stride() == w.stride(), f"output {i}"
        assert g.device.type == "cuda", f"output {i}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_meta_tensors(case):
    cell, bidirectional = case
    input = torch.empty(T, B, I, device="meta")
    fwd = make_direction(cell, torch.float32, "meta")
    rev = make_direction(cell, torch.float32, "meta")
    got = run_persistent(cell, bidirectional, input, None, fwd, rev)
    width = {"lstm": 5, "gru": 4}[cell]
    one = [(T, B, H), (B, H)] + ([(B, H)] if cell == "lstm" else []) + [(T, B, width * H)]
    want = one * (2 if bidirectional else 1)
    assert [tuple(t.shape) for t in got] == want
    assert all(t.device.type == "meta" for t in got)


def test_persistent_schemas_are_declared_in_every_build():
    # The fakes above register against these schemas even without CUDA kernels.
    names = set(torch._C._dispatch_get_all_op_names())
    for op in ("lstm_layer_persistent", "gru_layer_persistent",
               "lstm_bidirectional_layer_persistent", "gru_bidirectional_layer_persistent"):
        assert f"rnnkit::{op}" in names
