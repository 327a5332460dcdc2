"""Utilities shared by the parity tests: pairs of modules (torch.nn and rnnkit with the same
parameters), random inputs and states, and one comparison that checks every output and every
gradient of rnnkit against torch.nn run on the same data."""

from __future__ import annotations

import contextlib
import random

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

import rnnkit
from rnnkit import reference

# A test parametrized over DEVICES runs on the CPU everywhere and on CUDA where a GPU is.
ON_CUDA = [pytest.mark.cuda,
           pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=ON_CUDA)]

MODULES = ("RNN", "GRU", "LSTM")
CELLS = ("RNNCell", "GRUCell", "LSTMCell")

# rtol/atol by dtype: torch.nn and rnnkit sum in different orders, nothing more.
TOLERANCE = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-2, atol=2e-2),
    torch.bfloat16: dict(rtol=8e-2, atol=8e-2),
}


def make_pair(name: str, *args, **kwargs):
    """(torch.nn module, rnnkit module) built with the same arguments and holding the same
    parameters (torch's state_dict loaded strictly into rnnkit's)."""
    ref = getattr(nn, name)(*args, **kwargs)
    ours = getattr(rnnkit, name)(*args, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def num_states(module) -> int:
    return 2 if isinstance(module, (nn.LSTM, nn.LSTMCell, rnnkit.LSTM, rnnkit.LSTMCell)) else 1


def random_states(module, batch: int | None, dtype=None) -> list[Tensor]:
    """Random initial states for a module ([h] or [h, c]), batch=None for unbatched input,
    on the module's device."""
    like = dict(dtype=dtype or next(module.parameters()).dtype,
                device=next(module.parameters()).device)
    if isinstance(module, nn.RNNCellBase):
        lead = () if batch is None else (batch,)
        return [torch.randn(*lead, module.hidden_size, **like)
                for _ in range(num_states(module))]
    lead = (module.num_layers * (2 if module.bidirectional else 1),)
    lead += () if batch is None else (batch,)
    h = torch.randn(*lead, module.proj_size or module.hidden_size, **like)
    if num_states(module) == 1:
        return [h]
    return [h, torch.randn(*lead, module.hidden_size, **like)]


def random_input(module, steps: int, batch: int | None, dtype=None) -> Tensor:
    """Random input in the module's layout: (L, N, I), (N, L, I) if batch_first, (L, I) if
    batch is None; on the module's device."""
    like = dict(dtype=dtype or next(module.parameters()).dtype,
                device=next(module.parameters()).device)
    if batch is None:
        return torch.randn(steps, module.input_size, **like)
    shape = (batch, steps) if module.batch_first else (steps, batch)
    return torch.randn(*shape, module.input_size, **like)


def call(module, input, *states):
    """module(input) or module(input, hx) with hx a tensor, or an (h, c) tuple for LSTMs."""
    if not states:
        return module(input)
    return module(input, states[0] if len(states) == 1 else tuple(states))


def flatten(result) -> list:
    """Every tensor in a (nested) module result, PackedSequences as their four fields."""
    if isinstance(result, Tensor) or result is None:
        return [result]
    if isinstance(result, PackedSequence):
        return [result.data, result.batch_sizes, result.sorted_indices, result.unsorted_indices]
    return [t for item in result for t in flatten(item)]


def _is_float(t) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point()


def forward_backward(module, leaves, fn=call, out_grads=None, backward=True):
    """Runs fn(module, *copies of leaves) and, unless backward=False, back-propagates a random
    weighting of every floating output. Returns (outputs, grads, out_grads): outputs flat,
    grads a dict {"leaf0": ..., parameter name: ...}, out_grads the weighting (pass it to the
    second run of a comparison so both runs receive the same upstream gradient)."""
    copies = [t.detach().clone().requires_grad_(backward and t.is_floating_point())
              for t in leaves]
    module.zero_grad(set_to_none=True)
    outputs = flatten(fn(module, *copies))
    grads = {}
    if backward:
        floats = [o for o in outputs if _is_float(o)]
        if out_grads is None:
            out_grads = [torch.randn_like(o) for o in floats]
        loss = sum((o * g).sum() for o, g in zip(floats, out_grads))
        loss.backward()
        grads = {f"leaf{i}": c.grad for i, c in enumerate(copies)}
        grads.update({name: p.grad for name, p in module.named_parameters()})
    return outputs, grads, out_grads


def assert_close(actual, expected, dtype=None, what=""):
    if expected is None or not isinstance(expected, Tensor):
        assert actual is expected or actual == expected, f"{what}: {actual!r} != {expected!r}"
        return
    assert isinstance(actual, Tensor), f"{what}: expected a tensor, got {actual!r}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if not expected.is_floating_point():
        assert torch.equal(actual, expected), f"{what}: {actual} != {expected}"
        return
    tol = TOLERANCE[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


def assert_matches_torch(ref, ours, leaves, fn=call, dtype=None, backward=True):
    """rnnkit's outputs and all gradients (leaves and every parameter) equal torch.nn's on the
    same leaves and the same upstream gradient. Returns rnnkit's (outputs, grads)."""
    ref_out, ref_grads, out_grads = forward_backward(ref, leaves, fn, backward=backward)
    our_out, our_grads, _ = forward_backward(ours, leaves, fn, out_grads, backward=backward)
    assert len(our_out) == len(ref_out)
    for i, (a, e) in enumerate(zip(our_out, ref_out)):
        assert_close(a, e, dtype, f"output {i}")
    assert our_grads.keys() == ref_grads.keys()
    for name, expected in ref_grads.items():
        actual = our_grads[name]
        if expected is None:  # torch gives nothing (e.g. an empty batch): rnnkit gives 0 or None
            assert actual is None or not actual.any(), f"grad of {name}"
            continue
        assert actual is not None, f"rnnkit gives no gradient for {name}"
        assert_close(actual, expected, dtype, f"grad of {name}")
    return our_out, our_grads


def random_sizes(proj: bool = False) -> dict:
    """Small random sizes: steps, batch, input_size, hidden_size (and proj_size if proj)."""
    hidden = random.randint(2, 7)
    sizes = dict(steps=random.randint(1, 6), batch=random.randint(1, 4),
                 input_size=random.randint(1, 7), hidden_size=hidden)
    if proj:
        sizes["proj_size"] = random.randint(1, hidden - 1)
    return sizes


def raised(fn, *args, **kwargs):
    """The exception fn raises, or None."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the caller compares whatever comes
        return exc
    return None


def assert_same_error(ref_fn, our_fn):
    """Both raise, with the same exception type and the same message."""
    expected, actual = raised(ref_fn), raised(our_fn)
    assert expected is not None, "torch.nn accepts this: the test case is wrong"
    assert actual is not None, f"rnnkit accepts what torch rejects with {expected!r}"
    assert type(actual) is type(expected), f"{actual!r} vs torch's {expected!r}"
    assert str(actual) == str(expected)
    return actual


# ---------------------------------------------------------------------------
# CPU autocast: rnnkit's rule, and a reference for it that does not depend on the CPU.
#
# torch.nn's own CPU autocast results depend on the machine: its LSTM runs oneDNN's bfloat16
# primitive where the CPU has AVX-512 BF16 and raises ("could not create a primitive
# descriptor") or falls back to float32 outputs elsewhere. rnnkit follows one rule on every
# CPU, the one torch.nn follows where its bfloat16 path works (README, "Autocast"):
#   RNN, RNNCell, LSTM: every output in the autocast dtype, except the c_n of an LSTM with a
#     projection, which keeps c0's dtype;
#   GRU, GRUCell, LSTMCell: every output in promote(autocast dtype, dtype of h0).
# The values are checked against torch.nn run outside autocast, in float32, on the inputs,
# states and weights rounded to the dtype the rule computes in.

_AUTOCAST_KEEPS_STATE_DTYPE = ("GRU", "GRUCell", "LSTMCell")


def cpu_autocast_compute_dtype(name: str, low: torch.dtype, h_dtype: torch.dtype) -> torch.dtype:
    """The dtype rnnkit's `name` computes in under CPU autocast to `low`, h0 being h_dtype."""
    return torch.promote_types(low, h_dtype) if name in _AUTOCAST_KEEPS_STATE_DTYPE else low


def cpu_autocast_output_dtypes(name, module, low, x_dtype, states) -> list[torch.dtype]:
    """The flat output dtypes of module(x, states) under CPU autocast to `low` (the rule)."""
    h_dtype = states[0].dtype if states else x_dtype
    compute = cpu_autocast_compute_dtype(name, low, h_dtype)
    if isinstance(module, nn.RNNCellBase):
        return [compute] * num_states(module)
    if num_states(module) == 1:
        return [compute, compute]  # output, h_n
    c_dtype = states[1].dtype if states else x_dtype
    return [compute, compute, c_dtype if module.proj_size > 0 else compute]


def cpu_autocast_reference(name, module, low, x, states):
    """(float32 copy of the torch.nn `module` holding its weights rounded to the dtype the rule
    computes in, the rounded float32 input, the rounded float32 states): run it outside
    autocast and its outputs are what rnnkit's should be, to the low dtype's precision."""
    h_dtype = states[0].dtype if states else x.dtype
    compute = cpu_autocast_compute_dtype(name, low, h_dtype)

    def rounded(t):
        return t.detach().to(compute).float()

    reference = getattr(nn, name)(module.input_size, module.hidden_size,
                                  **_constructor_kwargs(module))
    with torch.no_grad():
        for (_, mine), (_, theirs) in zip(reference.named_parameters(), module.named_parameters(),
                                          strict=True):
            mine.copy_(rounded(theirs))
    return reference, rounded(x), [rounded(s) for s in states]


def _constructor_kwargs(module) -> dict:
    kwargs = dict(bias=module.bias)
    if isinstance(module, nn.RNNCellBase):
        if hasattr(module, "nonlinearity"):
            kwargs["nonlinearity"] = module.nonlinearity
        return kwargs
    kwargs.update(num_layers=module.num_layers, batch_first=module.batch_first,
                  bidirectional=module.bidirectional)
    if module.mode.startswith("RNN_"):
        kwargs["nonlinearity"] = module.nonlinearity
    if module.mode == "LSTM":
        kwargs["proj_size"] = module.proj_size
    return kwargs


def torch_bf16_autocast_is_native() -> bool:
    """Whether torch.nn's CPU bfloat16 path (oneDNN's) works on this machine, so that torch.nn
    itself follows the rule above and can be compared with directly as well."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# ---------------------------------------------------------------------------
# The persistent kernels' planner and shared-memory layout, checked on the CPU
# (test_persistent_plan.py, test_persistent_transliteration.py) and on a GPU
# (test_persistent_cuda.py).

KIB = 1024
# An H100 SXM's properties as rnnkit::persistent_plan takes them.
H100 = dict(sm_count=132, smem_per_block_optin=227 * KIB, smem_per_sm=228 * KIB,
            regs_per_sm=65536, max_threads_per_block=1024, max_threads_per_sm=2048)
PERSISTENT_GATES = {"lstm": 4, "gru": 3}
# The persistent kernels against the reference run wider on the same rounded inputs: the
# kernels' own rounding (h stored in the dtype every step; gate math in float32).
PERSISTENT_TOL = {torch.float32: 1e-4, torch.bfloat16: 4e-2, torch.float16: 6e-3}


def persistent_plan(cell, batch, hidden, dtype, device, width=None, regs=128, cooperative=True,
                    directions=1):
    """(fits, reason, geometry dict) of rnnkit::persistent_plan for the device properties
    `device` (e.g. H100)."""
    fits, reason, geometry = torch.ops.rnnkit.persistent_plan(
        cell, batch, hidden, hidden if width is None else width, dtype, **device,
        cooperative_launch=cooperative, kernel_regs_per_thread=regs, directions=directions)
    return fits, reason, dict(geometry)


def partial_index(n, r, stride):
    """partial_index of rnnkit/persistent_plan.h: where the persistent kernel keeps the
    partial sum of (row r, batch column n) of one K-warp (n, r: ints or integer arrays)."""
    return n * stride + (r ^ (((n >> 2) & 1) << 3))


@contextlib.contextmanager
def bf16_product_operands(enabled: bool = True):
    """rnnkit.reference as the bfloat16 kernels compute (csrc/cpu/bf16_kernels.h): the
    first operand of every product (the input, the running state, an LSTM's h_full)
    rounded to bfloat16, in the reference's own dtype otherwise; gradients pass
    straight through the rounding. Patches torch.nn.functional.linear, which the
    reference's products call, for the duration."""
    if not enabled:
        yield
        return
    linear = reference.F.linear

    def rounded(x, w, b=None):
        return linear(x.to(torch.bfloat16).to(x.dtype), w, b)

    reference.F.linear = rounded
    try:
        yield
    finally:
        reference.F.linear = linear


def bf16_kernels_run() -> bool:
    """Whether bfloat16 CPU layers run the bfloat16 kernels now (else float32 ones)."""
    return bool(torch.ops.rnnkit._cpu_bf16_isa())
