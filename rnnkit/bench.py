"""Timing harness: rnnkit against torch.nn, side by side in one process.

    python -m rnnkit.bench                       # LSTM, GRU, RNN at a few sizes, infer and train
    python -m rnnkit.bench --modules LSTM --sizes 100:32:256:512 --mode train --json out.json
    python -m rnnkit.bench --calls               # the cost of one call: cells, T=1 layers

Every row times the torch.nn module and the rnnkit module built from the same
weights on the same input. The two are interleaved (torch, rnnkit, then rnnkit,
torch, ...) so that drift in clock speed, cache state or other load on the
machine falls on both alike; each is warmed up first, and the row reports the
median. On CUDA the times come from CUDA events. The "path" column says whether
the rnnkit row ran a compiled kernel or the plain-PyTorch reference
(`rnnkit.ops.record_paths()`), since a ratio from the reference measures
something else entirely.

Benchmark scripts reuse `make_pair`, `time_pair` and `run_case`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

import rnnkit
from rnnkit import bench_calls, ops

__all__ = ["Size", "Case", "Result", "packed_lengths", "make_pair", "time_pair", "run_case",
           "machine_info", "format_table", "positive_int", "positive_float", "main"]

MODULES = ("LSTM", "GRU", "RNN")
MODES = ("infer", "train")
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Size:
    """Sequence length T, batch B, input features I, hidden features H."""

    T: int
    B: int
    I: int  # noqa: E741 (the usual name of the input width)
    H: int

    def __str__(self) -> str:
        return f"{self.T}:{self.B}:{self.I}:{self.H}"


# Sizes for the default run. On a CPU they are chosen so that the whole default
# run (3 modules x 3 sizes x 2 modes) stays under a minute on two cores even
# on the reference path: the largest size is what dominates.
DEFAULT_SIZES = {
    "cpu": (Size(100, 1, 128, 128), Size(100, 8, 256, 256), Size(50, 64, 512, 512)),
    "cuda": (Size(100, 1, 128, 128), Size(100, 64, 512, 512), Size(100, 256, 1024, 1024)),
}
DEFAULT_BUDGET_S = {"cpu": 30.0, "cuda": 60.0}


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the table."""

    module: str  # "LSTM", "GRU" or "RNN"
    size: Size
    mode: str  # "infer" or "train"
    device: str = "cpu"
    dtype: str = "float32"
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0  # LSTM only
    nonlinearity: str = "tanh"  # RNN only: "tanh" or "relu"
    packed: bool = False  # a PackedSequence of random lengths in [T/2, T] instead of a tensor

    def describe(self) -> str:
        """The module and its options, as a short label."""
        parts = [self.module if self.module != "RNN" or self.nonlinearity == "tanh"
                 else "RNN-relu"]
        if self.num_layers > 1:
            parts.append(f"{self.num_layers} layers")
        if self.bidirectional:
            parts.append("bidir")
        if self.proj_size:
            parts.append(f"proj {self.proj_size}")
        if self.packed:
            parts.append("packed")
        if self.dtype != "float32":
            parts.append(self.dtype)
        return " ".join(parts)


@dataclasses.dataclass
class Result:
    case: Case
    torch_s: list[float]  # one time per repetition, seconds
    rnnkit_s: list[float]
    path: str  # "compiled", "reference", "mixed" or "error"
    error: str | None = None

    @property
    def torch_median(self) -> float:
        return statistics.median(self.torch_s) if self.torch_s else float("nan")

    @property
    def rnnkit_median(self) -> float:
        return statistics.median(self.rnnkit_s) if self.rnnkit_s else float("nan")

    @property
    def ratio(self) -> float:
        """torch time / rnnkit time: above 1 means rnnkit is faster."""
        return self.torch_median / self.rnnkit_median if self.rnnkit_s else float("nan")

    def to_dict(self) -> dict:
        case = dataclasses.asdict(self.case)
        case["size"] = dataclasses.asdict(self.case.size)
        return {**case, "path": self.path, "error": self.error,
                "torch_ms": self.torch_median * 1e3, "rnnkit_ms": self.rnnkit_median * 1e3,
                "ratio": self.ratio, "repeats": len(self.torch_s),
                "torch_ms_all": [t * 1e3 for t in self.torch_s],
                "rnnkit_ms_all": [t * 1e3 for t in self.rnnkit_s]}


