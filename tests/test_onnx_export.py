"""ONNX export through both of torch's exporters, run in onnxruntime.

Every model here is exported with rnnkit's modules in it, run in onnxruntime on fresh
inputs of other lengths and batch sizes than it was exported with, and compared with
torch.nn holding the same weights. The graphs are checked too: each layer one ONNX
LSTM/GRU/RNN node, nothing of rnnkit's left in them.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from helpers import assert_close, flatten, make_pair, random_input, random_states

onnx = pytest.importorskip("onnx")  # the optional extra rnnkit[export]; CI installs it
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export's default exporter needs it

EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")]
ONNX_OP = {"RNN": "RNN", "GRU": "GRU", "LSTM": "LSTM"}

# (module, constructor arguments) covering every setting the ONNX nodes take: layers,
# directions, batch_first, bias, the nonlinearity, and LSTM's projection.
CONFIGS = [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(batch_first=True, bias=False)),
    ("LSTM", dict(proj_size=3, num_layers=2)),
    ("LSTM", dict(proj_size=2, bidirectional=True, batch_first=True, bias=False)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(batch_first=True, bias=False)),
    ("RNN", dict(nonlinearity="relu", bidirectional=True)),
    ("RNN", dict(num_layers=3, batch_first=True)),
]


def _config_id(config):
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def _hx(h0, c0):
    return h0 if c0 is None else (h0, c0)


class Flat(nn.Module):
    """module(x, hx) with hx's tensors as separate arguments and a flat tuple out, as
    ONNX sees it."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x, h0=None, c0=None):
        if h0 is None:
            return tuple(flatten(self.module(x)))
        return tuple(flatten(self.module(x, _hx(h0, c0))))


class PackedFlat(nn.Module):
    """The usual packed-input pattern around a module: pack, run, pad back."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x, lengths, h0=None, c0=None):
        packed = pack_padded_sequence(x, lengths, batch_first=self.module.batch_first,
                                      enforce_sorted=False)
        out, h = self.module(packed, None if h0 is None else _hx(h0, c0))
        y, _ = pad_packed_sequence(out, batch_first=self.module.batch_first,
                                   total_length=x.shape[1 if self.module.batch_first else 0])
        return (y, *flatten(h))


def _export(model, args, names, dims, path, dynamo: bool):
    """torch.onnx.export with `dims` ({input name: {axis: dim name}}) dynamic; `names`
    are the names of the model's arguments too."""
    if dynamo:
        symbols = {}
        shapes = {name: {axis: symbols.setdefault(n, torch.export.Dim(n)) for axis, n in
                         dims.get(name, {}).items()} or None for name in names}
        torch.onnx.export(model, args, path, dynamo=True, input_names=list(names),
                          dynamic_shapes=shapes)
    else:
        torch.onnx.export(model, args, path, dynamo=False, input_names=list(names),
                          dynamic_axes=dims)
    graph = onnx.load(path).graph
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return graph, session


def _run(session, names, args):
    return [torch.from_numpy(o) for o in
            session.run(None, {n: a.numpy() for n, a in zip(names, args)})]


def _assert_outputs(actual, expected):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, what=f"output {i}")


def _assert_standard_nodes(graph, op_type: str | None, count: int):
    """Only standard ONNX operators; `count` nodes of op_type (one per layer), no loop."""
    types = [n.op_type for n in graph.node]
    assert all(n.domain in ("", "ai.onnx") for n in graph.node), \
        sorted({f"{n.domain}::{n.op_type}" for n in graph.node})
    assert "Loop" not in types and "Scan" not in types
    if op_type is not None:
        assert types.count(op_type) == count, types


def _sizes() -> dict:
    return dict(input_size=random.randint(1, 6), hidden_size=random.randint(4, 8))


