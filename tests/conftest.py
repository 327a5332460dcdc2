"""Shared pytest setup for the parity suite.

Every test gets its own seed, derived from a per-session base seed and the test's id, so
data are fresh in every test and every session, yet a failure can be replayed with
RNNKIT_TEST_SEED=<base seed printed in the header>.
"""

import os
import random
import zlib

import pytest
import torch

_BASE_SEED = int(os.environ.get("RNNKIT_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_configure(config):
    # rnnkit says once per op when it runs the slow reference path; that is expected here.
    config.addinivalue_line("filterwarnings", "ignore:rnnkit. running:UserWarning")
    # torch.nn's own note that its projected LSTM does not run on oneDNN.
    config.addinivalue_line("filterwarnings",
                            "ignore:LSTM with projections is not supported with oneDNN")


def pytest_collection_modifyitems(config, items):
    # On a GPU validation run a CUDA test that skips proves nothing: refuse to start.
    if os.environ.get("RNNKIT_EXPECT_CUDA") == "1" and not torch.cuda.is_available():
        if any(item.get_closest_marker("cuda") for item in items):
            raise pytest.UsageError("RNNKIT_EXPECT_CUDA=1 but torch sees no CUDA device")


def _machine_lines():
    """The machine a run ran on, so that a red run names it."""
    import platform
    import sys

    from rnnkit import _extension
    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, {platform.machine()}"]
    cpu = torch.backends.cpu.get_cpu_capability()
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    lines.append(f"torch CPU capability {cpu}; oneDNN bfloat16 {'yes' if bf16 else 'no'}; "
                 f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}")
    if _extension.loaded():
        lines.append(f"rnnkit CPU kernels: {torch.ops.rnnkit._cpu_isa()} "
                     f"(RNNKIT_CPU_ISA={os.environ.get('RNNKIT_CPU_ISA', 'unset')})")
    else:
        lines.append(f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")
    return lines


def pytest_report_header(config):
    return [f"rnnkit parity tests: RNNKIT_TEST_SEED={_BASE_SEED}", *_machine_lines()]


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    seed = (_BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31
    torch.manual_seed(seed)
    random.seed(seed)
    yield


@pytest.fixture
def exact_fp32():
    """No TF32 anywhere, so float32 results on a GPU are comparable at float32 precision."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def cuda_kernels_on():
    """rnnkit's CUDA kernels switched on for the test (the environment is read at import,
    rnnkit/ops.py: this switches them directly)."""
    from rnnkit import ops

    previous = ops._cuda_kernels_on
    ops.enable_cuda_kernels(True)
    yield
    ops.enable_cuda_kernels(previous)