# ---------------------------------------------------------------------------
# Building the two contenders


def _modules_for(case: Case):
    """(torch.nn module, rnnkit module) with identical weights, on the case's device/dtype."""
    kwargs = dict(num_layers=case.num_layers, bidirectional=case.bidirectional)
    if case.proj_size:
        kwargs["proj_size"] = case.proj_size
    if case.nonlinearity != "tanh":
        kwargs["nonlinearity"] = case.nonlinearity
    dtype, device = DTYPES[case.dtype], torch.device(case.device)
    reference = getattr(nn, case.module)(case.size.I, case.size.H, **kwargs)
    candidate = getattr(rnnkit, case.module)(case.size.I, case.size.H, **kwargs)
    candidate.load_state_dict(reference.state_dict())
    return reference.to(device, dtype), candidate.to(device, dtype)


def packed_lengths(case: Case, seed: int = 0) -> torch.Tensor:
    """The sequence lengths of a packed case's input: random in [T/2, T], the first T."""
    T, B = case.size.T, case.size.B
    generator = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint((T + 1) // 2, T + 1, (B,), generator=generator)
    if B:
        lengths[0] = T
    return lengths


def make_pair(case: Case, seed: int = 0) -> tuple[Callable[[], object], Callable[[], object]]:
    """Two argument-less callables, (torch.nn, rnnkit), that run `case` once each.

    "infer" is a forward in eval mode under no_grad; "train" is a forward in
    training mode and a backward from a fixed random output gradient (not
    `.sum()`, whose constant gradient a kernel could exploit). Gradients are reset
    to None before each backward so that neither side pays for accumulation.
    """
    if case.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {case.mode!r}")
    generator = torch.Generator().manual_seed(seed)
    reference, candidate = _modules_for(case)
    dtype, device = DTYPES[case.dtype], torch.device(case.device)
    x = torch.randn(case.size.T, case.size.B, case.size.I, generator=generator)
    x = x.to(device, dtype)
    width = (case.proj_size or case.size.H) * (2 if case.bidirectional else 1)
    grad_shape = (case.size.T, case.size.B, width)
    if case.packed:
        # The user's input is the PackedSequence, packed once outside the timed call.
        lengths = packed_lengths(case, seed)
        x = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        grad_shape = (int(lengths.sum()), width)
    if case.mode == "infer":
        def runner(module):
            module.eval()

            def run():
                with torch.no_grad():
                    return module(x)
            return run
    else:
        grad = torch.randn(*grad_shape, generator=generator).to(device, dtype)

        def runner(module):
            module.train()

            def run():
                module.zero_grad(set_to_none=True)
                output, _ = module(x)
                (output.data if case.packed else output).backward(grad)
            return run
    return runner(reference), runner(candidate)


# ---------------------------------------------------------------------------
# Timing


def _timer(device: str) -> Callable[[Callable[[], object]], float]:
    """A function that runs `fn` once and returns its duration in seconds."""
    if torch.device(device).type == "cuda":
        def cuda_time(fn):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return cuda_time

    def cpu_time(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return cpu_time


def time_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], *, device: str = "cpu",
              warmup: int = 2, repeats: int | None = None, min_repeats: int = 3,
              max_repeats: int = 30, budget_s: float | None = None,
              on_repeat: Callable[[int], None] | None = None) -> tuple[list[float], list[float]]:
    """Times two callables interleaved -> (times of a, times of b), in seconds.

    Each repetition runs both, alternating which goes first. With `repeats` given,
    exactly that many repetitions run; otherwise repetitions continue until
    `budget_s` seconds (warm-up included) have passed, at least `min_repeats` and
    at most `max_repeats` of them. Where a single pair is so slow that
    `min_repeats` would overrun the budget by far, fewer are taken (at least one),
    and the warm-up stops after its first pair.
    """
    time_one = _timer(device)
    started = time.perf_counter()
    warmed = 0
    while warmed < max(warmup, 1):
        fn_a()
        fn_b()
        warmed += 1
        if budget_s is not None and time.perf_counter() - started > 0.25 * budget_s:
            break
    if repeats is None and budget_s is None:
        repeats = min_repeats
    if repeats is None:
        elapsed = time.perf_counter() - started
        pair_s = elapsed / warmed
        affordable = int(2 * (budget_s - elapsed) / pair_s)  # up to twice the budget
        min_repeats = max(1, min(min_repeats, affordable))
    times_a: list[float] = []
    times_b: list[float] = []
    while True:
        done = len(times_a)
        if repeats is not None:
            if done >= repeats:
                break
        elif done >= max_repeats or (
                done >= min_repeats and time.perf_counter() - started >= budget_s):
            break
        if done % 2 == 0:
            times_a.append(time_one(fn_a))
            times_b.append(time_one(fn_b))
        else:
            times_b.append(time_one(fn_b))
            times_a.append(time_one(fn_a))
        if on_repeat is not None:
            on_repeat(done + 1)
    return times_a, times_b


