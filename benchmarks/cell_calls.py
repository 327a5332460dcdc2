"""The cost of one call: rnnkit's cells (and T=1 modules) against torch.nn's, stepped in a
Python loop as decoders and streaming models do.

Each timed callable runs `--calls` consecutive steps (the state fed back), so a figure is the
time of one call, overhead included. Pairs are interleaved by rnnkit.bench's harness;
ratio = torch.nn time / rnnkit time (above 1: rnnkit faster).

    python benchmarks/cell_calls.py                 # a sample of the grid
    python benchmarks/cell_calls.py --all           # B in {1, 16, 64} x H in {64, 256, 1024}
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch
from torch import nn

import rnnkit
from rnnkit.bench import time_pair

SAMPLE = [("LSTMCell", 1, 64), ("LSTMCell", 16, 256), ("GRUCell", 1, 64), ("RNNCell", 1, 64),
          ("LSTMCell", 64, 1024), ("LSTM", 1, 64), ("GRU", 1, 64)]


def _step_loop(module, x, calls: int, train: bool):
    cell = isinstance(module, nn.RNNCellBase)
    lstm = isinstance(module, (nn.LSTMCell, nn.LSTM, rnnkit.LSTMCell, rnnkit.LSTM))

    def run():
        with torch.set_grad_enabled(train):
            state, total = None, 0
            for _ in range(calls):
                if cell:
                    state = module(x, state)
                    out = state[0] if lstm else state
                else:
                    out, state = module(x.unsqueeze(0), state)
                total = total + out.sum() if train else 0
            if train:
                total.backward()
    return run


def measure(name, B, H, dtype, train, calls, repeats):
    ref = getattr(nn, name)(H, H, dtype=dtype)
    ours = getattr(rnnkit, name)(H, H, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, H, dtype=dtype)
    times_ref, times_ours = time_pair(_step_loop(ref, x, calls, train),
                                      _step_loop(ours, x, calls, train), repeats=repeats)
    t_ref = statistics.median(times_ref) / calls * 1e6
    t_ours = statistics.median(times_ours) / calls * 1e6
    return t_ref, t_ours


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="the whole grid, not the sample")
    parser.add_argument("--calls", type=int, default=200, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = SAMPLE
    if args.all:
        cases = [(n, b, h) for n in ("RNNCell", "GRUCell", "LSTMCell", "LSTM", "GRU")
                 for b, h in itertools.product((1, 16, 64), (64, 256, 1024))]
    print(f"torch {torch.__version__}, {args.threads} threads, "
          f"rnnkit CPU kernels {torch.ops.rnnkit._cpu_isa()}")
    print("| call | B | H | dtype | mode | torch.nn µs | rnnkit µs | ratio |")
    print("|---|---:|---:|---|---|---:|---:|---:|")
    ratios = []
    for (name, B, H), dtype, train in itertools.product(
            cases, (torch.float32, torch.float64), (False, True)):
        calls = max(10, args.calls * 64 // max(64, H) // (4 if train else 1))
        t_ref, t_ours = measure(name, B, H, dtype, train, calls, args.repeats)
        ratios.append(t_ref / t_ours)
        mode = "forward+backward" if train else "no_grad"
        print(f"| {name} | {B} | {H} | {str(dtype)[6:]} | {mode} | {t_ref:.1f} | {t_ours:.1f} "
              f"| {t_ref / t_ours:.2f} |", flush=True)
    geo = statistics.geometric_mean(ratios)
    print(f"\nminimum ratio {min(ratios):.2f}, geometric mean {geo:.2f} over {len(ratios)} rows")


if __name__ == "__main__":
    main()