def _time_batch_axes(module) -> dict:
    return {0: "batch", 1: "steps"} if module.batch_first else {0: "steps", 1: "batch"}


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("with_states", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_module_exports_as_onnx_nodes_that_match_torch(config, with_states, dynamo, tmp_path):
    name, kwargs = config
    ref, ours = make_pair(name, **_sizes(), **kwargs)
    ref.eval(), ours.eval()
    # Exported at one length and batch size (2 or more: torch.export specialises 1) ...
    x = random_input(ours, steps=random.randint(2, 5), batch=random.randint(2, 4))
    states = random_states(ours, x.shape[0 if ours.batch_first else 1]) if with_states else []
    names = ["x"] + ["h0", "c0"][:len(states)]
    dims = {"x": _time_batch_axes(ours), **{n: {1: "batch"} for n in names[1:]}}
    graph, session = _export(Flat(ours).eval(), (x, *states), names, dims, tmp_path / "m.onnx", dynamo)
    _assert_standard_nodes(graph, ONNX_OP[name], ours.num_layers)
    # ... run at others.
    for steps, batch in ((random.randint(1, 7), random.randint(1, 5)), (6, 1)):
        x = random_input(ours, steps, batch)
        states = random_states(ours, batch) if with_states else []
        with torch.no_grad():
            expected = list(Flat(ref)(x, *states))
        _assert_outputs(_run(session, names, (x, *states)), expected)


@pytest.mark.parametrize("with_states", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("config", [
    ("LSTM", dict(bidirectional=True)),
    ("LSTM", dict(proj_size=2, bidirectional=True, num_layers=2, batch_first=True)),
    ("GRU", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("RNN", dict(bidirectional=True, bias=False)),
], ids=_config_id)
def test_packed_input_exports_with_sequence_lens(config, with_states, tmp_path):
    # The TorchScript exporter: torch.export cannot trace packing (see the next test).
    name, kwargs = config
    ref, ours = make_pair(name, **_sizes(), **kwargs)
    ref.eval(), ours.eval()
    batch = random.randint(2, 4)
    x = random_input(ours, steps=5, batch=batch)
    lengths = torch.randint(1, 6, (batch,))
    states = random_states(ours, batch) if with_states else []
    names = ["x", "lengths"] + ["h0", "c0"][:len(states)]
    dims = {"x": _time_batch_axes(ours), "lengths": {0: "batch"},
            **{n: {1: "batch"} for n in names[2:]}}
    graph, session = _export(PackedFlat(ours).eval(), (x, lengths, *states), names, dims,
                             tmp_path / "m.onnx", dynamo=False)
    _assert_standard_nodes(graph, ONNX_OP[name], ours.num_layers)
    recurrent = [n for n in graph.node if n.op_type == ONNX_OP[name]]
    assert all(len(n.input) > 4 and n.input[4] for n in recurrent), "no sequence_lens input"
    steps, batch = random.randint(3, 8), random.randint(1, 5)
    x = random_input(ours, steps, batch)
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps  # pad_packed_sequence pads to the longest; total_length to steps
    states = random_states(ours, batch) if with_states else []
    with torch.no_grad():
        expected = list(PackedFlat(ref)(x, lengths, *states))
    _assert_outputs(_run(session, names, (x, lengths, *states)), expected)


def test_packed_input_under_torch_export_names_the_module_and_the_way_out():
    ours = PackedFlat(make_pair("GRU", 3, 4)[1].eval())
    x, lengths = torch.randn(4, 2, 3), torch.tensor([4, 2])
    with pytest.raises(Exception) as info:
        torch.export.export(ours, (x, lengths, torch.zeros(1, 2, 4)), strict=False)
    message = str(info.value)
    assert "rnnkit.GRU: a PackedSequence input cannot be exported" in message
    assert "dynamo=False" in message and "rnnkit.functional" in message


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cell_exports_as_standard_ops_that_match_torch(name, dynamo, tmp_path):
    ref, ours = make_pair(name, random.randint(1, 6), random.randint(2, 8))
    batch = random.randint(2, 4)
    x = torch.randn(batch, ours.input_size)
    states = random_states(ours, batch)
    names = ["x"] + ["h0", "c0"][:len(states)]
    dims = {n: {0: "batch"} for n in names}
    graph, session = _export(Flat(ours).eval(), (x, *states), names, dims, tmp_path / "m.onnx", dynamo)
    _assert_standard_nodes(graph, None, 0)
    batch = random.randint(1, 5)
    x = torch.randn(batch, ours.input_size)
    states = random_states(ours, batch)
    with torch.no_grad():
        expected = list(Flat(ref)(x, *states))
    _assert_outputs(_run(session, names, (x, *states)), expected)


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_unbatched_input_exports(dynamo, tmp_path):
    ref, ours = make_pair("LSTM", 3, 5, num_layers=2)
    x = random_input(ours, steps=4, batch=None)
    graph, session = _export(Flat(ours).eval(), (x,), ["x"], {}, tmp_path / "m.onnx", dynamo)
    _assert_standard_nodes(graph, "LSTM", 2)
    x = random_input(ours, steps=4, batch=None)
    with torch.no_grad():
        expected = list(Flat(ref)(x))
    _assert_outputs(_run(session, ["x"], (x,)), expected)


def test_gru_is_exported_with_reset_after_the_recurrent_matmul(tmp_path):
    # torch.nn's GRU is ONNX's linear_before_reset=1; 0, ONNX's default, is another model.
    _, ours = make_pair("GRU", 3, 4, bidirectional=True)
    for dynamo in (True, False):
        graph, _ = _export(Flat(ours).eval(), (torch.randn(3, 2, 3),), ["x"], {}, tmp_path / "m.onnx",
                           dynamo)
        (gru,) = [n for n in graph.node if n.op_type == "GRU"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gru.attribute}
        assert attrs["linear_before_reset"] == 1
        assert attrs["direction"] == b"bidirectional"


class FunctionalPacked(nn.Module):
    """Padded input and per-sequence lengths given to rnnkit.functional directly: variable
    lengths that torch.export can trace (no PackedSequence)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x, lengths, h0, c0=None):
        m = self.module
        run = {"LSTM": rnnkit.functional.lstm, "GRU": rnnkit.functional.gru}[m.mode]
        kwargs = dict(num_layers=m.num_layers, bias=m.bias, bidirectional=m.bidirectional,
                      lengths=lengths)
        if m.mode == "LSTM":
            kwargs["proj_size"] = m.proj_size
        y, h = run(x, _hx(h0, c0), m._flat_weights, **kwargs)
        return (y, *flatten(h))


@pytest.mark.parametrize("config", [
    ("LSTM", dict(proj_size=2, bidirectional=True, num_layers=2)),
    ("GRU", dict(bidirectional=True)),
], ids=_config_id)
def test_functional_lengths_export_with_sequence_lens_under_the_default_exporter(config,
                                                                                 tmp_path):
    name, kwargs = config
    ref, ours = make_pair(name, **_sizes(), **kwargs)
    ref.eval(), ours.eval()
    batch = random.randint(2, 4)
    x = random_input(ours, steps=5, batch=batch)
    states = random_states(ours, batch)
    names = ["x", "lengths"] + ["h0", "c0"][:len(states)]
    dims = {"x": {0: "steps", 1: "batch"}, "lengths": {0: "batch"},
            **{n: {1: "batch"} for n in names[2:]}}
    graph, session = _export(FunctionalPacked(ours).eval(), (x, torch.full((batch,), 5),
                                                              *states),
                             names, dims, tmp_path / "m.onnx", dynamo=True)
    _assert_standard_nodes(graph, ONNX_OP[name], ours.num_layers)
    steps, batch = random.randint(3, 8), random.randint(1, 5)
    x = random_input(ours, steps, batch)
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps
    states = random_states(ours, batch)
    with torch.no_grad():
        expected = list(PackedFlat(ref)(x, lengths, *states))
    _assert_outputs(_run(session, names, (x, lengths, *states)), expected)


def test_onnx_recurrence_op_passes_opcheck():
    # The op that carries a node through the TorchScript exporter's trace.
    T, B, I, H = 3, 2, 4, 5
    args = (torch.randn(T, B, I), torch.randn(2, 4 * H, I), torch.randn(2, 4 * H, H),
            torch.randn(2, 8 * H), torch.tensor([3, 1], dtype=torch.int32),
            torch.randn(2, B, H), torch.randn(2, B, H), "LSTM", "bidirectional", H, "Tanh")
    torch.library.opcheck(torch.ops.rnnkit.onnx_recurrence.default, args)