def _summarise_paths(records) -> str:
    paths = {path for _op, _device, path in records}
    if not paths:
        return "none"
    return paths.pop() if len(paths) == 1 else "mixed"


def run_case(case: Case, *, repeats: int | None = None, budget_s: float | None = None,
             warmup: int = 2, on_repeat: Callable[[int], None] | None = None) -> Result:
    """Builds and times one case. Failures (a dtype a device does not support, out of
    memory) become a Result with `error` set rather than an exception."""
    try:
        fn_torch, fn_rnnkit = make_pair(case)
        with ops.record_paths() as records:
            fn_rnnkit()  # a first call, which also tells which path rnnkit takes
        path = _summarise_paths(records)
        torch_s, rnnkit_s = time_pair(fn_torch, fn_rnnkit, device=case.device, warmup=warmup,
                                      repeats=repeats, budget_s=budget_s, on_repeat=on_repeat)
    except (RuntimeError, ValueError, NotImplementedError, torch.cuda.OutOfMemoryError) as exc:
        return Result(case, [], [], "error", f"{type(exc).__name__}: {exc}".splitlines()[0])
    return Result(case, torch_s, rnnkit_s, path)


# ---------------------------------------------------------------------------
# Reporting


def _git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine_info(device: str) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rnnkit": rnnkit.__version__,
        "git_commit": _git_commit(),
        "device": device,
        # Other work on the machine skews every number; worth knowing afterwards.
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def format_table(results: Sequence[Result]) -> str:
    header = ("module", "mode", "T:B:I:H", "torch ms", "rnnkit ms", "ratio", "reps", "path")
    rows = []
    for r in results:
        if r.error:
            rows.append((r.case.module, r.case.mode, str(r.case.size), "-", "-", "-", "0",
                         f"error: {r.error}"))
            continue
        rows.append((r.case.module, r.case.mode, str(r.case.size), _ms(r.torch_median),
                     _ms(r.rnnkit_median), f"{r.ratio:.2f}x", str(len(r.torch_s)), r.path))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    right = {3, 4, 5, 6}  # numbers align right

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


_RATIO_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0,
                50.0, 100.0)


def _spread_ticks(low: float, high: float) -> list[float]:
    """Round ratios between low and high, 1 among them, no two closer than a tenth of
    the (logarithmic) axis."""
    gap = (math.log(high) - math.log(low)) / 10
    ticks = [1.0]
    for t in _RATIO_TICKS:
        if low <= t <= high and all(abs(math.log(t) - math.log(u)) >= gap for u in ticks):
            ticks.append(t)
    return sorted(ticks)


