"""python -m rnnkit.bench: its command line, its table and its JSON (no timings asserted)."""

import json
import pathlib
import subprocess
import sys

import pytest
import torch

from rnnkit import bench

TINY = ["--sizes", "3:2:4:5", "--repeats", "1", "--threads", "1"]


def test_run_writes_a_row_per_case_to_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(TINY + ["--modules", "lstm,GRU", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [(r["module"], r["mode"]) for r in rows] == [
        ("LSTM", "infer"), ("LSTM", "train"), ("GRU", "infer"), ("GRU", "train")]
    for row in rows:
        assert row["error"] is None
        assert row["path"] in ("compiled", "reference")
        assert row["size"] == {"T": 3, "B": 2, "I": 4, "H": 5}
        assert row["repeats"] == 1 and row["torch_ms"] > 0 and row["rnnkit_ms"] > 0
        assert row["ratio"] == pytest.approx(row["torch_ms"] / row["rnnkit_ms"])
        # The table names the row's path next to its numbers.
        assert any(line.startswith(row["module"]) and row["mode"] in line and row["path"] in line
                   for line in printed.splitlines())
    assert data["machine"]["threads"] == 1


def _modules_of(*runs):
    """The modules of make_pair's callables, which own them: reached through their closures."""
    return [next(c.cell_contents for c in fn.__closure__
                 if isinstance(c.cell_contents, bench.nn.Module)) for fn in runs]


def test_train_mode_leaves_equal_gradients_on_both_sides():
    case = bench.Case("GRU", bench.Size(4, 3, 5, 6), "train", num_layers=2, bidirectional=True)
    run_torch, run_rnnkit = bench.make_pair(case)
    modules = _modules_of(run_torch, run_rnnkit)
    run_torch()
    run_rnnkit()
    for (name, p), q in zip(modules[0].named_parameters(), modules[1].parameters()):
        bench.torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_time_pair_alternates_and_counts():
    calls = []
    a_times, b_times = bench.time_pair(lambda: calls.append("a"), lambda: calls.append("b"),
                                       warmup=1, repeats=4)
    assert len(a_times) == len(b_times) == 4
    # warm-up a b, then a b, b a, a b, b a: the one who goes first alternates.
    assert "".join(calls) == "ab" + "ab" + "ba" + "ab" + "ba"


def test_error_row_instead_of_exception():
    case = bench.Case("LSTM", bench.Size(3, 2, 4, 5), "sideways")
    result = bench.run_case(case, repeats=1)
    assert result.path == "error" and "mode" in result.error
    assert "error:" in bench.format_table([result])


@pytest.mark.parametrize("argv,message", [
    (["--sizes", "1:2:3"], "T:B:I:H"),
    (["--sizes", "1:2:x:4"], "integers"),
    (["--sizes", "0:2:3:4"], "positive"),
    (["--modules", "LSTM,TRANSFORMER"], "comma-separated list"),
    (["--dtype", "int8"], "invalid choice"),
    (["--mode", "fast"], "invalid choice"),
    (["--repeats", "0"], "positive integer"),
    (["--budget", "-1"], "positive number"),
    (["--json", "/no/such/dir/out.json"], "no such directory"),
])
def test_bad_flags_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_module_entry_point_prints_the_table():
    done = subprocess.run([sys.executable, "-m", "rnnkit.bench", *TINY, "--modules", "RNN",
                           "--mode", "infer"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout and "RNN" in done.stdout
    assert "Traceback" not in done.stderr


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")  # the optional extra rnnkit[bench]; CI installs it
    out = tmp_path / "speedup.png"
    assert bench.main(TINY + ["--modules", "GRU", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calls_section_writes_a_row_per_call_case(tmp_path, monkeypatch, capsys):
    # A small grid: the section's own, cut down (the full one takes minutes).
    grid = bench.bench_calls.call_grid
    monkeypatch.setattr(bench.bench_calls, "call_grid",
                        lambda **kw: grid(modules=("LSTMCell", "GRU"), batches=(2,),
                                          hidden=(8,), **kw))
    out = tmp_path / "calls.json"
    assert bench.main(["--calls", "--repeats", "1", "--threads", "1", "--dtype", "float64",
                       "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["module"], r["mode"]) for r in rows] == [
        ("LSTMCell", "infer"), ("LSTMCell", "train"), ("GRU", "infer"), ("GRU", "train")]
    for row in rows:
        assert row["dtype"] == "float64" and row["B"] == 2 and row["H"] == 8
        assert row["path"] == "compiled" and row["steps"] >= 1
        assert row["ratio"] == pytest.approx(row["torch_us"] / row["rnnkit_us"])
    printed = capsys.readouterr().out
    assert "| GRU T=1 | 2 | 8 | float64 | forward+backward |" in printed


@pytest.mark.parametrize("options", [
    dict(proj_size=3),
    dict(packed=True, bidirectional=True),
    dict(packed=True, proj_size=2, num_layers=2),
])
def test_lstm_options_leave_equal_gradients_on_both_sides(options):
    """The sweep's options (projection, packed input) build equal pairs and run them."""
    case = bench.Case("LSTM", bench.Size(5, 3, 4, 6), "train", **options)
    run_torch, run_rnnkit = bench.make_pair(case)
    modules = _modules_of(run_torch, run_rnnkit)
    run_torch()
    run_rnnkit()
    for (name, a), (_, b) in zip(*(m.named_parameters() for m in modules)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_relu_case_describes_itself():
    case = bench.Case("RNN", bench.Size(3, 2, 4, 5), "infer", nonlinearity="relu", packed=True,
                      dtype="float64")
    assert case.describe() == "RNN-relu packed float64"
    assert bench.run_case(case, repeats=1).error is None


def test_cpu_sweep_samples_and_writes_its_results(tmp_path, capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import cpu_sweep
    finally:
        sys.path.pop(0)
    grid = cpu_sweep.grid()
    assert len(grid) == len(set(grid))  # every point once
    sample = cpu_sweep.sample(grid, 5, 0.01, seed=3)
    assert len(sample) == 5 and all(cpu_sweep.gflop(c) <= 0.01 for c in sample)
    out = tmp_path / "sweep.md"
    assert cpu_sweep.main(["--cases", "3", "--max-gflop", "0.001", "--budget", "0.01",
                           "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "minimum ratio" in text and "geometric mean" in text
    assert text.count("\n| ") == 3 + 1  # the header and a row per case


def test_short_sequences_prints_a_row_per_case(capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import short_sequences
    finally:
        sys.path.pop(0)
    short_sequences.main(["--cells", "GRU,LSTM", "--dtypes", "float64", "--steps", "2",
                          "--batches", "1", "--hidden", "8,1024", "--rounds", "1",
                          "--threads", "1", "--faults"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| GRU", "| LSTM"))]
    assert len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) > 0 and float(cells[5]) > 0 and float(cells[6]) > 0
        if cells[3] == "1024":  # 24-32 MB packs: their memory is kept, no fault per call
            assert float(cells[7]) < 100, row


def test_quantized_compare_writes_a_row_per_case(tmp_path, capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import quantized_compare
    finally:
        sys.path.pop(0)
    out = tmp_path / "q.md"
    quantized_compare.main(["--modules", "LSTM,GRU", "--batches", "1", "--hidden", "16",
                            "--steps", "3", "--budget", "0.01", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| GRU", "| LSTM"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "3:1:16" and all(float(c) > 0 for c in cells[2:])


def test_cudnn_algorithm_follows_torchs_rule():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import cudnn_algorithm as ca
    finally:
        sys.path.pop(0)
    h100 = dict(capability=(9, 0), sm_count=132)

    def algo(mode, dtype, forward=True, **kw):
        sizes = dict(input_size=512, hidden_size=512, batch=64, steps=100)
        sizes.update(kw)
        return ca.cudnn_rnn_algorithm(mode, dtype, forward=forward, **sizes, **h100)

    # The fastrnns default: persistent only in float16, and never for GRU.
    assert algo("LSTM", torch.float16) == ca.PERSIST_STATIC
    assert algo("LSTM", torch.float32) == algo("LSTM", torch.bfloat16) == ca.STANDARD
    assert algo("GRU", torch.float16) == ca.STANDARD
    assert algo("LSTM", torch.float16, batch=1) == ca.STANDARD  # B not a multiple of 8
    assert algo("LSTM", torch.float16, batch=136) == ca.STANDARD  # B above 128
    assert algo("LSTM", torch.float16, input_size=500) == ca.STANDARD
    assert algo("LSTM", torch.float16, num_layers=2) == ca.STANDARD
    assert algo("LSTM", torch.float16, bidirectional=True) == ca.STANDARD
    assert algo("RNN_TANH", torch.float16, batch=96, hidden_size=896) == ca.STANDARD
    assert algo("RNN_TANH", torch.float16, batch=88, hidden_size=896) == ca.PERSIST_STATIC
    # Small hidden sizes: the forward up to 192 (LSTM, GRU), the backward up to 128.
    assert algo("GRU", torch.float32, hidden_size=192) == ca.PERSIST_STATIC_SMALL_H
    assert algo("GRU", torch.float32, hidden_size=192, forward=False) == ca.STANDARD
    assert algo("LSTM", torch.bfloat16, hidden_size=128, forward=False) == \
        ca.PERSIST_STATIC_SMALL_H
    assert algo("RNN_RELU", torch.float32, hidden_size=384) == ca.PERSIST_STATIC_SMALL_H
    assert algo("LSTM", torch.float64, hidden_size=128) == ca.STANDARD
    # Packed input and projections: always the standard algorithm.
    assert algo("LSTM", torch.float16, packed=True) == ca.STANDARD
    assert algo("LSTM", torch.float32, hidden_size=128, proj_size=64) == ca.STANDARD
    # Devices: sm_86 and small sm_80 parts keep the standard algorithm for float16.
    assert ca.cudnn_rnn_algorithm("LSTM", torch.float16, input_size=512, hidden_size=512,
                                  batch=64, steps=100, capability=(8, 6),
                                  sm_count=84) == ca.STANDARD
    assert ca.describe("LSTM", torch.float32, True, input_size=128, hidden_size=128, batch=8,
                       steps=10) == "PERSIST_STATIC_SMALL_H / PERSIST_STATIC_SMALL_H"
