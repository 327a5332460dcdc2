"""Every rnnkit op has a CUDA kernel in a CUDA build: checked without a GPU.

Runs wherever the extension was built with CUDA (as in CI, which has no GPU) and
skips for a CPU-only build. RNNKIT_EXPECT_CUDA=1 turns that skip into a failure,
for jobs that mean to build the CUDA extension and must notice when they did not.
"""

import os

import pytest
import torch

from rnnkit import _extension

LAYER_OPS = [
    "rnn_layer", "rnn_layer_backward",
    "gru_layer", "gru_layer_forward", "gru_layer_backward",
    "lstm_layer", "lstm_layer_forward", "lstm_layer_backward",
]
CELL_OPS = [f"{cell}_cell{suffix}" for cell in ("rnn", "gru", "lstm")
            for suffix in ("", "_forward", "_backward") if (cell, suffix) != ("rnn", "_forward")]


# CPU inference by design: the int8 layer (rnnkit.quantize refuses CUDA modules).
CPU_ONLY_OPS = {"quantized_layer"}


def _built_with_cuda() -> bool:
    if not _extension.loaded():
        pytest.fail(f"rnnkit._C did not load: {_extension.LOAD_ERROR}")
    return bool(torch.ops.rnnkit._built_with_cuda())


@pytest.fixture(scope="module")
def cuda_build():
    if not _built_with_cuda():
        if os.environ.get("RNNKIT_EXPECT_CUDA") == "1":
            pytest.fail("RNNKIT_EXPECT_CUDA=1 but rnnkit._C was built without CUDA")
        pytest.skip("rnnkit._C is a CPU-only build")
    assert torch.version.cuda, "a CUDA build of rnnkit needs a CUDA build of torch"


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnkit::{op}", key)


@pytest.mark.parametrize("op", LAYER_OPS + CELL_OPS)
def test_op_has_cuda_kernel(cuda_build, op):
    assert _has_kernel(op, "CUDA"), f"rnnkit::{op} has no CUDA kernel"


def test_every_op_with_a_cpu_kernel_has_a_cuda_kernel(cuda_build):
    ops = sorted(name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                 if name.startswith("rnnkit::"))
    assert set(LAYER_OPS) <= set(ops), f"missing schemas: {set(LAYER_OPS) - set(ops)}"
    missing = [op for op in ops if _has_kernel(op, "CPU") and not _has_kernel(op, "CUDA")
               and op not in CPU_ONLY_OPS]
    assert not missing, f"ops with a CPU kernel but no CUDA kernel: {missing}"