def plot(results: Sequence[Result], filename: str) -> None:
    """Speedup over torch.nn per size, one group of bars per size, one bar per module,
    one panel per mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    modes = [m for m in MODES if any(r.case.mode == m for r in results)]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [r for r in results if r.case.mode == mode and not r.error]
        sizes = list(dict.fromkeys(str(r.case.size) for r in rows))
        modules = list(dict.fromkeys(r.case.module for r in rows))
        width = 0.8 / max(len(modules), 1)
        for k, module in enumerate(modules):
            xs, ys = [], []
            for r in rows:
                if r.case.module == module:
                    xs.append(sizes.index(str(r.case.size)) + (k - (len(modules) - 1) / 2) * width)
                    ys.append(r.ratio)
            # Bars grow from 1 (parity): up when rnnkit is faster, down when slower.
            bars = ax.bar(xs, [y - 1 for y in ys], width, bottom=1.0, label=module)
            ax.bar_label(bars, labels=[f"{y:.2f}x" for y in ys], fontsize=7)
        # Ratios multiply: a log axis shows 2x faster and 2x slower as equally far from 1.
        ax.set_yscale("log")
        ratios = [r.ratio for r in rows] + [1.0]
        low, high = min(ratios) / 1.15, max(ratios) * 1.15
        ax.set_ylim(low, high)
        ax.set_yticks(_spread_ticks(low, high))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_xlabel("T:B:I:H")
        ax.set_ylabel("speedup over torch.nn (torch time / rnnkit time)")
        ax.set_title(mode)
        ax.legend()
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    plt.close(fig)


class _Progress:
    """One self-overwriting line on stderr (a line per row when stderr is not a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.live = stream.isatty()
        self.width = 0

    def update(self, index: int, case: Case, repeat: int | None = None) -> None:
        where = case.size if isinstance(case, Case) else f"B={case.B} H={case.H} {case.dtype}"
        text = f"[{index}/{self.total}] {case.module} {case.mode} {where}"
        if repeat is not None:
            text += f"  repetition {repeat}"
        if self.live:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
            self.stream.flush()
        elif repeat is None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


# ---------------------------------------------------------------------------
# Command line


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _sizes(text: str) -> tuple[Size, ...]:
    sizes = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 4:
            raise argparse.ArgumentTypeError(
                f"each size is T:B:I:H (four integers separated by ':'), got {item!r}")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"sizes must be integers, got {item!r}") from None
        if min(numbers) <= 0:
            raise argparse.ArgumentTypeError(f"sizes must be positive, got {item!r}")
        sizes.append(Size(*numbers))
    return tuple(sizes)


