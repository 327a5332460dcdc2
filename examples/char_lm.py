"""A character-level language model over Python's own standard library, trained twice.

The same model, from the same seed, on the same batches, is trained once with
torch.nn.LSTM and once after `rnnkit.convert(model)`. The two loss curves should
lie on top of each other (they differ only by floating-point summation order);
the time per epoch shows what the kernels buy.

    python examples/char_lm.py                       # about a minute and a half on 2 CPU cores
    python examples/char_lm.py --hidden 512 --layers 2 --epochs 10 --device cuda
    python examples/char_lm.py --int8    # then the trained model with int8 weights (CPU)
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import sysconfig
import time
import warnings

import torch
from torch import nn

import rnnkit
from rnnkit import ops
from rnnkit.bench import positive_int


def load_stdlib_text(max_chars: int) -> str:
    """The source of the standard library's top-level modules, in name order, up to
    `max_chars` characters."""
    root = sysconfig.get_paths()["stdlib"]
    pieces, total = [], 0
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        pieces.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not pieces:
        sys.exit(f"no Python sources found under {root}")
    return "".join(pieces)[:max_chars]


class CharLM(nn.Module):
    """Embedding -> LSTM -> linear read-out over the vocabulary."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        output, _ = self.lstm(self.embed(tokens))
        return self.out(output)


