"""Export a model that holds rnnkit modules to ONNX, run it in onnxruntime, compare.

A small sequence tagger (a bidirectional LSTM stack, then a GRU and a linear layer) is
exported with torch.onnx.export as it is, with the time and batch axes dynamic: with
the default exporter (through torch.export) and with the TorchScript one. Each file is
run in onnxruntime on new inputs of other lengths and batch sizes and compared with
the PyTorch model; the recurrent layers are ONNX's own LSTM and GRU nodes.

    pip install "rnnkit[export]"      # onnx, onnxscript, onnxruntime
    python examples/export_onnx.py --out /tmp/tagger
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import warnings

import torch
from torch import nn

import rnnkit


class Tagger(nn.Module):
    def __init__(self, features: int, hidden: int, tags: int):
        super().__init__()
        self.lstm = rnnkit.LSTM(features, hidden, num_layers=2, bidirectional=True,
                                batch_first=True)
        self.gru = rnnkit.GRU(2 * hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, tags)

    def forward(self, x):  # x [batch, steps, features] -> scores [batch, steps, tags]
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.head(y)


def export(model, x, path: str, dynamo: bool) -> None:
    if dynamo:
        batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["scores"],
                          dynamic_shapes={"x": {0: batch, 1: steps}})
    else:
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["scores"],
                          dynamo=False, dynamic_axes={"x": {0: "batch", 1: "steps"}})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tagger", help="path prefix of the .onnx files")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--tags", type=int, default=5)
    args = parser.parse_args(argv)
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    model = Tagger(args.features, args.hidden, args.tags).eval()
    failures = 0
    for dynamo in (True, False):
        name = "default exporter" if dynamo else "TorchScript exporter"
        path = f"{args.out}-{'dynamo' if dynamo else 'torchscript'}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on its exporters, not ours
            export(model, torch.randn(3, 7, args.features), path, dynamo)
        nodes = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        worst = 0.0
        for batch, steps in ((1, 20), (8, 3), (5, 11)):
            x = torch.randn(batch, steps, args.features)
            (scores,) = session.run(None, {"x": x.numpy()})
            with torch.no_grad():
                expected = model(x)
            worst = max(worst, (torch.from_numpy(scores) - expected).abs().max().item())
        ok = worst < 1e-5 and nodes["LSTM"] == 2 and nodes["GRU"] == 1
        failures += not ok
        # (The default exporter writes the weights beside the graph, in path + ".data".)
        size = sum(os.path.getsize(p) for p in (path, path + ".data") if os.path.exists(p))
        print(f"{name}: {path} ({size // 1024} KiB), "
              f"LSTM nodes {nodes['LSTM']}, GRU nodes {nodes['GRU']}; onnxruntime vs PyTorch, "
              f"largest difference {worst:.1e} {'ok' if ok else 'MISMATCH'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
