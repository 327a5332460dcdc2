"""The per-call section of `python -m rnnkit.bench --calls`: the cost of one call.

Cells stepped in a Python loop (decoders, attention models, time series) and layers fed
one step at a time (streaming) are dominated by what one call costs, not by FLOP rates.
Each row steps the torch.nn module and the rnnkit module built from the same weights
`steps` times in a loop, the state fed back (a forward+backward row also runs one
backward through all the steps), and reports microseconds per step. Steps per timed run
are calibrated per row (a run lasts about 10 ms), the two sides are interleaved by
rnnkit.bench.time_pair, and the row reports the medians.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

import rnnkit
from rnnkit import ops

__all__ = ["CALL_MODULES", "CallCase", "CallResult", "call_grid", "run_call_case",
           "format_call_table"]

CALL_MODULES = ("RNNCell", "GRUCell", "LSTMCell", "RNN", "GRU", "LSTM")
CALL_BATCHES = (1, 16, 64)
CALL_HIDDEN = (64, 256, 1024)
_RUN_S = 0.01  # the length of one timed run


@dataclasses.dataclass(frozen=True)
class CallCase:
    """One row: `module` with input and hidden size H at batch B, stepped one call at a
    time ("infer": no_grad in eval mode; "train": forward, then one backward)."""

    module: str
    B: int
    H: int
    dtype: str = "float32"
    mode: str = "infer"


@dataclasses.dataclass
class CallResult:
    case: CallCase
    steps: int
    torch_us: float  # median microseconds per step
    rnnkit_us: float
    path: str

    @property
    def ratio(self) -> float:
        return self.torch_us / self.rnnkit_us

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self.case), "steps": self.steps, "torch_us": self.torch_us,
                "rnnkit_us": self.rnnkit_us, "ratio": self.ratio, "path": self.path}


def call_grid(modules: Sequence[str] = CALL_MODULES, dtypes: Sequence[str] = ("float32",),
              modes: Sequence[str] = ("infer", "train"),
              batches: Sequence[int] = CALL_BATCHES,
              hidden: Sequence[int] = CALL_HIDDEN) -> list[CallCase]:
    return [CallCase(m, b, h, d, mode) for m in modules for b in batches for h in hidden
            for d in dtypes for mode in modes]


def _stepper(module: nn.Module, x: torch.Tensor, train: bool) -> Callable[[int], object]:
    """run(steps): steps calls of module on x, the state fed back; with train, one backward
    through all of them at the end."""
    cell = isinstance(module, nn.RNNCellBase)
    lstm = type(module).__name__.startswith("LSTM")  # torch.nn's or rnnkit's
    module.train(train)
    step_input = x if cell else x.unsqueeze(0)

    def run(steps: int):
        with torch.set_grad_enabled(train):
            state, total = None, None
            for _ in range(steps):
                if cell:
                    state = module(step_input, state)
                    out = state[0] if lstm else state
                else:
                    out, state = module(step_input, state)
                if train:
                    total = out.sum() if total is None else total + out.sum()
            if train:
                module.zero_grad(set_to_none=True)
                total.backward()
    return run


def _pair(case: CallCase):
    dtype = getattr(torch, case.dtype)
    reference = getattr(nn, case.module)(case.H, case.H, dtype=dtype)
    candidate = getattr(rnnkit, case.module)(case.H, case.H, dtype=dtype)
    candidate.load_state_dict(reference.state_dict())
    x = torch.randn(case.B, case.H, dtype=dtype)
    train = case.mode == "train"
    return _stepper(reference, x, train), _stepper(candidate, x, train)


def run_call_case(case: CallCase, *, budget_s: float, repeats: int | None = None) -> CallResult:
    from rnnkit.bench import time_pair  # bench imports this module

    run_torch, run_rnnkit = _pair(case)
    run_torch(2)
    with ops.record_paths() as records:
        run_rnnkit(2)
    paths = {p for _, _, p in records}
    path = paths.pop() if len(paths) == 1 else "mixed"
    start = time.perf_counter()
    run_torch(1)
    one = max(time.perf_counter() - start, 1e-7)
    steps = max(1, min(500, round(_RUN_S / one)))
    times_torch, times_rnnkit = time_pair(lambda: run_torch(steps), lambda: run_rnnkit(steps),
                                          repeats=repeats, budget_s=budget_s, min_repeats=5)
    per_step = 1e6 / steps
    return CallResult(case, steps, statistics.median(times_torch) * per_step,
                      statistics.median(times_rnnkit) * per_step, path)


def format_call_table(results: Sequence[CallResult]) -> str:
    lines = ["| call | B | H | dtype | mode | torch.nn µs | rnnkit µs | ratio | path |",
             "|---|---:|---:|---|---|---:|---:|---:|---|"]
    for r in results:
        c = r.case
        kind = c.module if c.module.endswith("Cell") else f"{c.module} T=1"
        mode = "no_grad" if c.mode == "infer" else "forward+backward"
        lines.append(f"| {kind} | {c.B} | {c.H} | {c.dtype} | {mode} | {r.torch_us:.1f} | "
                     f"{r.rnnkit_us:.1f} | {r.ratio:.2f} | {r.path} |")
    if results:
        ratios = [r.ratio for r in results]
        lines.append("")
        lines.append(f"minimum ratio {min(ratios):.2f}, geometric mean "
                     f"{statistics.geometric_mean(ratios):.2f} over {len(ratios)} rows")
    return "\n".join(lines)
