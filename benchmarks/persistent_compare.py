"""Forward time per step of the persistent kernels against cuDNN (torch.nn) and the
hoisted-GEMM baseline, one layer, one direction, inference (no grad).

    python benchmarks/persistent_compare.py            # the GPU protocol's sizes
    python benchmarks/persistent_compare.py --quick    # one size, few repeats

Timing: CUDA events around each call, the contenders interleaved in every round
(so clock and thermal drift hit all alike), warm-up rounds first, medians reported.
Prints a markdown table: microseconds per step and the ratio to cuDNN in the same
dtype (< 1 is faster than cuDNN), and the cuDNN algorithm torch.nn ran
(cudnn_algorithm.py). TF32 is off for both unless --tf32: cuDNN would otherwise
run float32 on TF32 tensor cores against the persistent kernels' float32. Sizes
the planner refuses are listed with the reason instead of a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import rnnkit._C  # noqa: F401  (registers torch.ops.rnnkit.*)
from cudnn_algorithm import describe as cudnn_algorithm

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# (cell, T, B, I, H, directions): the small-batch inference target first, then
# the fastrnns default of PyTorch's benchmarks, then a bidirectional layer (both
# directions in one persistent launch; cuDNN runs its bidirectional kernel).
SIZES = [
    ("lstm", 1024, 16, 768, 768, 1),
    ("lstm", 1024, 1, 768, 768, 1),
    ("gru", 1024, 16, 768, 768, 1),
    ("lstm", 100, 64, 512, 512, 1),
    ("gru", 100, 64, 512, 512, 1),
    ("lstm", 1024, 16, 768, 768, 2),
]


def make_contenders(cell, T, B, I, H, dtype, directions):
    """{name: zero-argument callable} for one size."""
    module_cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    module = module_cls(I, H, bidirectional=directions == 2).to("cuda", dtype)
    x = torch.randn(T, B, I, device="cuda", dtype=dtype)
    h0 = torch.randn(directions, B, H, device="cuda", dtype=dtype)
    c0 = torch.randn(directions, B, H, device="cuda", dtype=dtype)
    w_ih, w_hh = module.weight_ih_l0, module.weight_hh_l0
    b_ih, b_hh = module.bias_ih_l0, module.bias_hh_l0

    if directions == 2:
        rev = (module.weight_ih_l0_reverse, module.weight_hh_l0_reverse,
               module.bias_ih_l0_reverse, module.bias_hh_l0_reverse)
        if cell == "lstm":
            def persistent():
                return torch.ops.rnnkit.lstm_bidirectional_layer_persistent(
                    x, None, h0[0], c0[0], w_ih, w_hh, b_ih, b_hh, h0[1], c0[1], *rev)

            def cudnn():
                return module(x, (h0, c0))
        else:
            def persistent():
                return torch.ops.rnnkit.gru_bidirectional_layer_persistent(
                    x, None, h0[0], w_ih, w_hh, b_ih, b_hh, h0[1], *rev)

            def cudnn():
                return module(x, h0)
        return {"cudnn": cudnn, "persistent": persistent}

    if cell == "lstm":
        def cudnn():
            return module(x, (h0, c0))

        def persistent():
            return torch.ops.rnnkit.lstm_layer_persistent(x, None, h0[0], c0[0], w_ih, w_hh,
                                                          b_ih, b_hh, None, False)
    else:
        def cudnn():
            return module(x, h0)

        def persistent():
            return torch.ops.rnnkit.gru_layer_persistent(x, None, h0[0], w_ih, w_hh, b_ih,
                                                         b_hh, False)

    return {"cudnn": cudnn, "persistent": persistent}


def time_interleaved(contenders, rounds, warmup):
    """{name: median milliseconds per call}."""
    times = {name: [] for name in contenders}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            for name, fn in contenders.items():
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                if r >= warmup:
                    times[name].append(start.elapsed_time(end))
    return {name: statistics.median(v) for name, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one size, bf16, few rounds")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 for both")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("persistent_compare: needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    sizes = SIZES[:1] if args.quick else SIZES
    dtypes = {"bf16": DTYPES["bf16"]} if args.quick else DTYPES
    rounds = 5 if args.quick else args.rounds

    prop = torch.cuda.get_device_properties(0)
    print(f"# {prop.name}, {prop.multi_processor_count} SMs, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"TF32 {'on' if args.tf32 else 'off'} (both)\n")
    print("| cell | dirs | T | B | I=H | dtype | cuDNN algorithm | cuDNN µs/step "
          "| persistent µs/step | ratio | plan |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (cell, T, B, I, H, dirs), (dname, dtype) in [(s, d) for s in sizes
                                                      for d in dtypes.items()]:
        fits, reason, geometry = torch.ops.rnnkit.persistent_plan_current_device(
            cell, B, H, H, dtype, dirs)
        contenders = make_contenders(cell, T, B, I, H, dtype, dirs)
        algo = cudnn_algorithm(cell.upper(), dtype, False, input_size=I, hidden_size=H,
                               batch=B, steps=T, bidirectional=dirs == 2)
        if not fits:
            ms = time_interleaved({"cudnn": contenders["cudnn"]}, rounds, args.warmup)
            print(f"| {cell} | {dirs} | {T} | {B} | {H} | {dname} | {algo} | "
                  f"{ms['cudnn'] * 1e3 / T:.2f} | — | — | refused: {reason} |")
            continue
        ms = time_interleaved(contenders, rounds, args.warmup)
        per_step = {k: v * 1e3 / T for k, v in ms.items()}
        plan = (f"{geometry['blocks']}x{dirs} blocks x {geometry['threads']} threads, "
                f"U={geometry['units_per_block']}")
        print(f"| {cell} | {dirs} | {T} | {B} | {H} | {dname} | {algo} | "
              f"{per_step['cudnn']:.2f} | "
              f"{per_step['persistent']:.2f} | {per_step['persistent'] / per_step['cudnn']:.2f} "
              f"| {plan} |")
    print("\nTimes include the hoisted input-projection GEMM of both contenders.")


if __name__ == "__main__":
    main()
