"""Short sequences with large weights: where the cost of a layer call beyond its arithmetic
(packing the weights, the memory the packs take) shows.

For each cell, dtype, B and H: a forward (no_grad) with T steps of rnnkit against torch.nn
holding the same weights, interleaved in one process (rnnkit.bench.time_pair), median of
repeats, best of rounds;
ratio = torch.nn time / rnnkit time. With --faults, also the page faults per rnnkit call
(resource.getrusage's minor faults), which fresh memory for the packs costs.

    python benchmarks/short_sequences.py [--steps 10] [--batches 1,4,16] [--hidden 512,1024]
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics

import torch
from torch import nn

import rnnkit
from rnnkit.bench import time_pair

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _faults_per_call(fn, calls: int = 5) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="RNN,GRU,LSTM")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", type=_ints, default=[1, 4, 16])
    parser.add_argument("--hidden", type=_ints, default=[512, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--faults", action="store_true", help="count page faults per call")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"T={args.steps}, I=H, forward under no_grad, {args.threads} threads, "
          f"rnnkit kernels: {torch.ops.rnnkit._cpu_isa()}")
    print("| cell | dtype | B | H | torch.nn ms | rnnkit ms | ratio |"
          + (" rnnkit faults/call |" if args.faults else ""))
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if args.faults else ""))
    for cell, dtype, batch, hidden in itertools.product(
            args.cells.split(","), args.dtypes.split(","), args.batches, args.hidden):
        dt = getattr(torch, dtype)
        theirs = getattr(nn, cell)(hidden, hidden).to(dt).eval()
        ours = getattr(rnnkit, cell)(hidden, hidden).to(dt).eval()
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(args.steps, batch, hidden, dtype=dt)
        flops = 4 * GATES[cell] * args.steps * batch * hidden * hidden
        repeats = max(3, min(15, int(2e9 / flops)))
        best = {"torch": float("inf"), "rnnkit": float("inf")}
        with torch.no_grad():
            for _ in range(args.rounds):
                times = time_pair(lambda: theirs(x), lambda: ours(x), repeats=repeats)
                for side, seconds in zip(("torch", "rnnkit"), times):
                    best[side] = min(best[side], statistics.median(seconds))
            faults = _faults_per_call(lambda: ours(x)) if args.faults else None
        row = (f"| {cell} | {dtype} | {batch} | {hidden} | {best['torch'] * 1e3:.3f} | "
               f"{best['rnnkit'] * 1e3:.3f} | {best['torch'] / best['rnnkit']:.2f} |")
        print(row + (f" {faults:.0f} |" if faults is not None else ""), flush=True)


if __name__ == "__main__":
    main()