def batches(data: torch.Tensor, steps: int, batch: int, length: int, seed: int):
    """`steps` batches of random windows: (inputs, targets shifted by one)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - length - 1, (batch,), generator=generator)
        windows = torch.stack([data[s:s + length + 1] for s in starts.tolist()])
        yield windows[:, :-1], windows[:, 1:]


def evaluate(model, data, args, device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches(data, args.eval_steps, args.batch, args.seq_len, seed=12345):
            logits = model(x.to(device))
            total += nn.functional.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(),
                                                 reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


class Run:
    """One of the two trainings: a model, its optimizer and what it has recorded."""

    def __init__(self, label, model, args):
        self.label, self.model = label, model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.losses, self.epoch_times, self.valid_losses = [], [], []


def train_epoch(run, epoch, train_data, valid_data, args, device):
    """One epoch of `run`: the same batches for both runs (seeded by the epoch)."""
    model = run.model
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    epoch_batches = batches(train_data, args.steps, args.batch, args.seq_len,
                            seed=args.seed * 1000 + epoch)
    for step, (x, y) in enumerate(epoch_batches):
        logits = model(x.to(device))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        run.optimizer.step()
        run.losses.append(loss.item())
        if sys.stderr.isatty():
            print(f"\r{run.label}: epoch {epoch + 1} step {step + 1}/{args.steps} "
                  f"loss {run.losses[-1]:.3f}", end="", file=sys.stderr, flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    run.epoch_times.append(time.perf_counter() - start)
    run.valid_losses.append(evaluate(model, valid_data, args, device))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    mean = sum(run.losses[-args.steps:]) / args.steps
    print(f"{run.label:>8}  epoch {epoch + 1:2d}  {run.epoch_times[-1]:7.2f} s  "
          f"train loss {mean:.4f}  valid loss {run.valid_losses[-1]:.4f} "
          f"({run.valid_losses[-1] / math.log(2):.3f} bits/char)", flush=True)


def report_int8(torch_model, model, valid_data, args) -> None:
    """The validation loss of the trained models with float32 weights and with int8
    weights: rnnkit's (rnnkit.quantize) and torch's (quantize_dynamic)."""
    f32 = evaluate(model, valid_data, args, torch.device("cpu"))
    int8 = evaluate(rnnkit.quantize(copy.deepcopy(model)).eval(), valid_data, args,
                    torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation of quantized tensors
        dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(torch_model), {nn.LSTM},
                                                         dtype=torch.qint8)
        torch_f32 = evaluate(torch_model, valid_data, args, torch.device("cpu"))
        torch_int8 = evaluate(dynamic, valid_data, args, torch.device("cpu"))
    print(f"validation loss with int8 LSTM weights: rnnkit {f32:.4f} -> {int8:.4f} "
          f"({100 * (int8 - f32) / f32:+.2f}%), torch.nn {torch_f32:.4f} -> {torch_int8:.4f} "
          f"({100 * (torch_int8 - torch_f32) / torch_f32:+.2f}%, quantize_dynamic)")


def kernel_path(model, vocab, device) -> str:
    """'compiled' or 'reference': what rnnkit runs for this model on this device."""
    with ops.record_paths() as records, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            model(torch.zeros(1, 2, dtype=torch.long, device=device))
    paths = {path for _op, _device, path in records}
    return paths.pop() if len(paths) == 1 else "mixed"


def plot(runs, args, filename):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed, so no plot (pip install 'rnnkit[bench]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        left.plot(range(1, len(run.losses) + 1), run.losses, label=run.label, linewidth=1)
    left.set_xlabel("step")
    left.set_ylabel("training loss (nats/char)")
    left.set_title("loss")
    left.legend()
    epochs = range(1, args.epochs + 1)
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        right.bar([e + (k - (len(runs) - 1) / 2) * width for e in epochs], run.epoch_times,
                  width, label=run.label)
    right.set_xticks(list(epochs))
    right.set_xlabel("epoch")
    right.set_ylabel("seconds")
    right.set_title("time per epoch")
    right.legend()
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    plt.close(fig)
    print(f"wrote {filename}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=positive_int, default=200_000,
                        help="characters of stdlib source to use (default: 200000)")
    parser.add_argument("--embed", type=positive_int, default=32)
    parser.add_argument("--hidden", type=positive_int, default=256)
    parser.add_argument("--layers", type=positive_int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="between layers; the two runs then draw different masks and "
                             "their losses agree only on average")
    parser.add_argument("--seq-len", type=positive_int, default=64)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--steps", type=positive_int, default=100, help="steps per epoch")
    parser.add_argument("--eval-steps", type=positive_int, default=5)
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda if available, else cpu")
    parser.add_argument("--plot", default="char_lm.png", help="where to save the plot")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--int8", action="store_true",
                        help="also evaluate the trained models with int8 LSTM weights (CPU)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.dropout <= 1.0:
        parser.error("--dropout must be in [0, 1]")
    if args.int8 and args.device == "cuda":
        parser.error("--int8 runs on the CPU")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.chars < 10 * (args.seq_len + 1):
        parser.error("--chars is too small for --seq-len")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)

    text = load_stdlib_text(args.chars)
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    data = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * data.numel())
    train_data, valid_data = data[:split], data[split:]
    print(f"{len(text):,} characters of {sysconfig.get_paths()['stdlib']}, vocabulary "
          f"{len(vocab)}; LSTM {args.layers}x{args.hidden}, {args.epochs} epochs of "
          f"{args.steps} steps, batch {args.batch}x{args.seq_len}, {device}, "
          f"{torch.get_num_threads()} threads")

    torch.manual_seed(args.seed)
    initial = CharLM(len(vocab), args.embed, args.hidden, args.layers, args.dropout)
    # Same starting weights for both runs: rnnkit's is the torch model, converted.
    runs = [Run("torch.nn", copy.deepcopy(initial).to(device), args),
            Run("rnnkit", rnnkit.convert(copy.deepcopy(initial).to(device)), args)]
    print(f"rnnkit runs its {kernel_path(runs[1].model, vocab, device)} path here")
    # Epochs alternate between the two runs, so that other load on the machine
    # falls on both alike. Without dropout neither run draws random numbers.
    torch.manual_seed(args.seed + 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="rnnkit: running")
        for epoch in range(args.epochs):
            for run in runs:
                train_epoch(run, epoch, train_data, valid_data, args, device)

    reference, ours = runs
    gap = max(abs(a - b) for a, b in zip(reference.losses, ours.losses))
    t_epoch, r_epoch = statistics.median(reference.epoch_times), statistics.median(ours.epoch_times)
    print(f"\nmedian time per epoch: torch.nn {t_epoch:.2f} s, rnnkit {r_epoch:.2f} s "
          f"(speedup {t_epoch / r_epoch:.2f}x)")
    print(f"final validation loss: torch.nn {reference.valid_losses[-1]:.4f}, "
          f"rnnkit {ours.valid_losses[-1]:.4f}; largest difference of any training step's "
          f"loss: {gap:.2e}")
    if args.dropout == 0 and gap > 0.05 * max(reference.losses[-1], 1e-3):
        print("WARNING: the two losses do not track each other")
    if args.int8 and device.type == "cpu":
        report_int8(reference.model, ours.model, valid_data, args)
    if not args.no_plot:
        plot(runs, args, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
