"""int8 inference on the CPU: torch.nn float32, torch's dynamic int8
(torch.ao.quantization.quantize_dynamic), rnnkit float32 and rnnkit int8
(rnnkit.quantize), all from the same float weights, forward under no_grad.

Each variant is timed interleaved with torch.nn float32 in one process
(rnnkit.bench.time_pair), median of the repeats; the ratios are torch.nn float32's
median over each variant's, and, for rnnkit int8, torch's dynamic int8 median over
rnnkit int8's.

    python benchmarks/quantized_compare.py [--modules LSTM,GRU] [--batches 1,8,32]
        [--hidden 128,256,512,1024] [--steps 100] [--out results.md]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import warnings

import torch
from torch import nn

import rnnkit
from rnnkit import quantized
from rnnkit.bench import machine_info, time_pair

CLASSES = {"LSTM": nn.LSTM, "GRU": nn.GRU}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def variants(cls, H: int):
    """(name, module) for the four variants, from one float module."""
    base = cls(H, H).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation of quantized tensors
        # quantize_dynamic swaps submodules, not the model itself: wrap it.
        dynamic = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(base)),
                                                         {cls}, dtype=torch.qint8)[0]
    ours = rnnkit.convert(copy.deepcopy(base))
    ours_int8 = rnnkit.quantize(copy.deepcopy(base))
    return base, [("torch int8", dynamic), ("rnnkit f32", ours), ("rnnkit int8", ours_int8)]


def run(args) -> list[dict]:
    rows = []
    for name, H, B in ((n, h, b) for n in args.modules for h in args.hidden
                       for b in args.batches):
        base, others = variants(CLASSES[name], H)
        x = torch.randn(args.steps, B, H)
        row = dict(module=name, H=H, B=B)
        with torch.no_grad():
            torch_times = []
            for label, module in others:
                a, b = time_pair(lambda: base(x), lambda m=module: m(x),
                                 budget_s=args.budget, min_repeats=5)
                torch_times += a
                row[label] = statistics.median(b)
            row["torch f32"] = statistics.median(torch_times)
        rows.append(row)
        print(format_row(row, args.steps), flush=True)
    return rows


HEADER = ("| module | T:B:I=H | torch f32 ms | torch int8 ms | rnnkit f32 ms | rnnkit int8 ms "
          "| int8 vs torch f32 | int8 vs torch int8 | rnnkit f32 vs torch f32 |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|")


def format_row(r: dict, steps: int = 100) -> str:
    t = r["torch f32"]
    return (f"| {r['module']} | {steps}:{r['B']}:{r['H']} | {t * 1e3:.2f} "
            f"| {r['torch int8'] * 1e3:.2f} | {r['rnnkit f32'] * 1e3:.2f} "
            f"| {r['rnnkit int8'] * 1e3:.2f} | {t / r['rnnkit int8']:.2f} "
            f"| {r['torch int8'] / r['rnnkit int8']:.2f} | {t / r['rnnkit f32']:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=lambda s: s.split(","), default=["LSTM", "GRU"])
    parser.add_argument("--batches", type=_ints, default=[1, 8, 32])
    parser.add_argument("--hidden", type=_ints, default=[128, 256, 512, 1024])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timing per pair of variants")
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    info = machine_info("cpu")
    print(HEADER)
    rows = run(args)
    if args.out:
        with open(args.out, "w") as f:
            kernels = quantized.kernels(max(args.hidden)) or "reference"
            f.write(f"machine: {info}\n\nrnnkit float kernels: {torch.ops.rnnkit._cpu_isa()}, "
                    f"int8 kernels: {kernels}\n\n{HEADER}\n")
            f.write("\n".join(format_row(r, args.steps) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
