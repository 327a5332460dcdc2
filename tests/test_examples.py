"""The examples run as a user would run them (tiny settings), and say what they should."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_char_lm_trains_both_ways_to_the_same_losses(tmp_path):
    plot = tmp_path / "char_lm.png"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "char_lm.py"), "--chars", "20000",
         "--embed", "8", "--hidden", "16", "--layers", "2", "--seq-len", "16", "--batch", "4",
         "--epochs", "2", "--steps", "3", "--eval-steps", "1", "--threads", "1",
         "--plot", str(plot)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rnnkit runs its compiled path here" in done.stdout
    gap = float(re.search(r"any training step's loss: (\S+)", done.stdout).group(1))
    assert gap < 1e-4, done.stdout  # a few steps of float32: rounding only
    assert "WARNING" not in done.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_export_onnx_runs_the_exported_files_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")  # the optional extra rnnkit[export]; CI installs it
    pytest.importorskip("onnxscript")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "export_onnx.py"),
         "--out", str(tmp_path / "tagger"), "--hidden", "8"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for exporter in ("default exporter", "TorchScript exporter"):
        line = re.search(f"{exporter}: .*", done.stdout).group(0)
        assert "LSTM nodes 2, GRU nodes 1" in line and line.endswith(" ok"), line
