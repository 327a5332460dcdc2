"""rnnkit against torch.nn over the configurations users run, on the CPU.

    python benchmarks/cpu_sweep.py                  # a sample of the grid, a few minutes
    python benchmarks/cpu_sweep.py --full           # the whole grid (hours)
    python benchmarks/cpu_sweep.py --cases 40 --budget 0.5 --out /tmp/sweep.md
    python benchmarks/cpu_sweep.py --key --budget 6  # the key configurations only

The grid: LSTM, GRU, RNN (tanh, relu) x 1-3 layers x uni/bidirectional x
B in {1, 4, 8, 32, 64} x H in {64, 128, 256, 512, 1024} (I = H) x proj_size
(LSTM: none or H/2) x float32/float64/bfloat16 x padded/packed input x
forward (no_grad) / forward+backward x T in {10, 100}. The default run times a
random sample of it (fixed seed, --seed to change), leaving out calls of more
than --max-gflop of arithmetic so that it stays short; --full times every point.

Each row is timed by rnnkit/bench.py's harness (the two modules interleaved,
warmed up, medians). The ratio is torch.nn time / rnnkit time (above 1: rnnkit
faster). "GFLOP/s" counts the multiply-adds of the GEMMs rnnkit runs (the
recurrent and input projections, the LSTM projection, forward and, in training,
the two products of the backward), "peak" is that rate as a fraction of the
float32 FMA peak of rnnkit's instruction set measured on this machine with the
same threads (`torch.ops.rnnkit._cpu_fma_peak`; float64 counts against half of
it). The run prints the minimum and the geometric mean of the ratios and writes
a markdown results file.

For the other instruction set on the same machine, narrow both sides:
`RNNKIT_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_sweep.py`.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import platform
import random
import sys
import time
import warnings

import torch

from rnnkit.bench import Case, Size, machine_info, packed_lengths, run_case

MODULES = (("LSTM", "tanh"), ("GRU", "tanh"), ("RNN", "tanh"), ("RNN", "relu"))
LAYERS = (1, 2, 3)
BATCHES = (1, 4, 8, 32, 64)
HIDDEN = (64, 128, 256, 512, 1024)
DTYPES = ("float32", "float64", "bfloat16")
MODES = ("infer", "train")
STEPS = (10, 100)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def grid() -> list[Case]:
    cases = []
    for (module, nonlinearity), layers, bidir, B, H, dtype, packed, mode, T in itertools.product(
            MODULES, LAYERS, (False, True), BATCHES, HIDDEN, DTYPES, (False, True), MODES, STEPS):
        for proj in ((0, H // 2) if module == "LSTM" else (0,)):
            cases.append(Case(module, Size(T, B, H, H), mode, "cpu", dtype, layers, bidir,
                              proj_size=proj, nonlinearity=nonlinearity, packed=packed))
    return cases


# A few configurations to follow from one measurement to the next (T=100, I=H).
KEY = [dict(module="LSTM", B=1, H=128), dict(module="LSTM", B=8, H=256),
       dict(module="LSTM", B=64, H=512), dict(module="LSTM", B=8, H=256, num_layers=2,
                                              bidirectional=True),
       dict(module="LSTM", B=8, H=512, proj_size=128),
       dict(module="LSTM", B=8, H=256, dtype="float64"), dict(module="GRU", B=64, H=512),
       dict(module="RNN", B=8, H=256), dict(module="LSTM", B=8, H=256, dtype="bfloat16"),
       dict(module="LSTM", B=64, H=512, dtype="bfloat16")]


def key_cases() -> list[Case]:
    cases = []
    for spec in KEY:
        spec = dict(spec)
        module, B, H = spec.pop("module"), spec.pop("B"), spec.pop("H")
        dtype = spec.pop("dtype", "float32")
        cases += [Case(module, Size(100, B, H, H), mode, "cpu", dtype, **spec) for mode in MODES]
    return cases


def gflop(case: Case) -> float:
    """Multiply-adds x 2 of the GEMMs of one call, in GFLOP."""
    T, B, I, H = case.size.T, case.size.B, case.size.I, case.size.H
    steps = float(packed_lengths(case).sum()) if case.packed else float(T * B)
    G, P = GATES[case.module], case.proj_size or H
    dirs = 2 if case.bidirectional else 1
    total = 0.0
    for layer in range(case.num_layers):
        width = I if layer == 0 else P * dirs
        per_step = G * H * (width + P) + (H * P if case.proj_size else 0)
        total += dirs * steps * per_step
    # The backward: the products for dh and dx, and the weight gradients.
    return 2 * total * (3 if case.mode == "train" else 1) / 1e9


def cpu_model() -> str:
    """The CPU's model name and its widest vector extensions, from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    return f"{name} ({', '.join(f for f in wanted if f in flags) or 'no AVX2'})"


def sample(cases: list[Case], count: int, max_gflop: float, seed: int) -> list[Case]:
    small = [c for c in cases if gflop(c) <= max_gflop]
    rng = random.Random(seed)
    return sorted(rng.sample(small, min(count, len(small))), key=lambda c: gflop(c))


def dtype_peak(peak: float, dtype: str, bf16_kernels: bool) -> float:
    """The peak of a dtype from the float32 FMA peak: half for float64; twice for
    bfloat16 where the bfloat16 kernels run (vdpbf16ps: two multiply-adds per lane
    and instruction), else the float32 one (bfloat16 layers then compute in float32)."""
    if dtype == "float64":
        return peak / 2
    return 2 * peak if dtype == "bfloat16" and bf16_kernels else peak