def _module_list(text: str) -> tuple[str, ...]:
    names = [n.strip().upper() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"modules are a comma-separated list of {', '.join(MODULES)}; got {text!r}")
    return tuple(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnkit.bench",
        description="Time rnnkit's recurrent modules against torch.nn's, interleaved in one "
                    "process. Ratios are torch time / rnnkit time (above 1: rnnkit is faster).")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="default: float32 (--calls: float32 and float64)")
    parser.add_argument("--calls", action="store_true",
                        help="the per-call section instead: RNNCell, GRUCell, LSTMCell and "
                             "T=1 RNN, GRU, LSTM stepped in a Python loop at B in {1, 16, 64}, "
                             "H in {64, 256, 1024}; microseconds per call (on the CPU; "
                             "--modules, --sizes, --num-layers and --bidirectional do not "
                             "apply)")
    parser.add_argument("--mode", choices=("infer", "train", "both"), default="both",
                        help="infer: forward under no_grad in eval mode; "
                             "train: forward and backward")
    parser.add_argument("--modules", type=_module_list, default=MODULES,
                        help="comma-separated, from LSTM,GRU,RNN (default: all)")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="comma-separated T:B:I:H (sequence length, batch, input, hidden); "
                             "default depends on the device")
    parser.add_argument("--num-layers", type=positive_int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads, for both sides (default: torch's choice)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="exact repetitions per row (default: as many as fit the time "
                             "budget, between 3 and 30)")
    parser.add_argument("--budget", type=positive_float, default=None,
                        help="seconds for the whole run when --repeats is not given, shared "
                             "evenly by the rows (default: 30 on cpu, 60 on cuda)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also plot the speedups (needs matplotlib: pip install "
                             "'rnnkit[bench]')")
    return parser


def _check_matplotlib(parser: argparse.ArgumentParser) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("--plot needs matplotlib, which is not installed; install it with "
                     "pip install 'rnnkit[bench]' (or pip install matplotlib)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.calls else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch "
                     f"({torch.__version__})")
    if args.plot:
        _check_matplotlib(parser)
    for name in (args.json, args.plot):
        if name and not os.path.isdir(os.path.dirname(os.path.abspath(name))):
            parser.error(f"cannot write {name}: no such directory")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.calls:
        return _main_calls(args)
    args.dtype = args.dtype or "float32"
    sizes = args.sizes or DEFAULT_SIZES[args.device]
    modes = MODES if args.mode == "both" else (args.mode,)
    cases = [Case(module, size, mode, args.device, args.dtype, args.num_layers, args.bidirectional)
             for size in sizes for module in args.modules for mode in modes]
    budget = args.budget or DEFAULT_BUDGET_S[args.device]
    deadline = time.perf_counter() + budget

    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    progress = _Progress(len(cases))
    results = []
    # The reference fallback warns once per op; the path column says the same
    # thing per row, so the warnings are gathered and printed once under the table.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for index, case in enumerate(cases, 1):
                progress.update(index, case)
                # What is left is shared by the rows left, so a slow row shortens the
                # rest instead of the whole run overrunning.
                row_budget = None if args.repeats else max(
                    deadline - time.perf_counter(), 0.0) / (len(cases) - index + 1)
                results.append(run_case(
                    case, repeats=args.repeats, budget_s=row_budget,
                    on_repeat=lambda rep, i=index, c=case: progress.update(i, c, rep)))
        except KeyboardInterrupt:
            progress.close()
            print("interrupted; results so far:", file=sys.stderr)
        progress.close()

    info = machine_info(args.device)
    info["load_average"] = load_at_start
    if info["load_average"] is not None and info["load_average"] > (os.cpu_count() or 1):
        print(f"note: the machine is busy (load average {info['load_average']:.1f} on "
              f"{os.cpu_count()} CPUs): these timings are not reliable")
    print(f"rnnkit {info['rnnkit']} vs torch.nn, torch {info['torch']}, {args.device}"
          f"{' (' + info['gpu'] + ')' if 'gpu' in info else ''}, {args.dtype}, "
          f"{info['threads']} threads, num_layers={args.num_layers}"
          f"{', bidirectional' if args.bidirectional else ''}; median times; "
          "ratio = torch / rnnkit (above 1: rnnkit faster)")
    print(format_table(results))
    notes = sorted({str(w.message) for w in caught if str(w.message).startswith("rnnkit:")})
    for note in notes:
        print(f"note: {note}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": {k: v for k, v in vars(args).items()
                                                 if k not in ("sizes", "modules")},
                       "results": [r.to_dict() for r in results]}, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _main_calls(args) -> int:
    """`--calls`: the per-call section (rnnkit/bench_calls.py), on the CPU."""
    if args.device != "cpu":
        raise SystemExit("--calls times CPU calls; pass --device cpu")
    dtypes = (args.dtype,) if args.dtype else ("float32", "float64")
    modes = MODES if args.mode == "both" else (args.mode,)
    cases = bench_calls.call_grid(dtypes=dtypes, modes=modes)
    budget = args.budget or 240.0
    deadline = time.perf_counter() + budget
    progress = _Progress(len(cases))
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the path column names a reference row
        for index, case in enumerate(cases, 1):
            progress.update(index, case)
            row_budget = max(deadline - time.perf_counter(), 0.0) / (len(cases) - index + 1)
            results.append(bench_calls.run_call_case(case, budget_s=row_budget,
                                                     repeats=args.repeats))
    progress.close()
    info = machine_info(args.device)
    print(f"rnnkit {info['rnnkit']} vs torch.nn, torch {info['torch']}, cpu, "
          f"{info['threads']} threads; microseconds per call (median); "
          "ratio = torch / rnnkit (above 1: rnnkit faster)")
    print(bench_calls.format_call_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": [r.to_dict() for r in results]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
