"""rnnkit's CUDA kernels against cuDNN (torch.nn on CUDA), the cases of GPU.md.

    python benchmarks/gpu_compare.py [--quick] [--tf32] [--out FILE.md]

For every case, dtype (float32, bfloat16, float16) and mode (forward alone under
no_grad; forward + backward including every weight gradient), both modules get
the same weights and inputs; after a warm-up the two are timed alternately, in
rounds whose order flips each time, with CUDA events around each call, and the
medians are reported with their ratio (rnnkit / cuDNN: below 1 means rnnkit is
faster). TF32 is off for both by default (cuDNN would otherwise use it for
float32 while ATen's GEMMs would not); --tf32 turns it on for both. Each row names
the cuDNN algorithm torch.nn ran (cudnn_algorithm.py: the forward call's, then the
backward call's).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys

# The CUDA kernels are off by default until validated; this script measures them.
os.environ.setdefault("RNNKIT_CUDA_KERNELS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import rnnkit  # noqa: E402
from cudnn_algorithm import describe as cudnn_algorithm  # noqa: E402
from rnnkit import ops  # noqa: E402


@dataclasses.dataclass
class Case:
    name: str
    kind: str
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False


CASES = [
    Case("fastrnns default", "LSTM", T=100, B=64, I=512, H=512),
    Case("small batch B=1", "LSTM", T=1024, B=1, I=768, H=768),
    Case("small batch B=16", "LSTM", T=1024, B=16, I=768, H=768),
    Case("2-layer bidir packed", "LSTM", T=100, B=64, I=512, H=512, layers=2, bidirectional=True,
         packed=True),
    Case("fastrnns shape, GRU", "GRU", T=100, B=64, I=512, H=512),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _modules(case: Case, dtype):
    torch.manual_seed(0)
    kw = dict(num_layers=case.layers, bidirectional=case.bidirectional)
    theirs = getattr(nn, case.kind)(case.I, case.H, **kw).to("cuda", dtype)
    ours = getattr(rnnkit, case.kind)(case.I, case.H, **kw).to("cuda", dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _input(case: Case, dtype, requires_grad: bool):
    """-> (the leaf to differentiate, what the modules take).

    Padded: both are x [T, B, I]. Packed (lengths drawn from T/4..T, one of the full
    length): the PackedSequence, whose rows are the leaf, so that every timed call
    builds its own graph from it."""
    x = torch.randn(case.T, case.B, case.I, device="cuda", dtype=dtype)
    if case.packed:
        g = torch.Generator().manual_seed(1)
        lengths = torch.randint(case.T // 4, case.T + 1, (case.B,), generator=g)
        lengths[0] = case.T
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        leaf = packed.data.requires_grad_(requires_grad)
        return leaf, PackedSequence(leaf, packed.batch_sizes, packed.sorted_indices,
                                    packed.unsorted_indices)
    x.requires_grad_(requires_grad)
    return x, x


def _step(module, inp, x, train: bool):
    """One timed call: forward, or forward + backward to the input and every weight."""
    if not train:
        with torch.no_grad():
            module(inp)
        return
    out, _ = module(inp)
    data = out if isinstance(out, torch.Tensor) else out.data  # PackedSequence -> its rows
    torch.autograd.grad(data, [x, *module.parameters()], torch.ones_like(data))


def _time(fns, warmup: int, rounds: int):
    """Median milliseconds of each fn, timed alternately with CUDA events."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for r in range(rounds):
        order = list(range(len(fns)))[:: (1 if r % 2 == 0 else -1)]
        events = []
        for k in order:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[k]()
            end.record()
            events.append((k, start, end))
        torch.cuda.synchronize()
        for k, start, end in events:
            times[k].append(start.elapsed_time(end))
    return [statistics.median(t) for t in times]


def run_case(case: Case, dtype, train: bool, warmup: int, rounds: int):
    """-> (rnnkit median ms, cuDNN median ms)"""
    ours, theirs = _modules(case, dtype)
    x, inp = _input(case, dtype, requires_grad=train)
    with ops.record_paths() as paths:
        _step(ours, inp, x, train)
    not_compiled = [p for p in paths if p[2] != "compiled"]
    if not_compiled:
        raise SystemExit(f"rnnkit did not run its CUDA kernels for {case.name}: {not_compiled}")
    t_ours, t_theirs = _time([lambda: _step(ours, inp, x, train),
                              lambda: _step(theirs, inp, x, train)], warmup, rounds)
    return t_ours, t_theirs


def _environment() -> list[str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(os.path.abspath(__file__))
                                ).stdout.strip()
    except OSError:
        commit = "?"
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        driver = "?"
    return [
        f"- GPU: {torch.cuda.get_device_name()} (driver {driver or '?'})",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}",
        f"- rnnkit commit {commit or '?'}",
        f"- TF32: {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (both)",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 for both")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = False
    warmup, rounds = (3, 5) if args.quick else (10, 30)

    lines = ["# rnnkit CUDA kernels vs cuDNN", "", *_environment(), "",
             "| case | T | B | H | dtype | mode | cuDNN algorithm | cuDNN ms | rnnkit ms "
             "| rnnkit / cuDNN |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for case in CASES:
        for dname, dtype in DTYPES.items():
            for train in (False, True):
                mode = "fwd+bwd" if train else "fwd"
                algo = cudnn_algorithm(case.kind, dtype, train, input_size=case.I,
                                       hidden_size=case.H, batch=case.B, steps=case.T,
                                       num_layers=case.layers,
                                       bidirectional=case.bidirectional, packed=case.packed)
                try:
                    ours, theirs = run_case(case, dtype, train, warmup, rounds)
                    row = (f"| {case.name} ({case.kind}) | {case.T} | {case.B} | {case.H} | "
                           f"{dname} | {mode} | {algo} | {theirs:.3f} | {ours:.3f} | "
                           f"{ours / theirs:.2f} |")
                except RuntimeError as exc:  # keep going: one failing case is a result too
                    row = (f"| {case.name} ({case.kind}) | {case.T} | {case.B} | {case.H} | "
                           f"{dname} | {mode} | {algo} | error: "
                           f"{str(exc).splitlines()[0][:80]} | | |")
                lines.append(row)
                print(row, flush=True)
                torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
