"""A real program stepping cells in Python: a sine-wave predictor in the manner of
pytorch/examples' time_sequence_prediction (two LSTMCells of 51 units and a linear
read-out in float64, stepped over 999 time steps at batch 97), one forward and backward
of its loss, as each evaluation of its LBFGS closure runs.

The torch.nn model and the same model after rnnkit.convert are timed interleaved in one
process (rnnkit.bench.time_pair); ratio = torch.nn time / rnnkit time.

    python benchmarks/sequence_prediction.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch
from torch import nn

import rnnkit
from rnnkit.bench import time_pair


class SinePredictor(nn.Module):
    def __init__(self, hidden: int = 51):
        super().__init__()
        self.hidden = hidden
        self.cell1 = nn.LSTMCell(1, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        batch = waves.size(0)
        h1 = c1 = waves.new_zeros(batch, self.hidden)
        h2 = c2 = waves.new_zeros(batch, self.hidden)
        outputs = []
        for x in waves.split(1, dim=1):
            h1, c1 = self.cell1(x, (h1, c1))
            h2, c2 = self.cell2(h1, (h2, c2))
            outputs.append(self.readout(h2))
        return torch.cat(outputs, dim=1)


def sine_waves(batch: int = 100, steps: int = 1000, period: float = 20.0) -> torch.Tensor:
    shift = torch.randint(-80, 80, (batch, 1)).double()
    t = torch.arange(steps, dtype=torch.float64).unsqueeze(0) + shift
    return torch.sin(t / period * 2 * math.pi / 2.5)


def closure_for(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    def closure():
        model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        return loss
    return closure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = sine_waves()
    inputs, targets = data[3:, :-1], data[3:, 1:]  # batch 97, 999 steps
    reference = SinePredictor().double()
    candidate = rnnkit.convert(copy.deepcopy(reference))
    run_ref = closure_for(reference, inputs, targets)
    run_ours = closure_for(candidate, inputs, targets)
    loss_ref, loss_ours = run_ref().item(), run_ours().item()
    times_ref, times_ours = time_pair(run_ref, run_ours, warmup=1, repeats=args.repeats)
    t_ref, t_ours = statistics.median(times_ref), statistics.median(times_ours)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, rnnkit CPU kernels "
          f"{torch.ops.rnnkit._cpu_isa()}; one closure (forward + backward, T=999, B=97, H=51, "
          f"float64); median of {args.repeats}")
    print(f"torch.nn {t_ref * 1e3:.1f} ms, rnnkit {t_ours * 1e3:.1f} ms, ratio {t_ref / t_ours:.2f}"
          f" (losses {loss_ref:.12g} / {loss_ours:.12g}, difference "
          f"{abs(loss_ref - loss_ours):.1e})")


if __name__ == "__main__":
    main()
