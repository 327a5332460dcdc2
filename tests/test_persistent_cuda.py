"""The persistent forward kernels (rnnkit::lstm_layer_persistent, gru_layer_persistent)
against the reference layer ops, on a GPU.

The reference runs in float32 (float64 for float32 inputs) on the same, already
rounded, inputs, so the tolerance measures the kernel's own rounding: h is stored
in the input dtype every step (it is what the next step multiplies), the cell
state and all gate math stay in float32.
"""

import pytest
import torch

from helpers import PERSISTENT_GATES as GATES
from helpers import PERSISTENT_TOL as TOL
from rnnkit import _extension, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not _extension.loaded(), reason=f"rnnkit._C: {_extension.LOAD_ERROR}"),
]


def _has_op(name):
    return _extension.has_kernel(name, "cuda")


def make_layer(cell, T, B, I, H, dtype, bias=True, packed=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = H ** -0.5

    def uniform(*shape):
        return ((torch.rand(*shape, generator=g) * 2 - 1) * k).to("cuda", dtype)

    G = GATES[cell]
    layer = dict(
        input=torch.randn(T, B, I, generator=g).to("cuda", dtype),
        h0=(torch.randn(B, H, generator=g) * 0.5).to("cuda", dtype),
        w_ih=uniform(G * H, I), w_hh=uniform(G * H, H),
        b_ih=uniform(G * H) if bias else None, b_hh=uniform(G * H) if bias else None,
        lengths=None,
    )
    if cell == "lstm":
        layer["c0"] = (torch.randn(B, H, generator=g) * 0.5).to("cuda", dtype)
    if packed:
        lengths = torch.randint(0, T + 1, (B,), generator=g)
        lengths[0] = T  # the longest sequence
        if B > 2:
            lengths[1] = 0  # an empty one: final state = initial state
        layer["lengths"] = lengths.to("cuda")
    return layer


def run_persistent(cell, layer, reverse):
    if cell == "lstm":
        return torch.ops.rnnkit.lstm_layer_persistent(
            layer["input"], layer["lengths"], layer["h0"], layer["c0"], layer["w_ih"],
            layer["w_hh"], layer["b_ih"], layer["b_hh"], None, reverse)
    return torch.ops.rnnkit.gru_layer_persistent(
        layer["input"], layer["lengths"], layer["h0"], layer["w_ih"], layer["w_hh"],
        layer["b_ih"], layer["b_hh"], reverse)


def run_reference(cell, layer, reverse):
    wide = torch.float64 if layer["input"].dtype == torch.float32 else torch.float32
    up = {k: (v.to(wide) if (v is not None and v.is_floating_point()) else v)
          for k, v in layer.items()}
    if cell == "lstm":
        out = reference.lstm_layer(up["input"], up["lengths"], up["h0"], up["c0"], up["w_ih"],
                                   up["w_hh"], up["b_ih"], up["b_hh"], None, reverse)
    else:
        out = reference.gru_layer(up["input"], up["lengths"], up["h0"], up["w_ih"],
                                  up["w_hh"], up["b_ih"], up["b_hh"], reverse)
    return out


def plan_fits(cell, B, H, dtype):
    fits, reason, _ = torch.ops.rnnkit.persistent_plan_current_device(cell, B, H, H, dtype)
    return fits, reason


def check(cell, T, B, I, H, dtype, reverse, packed, bias=True):
    fits, reason = plan_fits(cell, B, H, dtype)
    if not fits:
        pytest.skip(f"persistent kernel does not apply on this GPU: {reason}")
    layer = make_layer(cell, T, B, I, H, dtype, bias=bias, packed=packed)
    got = run_persistent(cell, layer, reverse)
    want = run_reference(cell, layer, reverse)
    names = ["output", "h_n", "c_n", "reserve"] if cell == "lstm" else ["output", "h_n", "reserve"]
    assert len(got) == len(want) == len(names)
    tol = TOL[dtype]
    for name, a, b in zip(names, got, want):
        assert a.dtype == dtype and a.shape == b.shape, name
        torch.testing.assert_close(a.to(b.dtype), b, atol=tol, rtol=tol, msg=name)
    if packed:  # padded steps are exactly zero
        steps = torch.arange(T, device="cuda").unsqueeze(1)
        padded = steps >= layer["lengths"].unsqueeze(0)
        assert (got[0][padded] == 0).all() and (got[-1][padded] == 0).all()
    return got


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("B,H", [(1, 64), (5, 136), (16, 768), (40, 256), (64, 512)])
def test_matches_reference(cell, dtype, reverse, packed, B, H):
    if not _has_op(f"{cell}_layer_persistent"):
        pytest.skip("no CUDA persistent kernels in this build")
    check(cell, T=9, B=B, I=48, H=H, dtype=dtype, reverse=reverse, packed=packed)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("H", [8, 16, 200])
def test_small_and_ragged_hidden(cell, H):
    # H=200: the last block owns fewer units than the others.
    check(cell, T=5, B=3, I=7, H=H, dtype=torch.bfloat16, reverse=False, packed=True)
    check(cell, T=5, B=3, I=7, H=H, dtype=torch.float32, reverse=True, packed=False, bias=False)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_long_sequence_many_barriers(cell):
    # 1024 steps through the grid barrier at the small-batch target size.
    check(cell, T=1024, B=16, I=768, H=768, dtype=torch.float32, reverse=False, packed=True)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_deterministic_and_stream_ordered(cell):
    # A fixed reduction order: two runs agree bit for bit; a race on the staged h,
    # the partial sums or the step barrier would show up here first.
    fits, reason = plan_fits(cell, 16, 768, torch.bfloat16)
    if not fits:
        pytest.skip(reason)
    layer = make_layer(cell, 257, 16, 768, 768, torch.bfloat16, packed=True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        first = run_persistent(cell, layer, reverse=False)
        second = run_persistent(cell, layer, reverse=False)
    stream.synchronize()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_refuses_what_it_does_not_cover():
    layer = make_layer("lstm", 3, 65, 8, 64, torch.bfloat16)
    with pytest.raises(RuntimeError, match="batch too large"):
        run_persistent("lstm", layer, reverse=False)
    layer = make_layer("lstm", 3, 4, 8, 64, torch.bfloat16)
    w_hr = torch.zeros(32, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="projections"):
        torch.ops.rnnkit.lstm_layer_persistent(
            layer["input"], None, layer["h0"][:, :32], layer["c0"], layer["w_ih"],
            layer["w_hh"][:, :32], layer["b_ih"], layer["b_hh"], w_hr, False)


def test_plan_on_this_device_is_sound():
    prop = torch.cuda.get_device_properties(0)
    fits, reason, g = torch.ops.rnnkit.persistent_plan_current_device(
        "lstm", 16, 768, 768, torch.bfloat16)
    assert fits, reason
    assert g["blocks"] <= g["blocks_per_sm"] * prop.multi_processor_count


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_bidirectional_in_one_launch(cell, dtype, packed):
    B, H = 16, 768
    fits, reason, _ = torch.ops.rnnkit.persistent_plan_current_device(cell, B, H, H, dtype, 2)
    if not fits:
        pytest.skip(f"two directions do not fit on this GPU: {reason}")
    fwd = make_layer(cell, 11, B, 40, H, dtype, packed=packed, seed=1)
    rev = make_layer(cell, 11, B, 40, H, dtype, packed=packed, seed=2)
    rev["input"], rev["lengths"] = fwd["input"], fwd["lengths"]
    if cell == "lstm":
        got = torch.ops.rnnkit.lstm_bidirectional_layer_persistent(
            fwd["input"], fwd["lengths"], fwd["h0"], fwd["c0"], fwd["w_ih"], fwd["w_hh"],
            fwd["b_ih"], fwd["b_hh"], rev["h0"], rev["c0"], rev["w_ih"], rev["w_hh"],
            rev["b_ih"], rev["b_hh"])
    else:
        got = torch.ops.rnnkit.gru_bidirectional_layer_persistent(
            fwd["input"], fwd["lengths"], fwd["h0"], fwd["w_ih"], fwd["w_hh"], fwd["b_ih"],
            fwd["b_hh"], rev["h0"], rev["w_ih"], rev["w_hh"], rev["b_ih"], rev["b_hh"])
    want = (*run_reference(cell, fwd, reverse=False), *run_reference(cell, rev, reverse=True))
    # And with each direction launched alone (the two plans may split H into
    # different blocks, so not necessarily bit for bit).
    alone = (*run_persistent(cell, fwd, reverse=False), *run_persistent(cell, rev, reverse=True))
    tol = TOL[dtype]
    assert len(got) == len(want) == len(alone)
    for i, (a, b, c) in enumerate(zip(got, want, alone)):
        torch.testing.assert_close(a.to(b.dtype), b, atol=tol, rtol=tol, msg=f"output {i}")
        torch.testing.assert_close(a, c, atol=tol, rtol=tol, msg=f"output {i} vs alone")


# ---------------------------------------------------------------------------
# opcheck: schema, fake kernel (rnnkit/ops.py), autograd registration and
# torch.compile's dispatch, on the real kernels. The ops are forward-only, so
# their inputs do not require grad.


def persistent_call(cell, fwd, rev=None, reverse=False):
    """(op, args): the persistent op over one direction (fwd), or both (fwd, rev)."""
    def direction(d):
        c0 = (d["c0"],) if cell == "lstm" else ()
        return (d["h0"], *c0, d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])

    if rev is None:
        op = getattr(torch.ops.rnnkit, f"{cell}_layer_persistent").default
        w_hr = (None,) if cell == "lstm" else ()
        return op, (fwd["input"], fwd["lengths"], *direction(fwd), *w_hr, reverse)
    op = getattr(torch.ops.rnnkit, f"{cell}_bidirectional_layer_persistent").default
    return op, (fwd["input"], fwd["lengths"], *direction(fwd), *direction(rev))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_opcheck(cell, directions, packed):
    B, H = 4, 64
    fits, reason, _ = torch.ops.rnnkit.persistent_plan_current_device(
        cell, B, H, H, torch.bfloat16, directions)
    if not fits:
        pytest.skip(reason)
    fwd = make_layer(cell, 5, B, 8, H, torch.bfloat16, packed=packed, seed=1)
    rev = make_layer(cell, 5, B, 8, H, torch.bfloat16, seed=2) if directions == 2 else None
    torch.library.opcheck(*persistent_call(cell, fwd, rev, reverse=True))


def test_opcheck_plan_current_device():
    # It returns no tensors (a str and a Dict, which test_aot_dispatch_dynamic cannot
    # compare), so the other checks only.
    torch.library.opcheck(torch.ops.rnnkit.persistent_plan_current_device.default,
                          ("lstm", 16, 768, 768, torch.bfloat16),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