def _row(result, peak: float, bf16_kernels: bool = False) -> dict:
    case = result.case
    rate = gflop(case) / result.rnnkit_median if result.rnnkit_s else float("nan")
    case_peak = dtype_peak(peak, case.dtype, bf16_kernels)
    return dict(label=case.describe(), mode=case.mode, size=str(case.size),
                torch_ms=result.torch_median * 1e3, rnnkit_ms=result.rnnkit_median * 1e3,
                ratio=result.ratio, gflops=rate,
                peak=rate / case_peak if case_peak > 0 else float("nan"),
                path=result.path, error=result.error)


def _markdown(rows: list[dict], info: dict, summary: str, command: str, sort: bool) -> str:
    lines = [f"# rnnkit vs torch.nn, CPU sweep — {info['date'][:10]}", "",
             f"- command: `{command}`",
             f"- machine: {info['cpu_model']}, {info['cpu_count']} CPUs, "
             f"{info['threads']} threads; rnnkit kernels: {info['isa']}; ONEDNN_MAX_CPU_ISA={info['onednn_isa']}",
             f"- measured float32 FMA peak of those kernels on these threads: "
             f"{info['peak']:.0f} GFLOP/s; bfloat16 kernels: {info['bf16'] or 'none'} "
             f"(their peak: {'twice' if info['bf16'] else 'the float32'} one)",
             f"- torch {info['torch']}, Python {info['python']}, commit {info['git_commit']}, "
             f"load average at start {info['load_average']}",
             f"- {summary}", "",
             "ratio = torch.nn time / rnnkit time (above 1: rnnkit faster); GFLOP/s and peak: "
             "rnnkit's rate (see the script's docstring).", "",
             "| configuration | mode | T:B:I:H | torch.nn ms | rnnkit ms | ratio | GFLOP/s "
             "| peak |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    ordered = sorted(rows, key=lambda r: r["ratio"] if r["error"] is None else -1) if sort else rows
    for r in ordered:
        if r["error"]:
            lines.append(f"| {r['label']} | {r['mode']} | {r['size']} | - | - | error: "
                         f"{r['error']} | | |")
            continue
        lines.append(f"| {r['label']} | {r['mode']} | {r['size']} | {r['torch_ms']:.3f} | "
                     f"{r['rnnkit_ms']:.3f} | {r['ratio']:.2f} | {r['gflops']:.1f} | "
                     f"{100 * r['peak']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="every point of the grid")
    parser.add_argument("--key", action="store_true", help="only the key configurations (KEY)")
    parser.add_argument("--cases", type=int, default=120, help="size of the sample (default 120)")
    parser.add_argument("--max-gflop", type=float, default=1.5,
                        help="leave calls of more arithmetic out of the sample (default 1.5)")
    parser.add_argument("--seed", type=int, default=0, help="of the sample")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per row (default 1)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None,
                        help="results file (default benchmarks/results/DATE-cpu-sweep-ISA.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.key:
        cases = key_cases()
    elif args.full:
        cases = grid()
    else:
        cases = sample(grid(), args.cases, args.max_gflop, args.seed)
    isa = torch.ops.rnnkit._cpu_isa()
    peak = torch.ops.rnnkit._cpu_fma_peak(1.0)
    info = machine_info("cpu")
    bf16 = torch.ops.rnnkit._cpu_bf16_isa()
    info.update(cpu_model=cpu_model(), isa=isa, bf16=bf16,
                onednn_isa=os.environ.get("ONEDNN_MAX_CPU_ISA", "(default)"), peak=peak)
    print(f"{len(cases)} cases; rnnkit kernels {isa}, FMA peak {peak:.0f} GFLOP/s on "
          f"{torch.get_num_threads()} threads", file=sys.stderr)

    rows = []
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference fallback's notes; the path column says it
        for k, case in enumerate(cases, 1):
            row = _row(run_case(case, budget_s=args.budget), peak, bool(bf16))
            rows.append(row)
            print(f"[{k}/{len(cases)}] {row['label']:32s} {row['mode']:5s} {row['size']:16s} "
                  f"ratio {row['ratio']:5.2f}  {row['gflops']:6.1f} GFLOP/s "
                  f"({100 * row['peak']:3.0f}% of peak) {row['path']}"
                  + (f"  {row['error']}" if row["error"] else ""), flush=True)

    ratios = [r["ratio"] for r in rows if r["error"] is None and r["ratio"] > 0]
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else float("nan")
    summary = (f"{len(ratios)} rows in {time.perf_counter() - started:.0f} s: minimum ratio "
               f"{min(ratios, default=float('nan')):.2f}, geometric mean {geomean:.2f}, "
               f"{sum(r < 1.0 for r in ratios)} below 1.0, "
               f"{sum(r < 1.1 for r in ratios)} below 1.1")
    print(summary)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        f"{datetime.date.today().isoformat()}-cpu-{'key' if args.key else 'sweep'}-{isa}.md")
    command = " ".join(["python", "benchmarks/cpu_sweep.py", *(argv or sys.argv[1:])])
    if os.environ.get("RNNKIT_CPU_ISA"):
        command = f"RNNKIT_CPU_ISA={os.environ['RNNKIT_CPU_ISA']} " + command
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        command = f"ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} " + command
    with open(out, "w") as f:
        f.write(_markdown(rows, info, summary, command, sort=not args.key))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
