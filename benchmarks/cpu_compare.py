"""rnnkit's CPU kernels against torch.nn on the CPU.

    python benchmarks/cpu_compare.py [--threads 2] [--rounds 15] [--quick]
                                     [--out benchmarks/results/2026-11-25-cpu.md]

Cases: LSTM, GRU, RNN (tanh) x (B, H) in {(1, 128), (8, 256), (64, 512)}, T=100,
I=H, one layer, float32, batch_first=False.

Time: both modules get the same weights and input; after a warm-up, the two are
timed alternately in rounds (the order flips every round, so that neither always
runs right after the other), each sample being the mean of a few calls; the table
reports the medians. "infer" is the forward under torch.no_grad(); "train" is
forward + backward of output.sum() with every weight gradient (gradients are set
to None before each call, as an optimizer's zero_grad does).

Memory: the peak of the bytes held by tensors allocated through PyTorch's CPU
allocator during one forward + backward, above what was allocated before it
(parameters and input excluded, the gradients they receive included). It is read
from torch.profiler's memory events (profile_memory=True), which see every
allocation of every tensor, torch.nn's and rnnkit's alike, in the order they
happen; the peak is the maximum of their running sum. Buffers that oneDNN
allocates outside PyTorch's allocator (if any) are not seen; the resident set
size cannot be used instead because glibc keeps freed memory around.

The ratio is torch.nn time / rnnkit time: above 1 means rnnkit is faster.
With --before, rnnkit's portable kernels (RNNKIT_CPU_ISA=generic: one ATen GEMM
per step and separate pointwise passes) are timed in the same rounds, giving the
"before" columns. To compare with an older build instead, run this script with
PYTHONPATH pointing at a copy of that build.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import rnnkit

SIZES = [(1, 128), (8, 256), (64, 512)]
KINDS = ["LSTM", "GRU", "RNN"]
T_STEPS = 100
TARGET = {("infer", "LSTM"): 1.0, ("infer", "GRU"): 2.0, ("infer", "RNN"): 2.0,
          ("train", "LSTM"): 1.2, ("train", "GRU"): 1.2, ("train", "RNN"): 1.2}


@dataclasses.dataclass
class Result:
    kind: str
    B: int
    H: int
    mode: str
    torch_ms: float
    rnnkit_ms: float
    torch_mb: float | None = None
    rnnkit_mb: float | None = None
    before_ms: float | None = None

    @property
    def ratio(self) -> float:
        return self.torch_ms / self.rnnkit_ms


def make_pair(kind: str, H: int):
    torch.manual_seed(0)
    ref = getattr(nn, kind)(H, H)
    ours = getattr(rnnkit, kind)(H, H)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _train_step(module, x):
    for p in module.parameters():
        p.grad = None
    out, _ = module(x)
    out.sum().backward()


def _infer_step(module, x):
    with torch.no_grad():
        module(x)


def time_pair(fns, rounds: int, inner: int):
    """Median seconds per call of each fn, timed alternately."""
    samples = [[] for _ in fns]
    for fn in fns:  # warm-up
        for _ in range(2):
            fn()
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            start = time.perf_counter()
            for _ in range(inner):
                fns[k]()
            samples[k].append((time.perf_counter() - start) / inner)
    return [statistics.median(s) for s in samples]


def peak_train_bytes(module, x) -> int:
    """Peak bytes of tensors allocated during one forward + backward (see the top)."""
    _train_step(module, x)  # warm-up: one-time allocations are not the module's
    for p in module.parameters():
        p.grad = None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out, _ = module(x)
        out.sum().backward()
        del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def _with_isa(isa, fn):
    def run():
        previous = os.environ.get("RNNKIT_CPU_ISA")
        os.environ["RNNKIT_CPU_ISA"] = isa
        try:
            fn()
        finally:
            if previous is None:
                del os.environ["RNNKIT_CPU_ISA"]
            else:
                os.environ["RNNKIT_CPU_ISA"] = previous
    return run


def run_case(kind, B, H, mode, rounds, inner, before=False):
    ref, ours = make_pair(kind, H)
    torch.manual_seed(1)
    x = torch.randn(T_STEPS, B, H)
    step = _train_step if mode == "train" else _infer_step
    fns = [lambda: step(ref, x), lambda: step(ours, x)]
    if before:
        fns.append(_with_isa("generic", lambda: step(ours, x)))
    times = time_pair(fns, rounds, inner)
    res = Result(kind, B, H, mode, times[0] * 1e3, times[1] * 1e3)
    if before:
        res.before_ms = times[2] * 1e3
    if mode == "train":
        res.torch_mb = peak_train_bytes(ref, x) / 2**20
        res.rnnkit_mb = peak_train_bytes(ours, x) / 2**20
    return res


def _inner_calls(B, H, mode):
    # Aim at samples of roughly 20-50 ms.
    base = {128: 20, 256: 8, 512: 1}[H]
    return max(1, base // (3 if mode == "train" else 1))


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except OSError:
        commit = "unknown"
    return {
        "cpu": cpu,
        "logical cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load average (1, 5, 15 min) at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "git commit": commit,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def to_markdown(results, info, command) -> str:
    before = any(r.before_ms is not None for r in results)
    extra_head = " before ms | ratio before |" if before else ""
    lines = ["| cell | B | H | mode | torch.nn ms | rnnkit ms | ratio | target |" + extra_head +
             " torch.nn MB | rnnkit MB |",
             "|---|---:|---:|---|---:|---:|---:|---:|" + ("---:|---:|" if before else "") +
             "---:|---:|"]
    for r in results:
        mb = (f"{r.torch_mb:.1f} | {r.rnnkit_mb:.1f}" if r.torch_mb is not None else "- | -")
        ok = "" if r.ratio >= TARGET[(r.mode, r.kind)] else " (short)"
        extra = (f" {r.before_ms:.3f} | {r.torch_ms / r.before_ms:.2f} |" if before else "")
        lines.append(f"| {r.kind} | {r.B} | {r.H} | {r.mode} | {r.torch_ms:.3f} | {r.rnnkit_ms:.3f} | "
                     f"**{r.ratio:.2f}**{ok} | {TARGET[(r.mode, r.kind)]:.1f} |{extra} {mb} |")
    head = [f"- {k}: {v}" for k, v in info.items()] + [f"- command: `{command}`"]
    return "\n".join(head) + "\n\n" + "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--before", action="store_true",
                    help="also time rnnkit's portable kernels (RNNKIT_CPU_ISA=generic)")
    ap.add_argument("--sizes", help="e.g. 1x128,64x512 (default: all three)")
    ap.add_argument("--out", help="write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = 5 if args.quick else args.rounds
    info = machine_info(args.threads)
    results = []
    for kind in args.kinds.split(","):
        sizes = ([tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
                 if args.sizes else SIZES)
        for B, H in sizes:
            for mode in args.modes.split(","):
                r = run_case(kind, B, H, mode, rounds, _inner_calls(B, H, mode), args.before)
                results.append(r)
                mem = (f"  mem {r.torch_mb:.1f} / {r.rnnkit_mb:.1f} MB" if r.torch_mb is not None
                       else "")
                prev = f"  before {r.before_ms:8.3f} ms" if r.before_ms is not None else ""
                print(f"{kind:4s} B={B:3d} H={H:3d} {mode:5s} torch {r.torch_ms:8.3f} ms  "
                      f"rnnkit {r.rnnkit_ms:8.3f} ms  ratio {r.ratio:5.2f}{prev}{mem}", flush=True)
    info["load average (1, 5, 15 min) at end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    command = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    md = to_markdown(results, info, command)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
