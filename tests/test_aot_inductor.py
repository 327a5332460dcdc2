"""torch.export and AOTInductor: a model holding rnnkit's modules, compiled ahead of time,
runs in a fresh Python process and in a C++ program with rnnkit's compiled kernels inside
it and nothing of rnnkit's Python: its shared library is all the package needs (README,
"Deploying")."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import _extension
from helpers import assert_close, flatten

pytestmark = pytest.mark.skipif(not _extension.loaded(), reason="needs rnnkit._C")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tagger(nn.Module):
    """A bidirectional LSTM stack, a GRU over it, and one LSTMCell step on the last output."""

    def __init__(self, lib, features: int, hidden: int):
        super().__init__()
        self.lstm = lib.LSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = lib.GRU(2 * hidden, hidden, batch_first=True)
        self.cell = lib.LSTMCell(hidden, hidden)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, h = self.gru(y)
        return y, self.cell(y[:, -1], (h[0], h[0]))


# Run in a fresh interpreter: the package and rnnkit's library, loaded with torch's own
# op-library loader, not `import rnnkit`.
_LOADER = textwrap.dedent("""
    import sys, torch
    library, package, data = sys.argv[1:]
    torch.ops.load_library(library)
    model = torch._inductor.aoti_load_package(package)
    inputs = torch.load(data)
    with torch.profiler.profile() as prof:
        outputs = [model(x) for x in inputs]
    ops = sorted({e.name for e in prof.events() if e.name.startswith("rnnkit::")})
    torch.save({"outputs": outputs, "ops": ops, "rnnkit_imported": "rnnkit" in sys.modules}, data)
""")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(package path, the torch.nn twin of the packaged model, feature count)."""
    features, hidden = random.randint(2, 6), random.randint(3, 8)
    ours = Tagger(rnnkit, features, hidden).eval()
    ref = Tagger(nn, features, hidden).eval()
    ref.load_state_dict(ours.state_dict())
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    program = torch.export.export(ours, (torch.randn(3, 5, features),),
                                  dynamic_shapes=({0: batch, 1: steps},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"rnnkit.lstm_layer.default", "rnnkit.gru_layer.default",
            "rnnkit.lstm_cell.default"} <= targets, targets
    path = tmp_path_factory.mktemp("aoti") / "tagger.pt2"
    return torch._inductor.aoti_compile_and_package(program, package_path=str(path)), ref, \
        features


def _library_path() -> str:
    import rnnkit._C as lib
    return os.path.abspath(lib.__file__)


def _assert_matches(got, ref, x):
    with torch.no_grad():
        expected = flatten(ref(x))
    assert len(got) == len(expected)
    for i, (a, e) in enumerate(zip(got, expected)):
        assert_close(a.reshape(e.shape), e, what=f"output {i}")


def test_aoti_package_runs_rnnkit_kernels_in_a_fresh_process(compiled, tmp_path):
    package, ref, features = compiled
    inputs = [torch.randn(random.randint(1, 4), random.randint(1, 7), features) for _ in range(2)]
    data = tmp_path / "data.pt"
    torch.save(inputs, data)
    done = subprocess.run([sys.executable, "-c", _LOADER, _library_path(), package, str(data)],
                          capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)  # away from the source tree's rnnkit/
    assert done.returncode == 0, done.stderr
    result = torch.load(data)
    assert not result["rnnkit_imported"]
    assert {"rnnkit::lstm_layer", "rnnkit::gru_layer", "rnnkit::lstm_cell"} <= set(result["ops"])
    for x, got in zip(inputs, result["outputs"]):
        _assert_matches(flatten(got), ref, x)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the C++ runner")
def test_aoti_package_runs_from_cpp_with_rnnkit_library_alone(compiled, tmp_path):
    # examples/run_aoti_package.cpp: a C++ program, no Python, loads rnnkit's library and
    # the package. Without the library the package cannot find rnnkit's operators.
    package, ref, features = compiled
    from torch.utils import cpp_extension
    runner = tmp_path / "run_aoti_package"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    build = subprocess.run(
        ["g++", "-std=c++20", "-O1", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
         os.path.join(ROOT, "examples", "run_aoti_package.cpp"), "-o", str(runner),
         *[f"-I{p}" for p in cpp_extension.include_paths()],
         *[f"-L{p}" for p in cpp_extension.library_paths()],
         "-ltorch", "-ltorch_cpu", "-lc10", "-ldl"],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(cpp_extension.library_paths()))
    batch, steps = random.randint(1, 4), random.randint(1, 7)
    sizes = [str(batch), str(steps), str(features)]
    done = subprocess.run([str(runner), _library_path(), package, *sizes], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = [torch.tensor([float(v) for v in line.split()[1:]])
           for line in done.stdout.splitlines() if line.startswith("output")]
    x = torch.arange(batch * steps * features, dtype=torch.float32).sin()
    _assert_matches(got, ref, x.reshape(batch, steps, features))
    without = subprocess.run([str(runner), "libm.so.6", package, *sizes], capture_output=True,
                             text=True, timeout=600, env=env)
    assert without.returncode != 0 and "rnnkit::" in without.stderr
