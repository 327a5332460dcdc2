"""One tiny case per rnnkit op on the GPU, each checked against a reference: the first stage
of tools/gpu_validate.sh, which runs it under `timeout 60`.

    python tools/gpu_smoke.py [--device cuda|cpu] [--only standard|persistent]

Standard path: RNN (tanh and relu), GRU and LSTM (with and without a projection, two layers,
bidirectional, packed), RNNCell, GRUCell and LSTMCell, forward and backward, against torch.nn
on the same device from the same weights. Persistent kernels: the LSTM and GRU layer ops, one
and two directions, fp32, bf16 and fp16, against the reference layer ops (rnnkit.reference).
One line per case, "ok" or what failed, then a summary; the exit status is the number of
failed cases (0: all passed). Without a CUDA device it runs the standard cases on the CPU and
reports the persistent ones as skipped (the dry run of the stage).

Every case is small (T <= 6, B <= 24, H <= 40) so that the whole run takes seconds once the
CUDA context exists: a case that takes long is a hang, which the persistent kernels' bounded
barrier turns into a CUDA error within a second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

# The CUDA kernels are off by default until validated; this script exercises them.
os.environ.setdefault("RNNKIT_CUDA_KERNELS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import _extension, ops, reference  # noqa: E402


def _same(a, b, tol, what):
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
    torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol, msg=what)


def _pair(kind, device, seed, **kwargs):
    torch.manual_seed(seed)
    theirs = getattr(nn, kind)(**kwargs).to(device)
    ours = getattr(rnnkit, kind)(**kwargs).to(device)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def standard_case(kind, device, seed, packed=False, **kwargs):
    """Forward and backward of one module against torch.nn's: outputs, input and weight
    gradients. Also checks that rnnkit ran a compiled kernel, not its fallback."""
    cell = kind.endswith("Cell")
    ours, theirs = _pair(kind, device, seed, **kwargs)
    T, B = 5, 3
    I = kwargs["input_size"]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, I, generator=g) if cell else torch.randn(T, B, I, generator=g)
    x = x.to(device)
    lengths = torch.tensor([T, 2, 4])

    def run(module):
        leaf = x.clone().requires_grad_(True)
        inp = pack_padded_sequence(leaf, lengths, enforce_sorted=False) if packed else leaf
        out = module(inp)
        if cell:  # h, or LSTMCell's (h, c)
            tensors = list(out) if isinstance(out, tuple) else [out]
        else:  # (output, h_n) or (output, (h_n, c_n))
            output, hx = out
            if packed:
                output = pad_packed_sequence(output)[0]
            tensors = [output, *(hx if isinstance(hx, tuple) else (hx,))]
        loss = sum((t.float() * (k + 1)).sum() for k, t in enumerate(tensors))
        grads = torch.autograd.grad(loss, [leaf, *module.parameters()])
        return tensors, grads

    with ops.record_paths() as paths:
        got, got_grads = run(ours)
    if device == "cuda" and (not paths or any(p[2] != "compiled" for p in paths)):
        raise AssertionError(f"did not run the CUDA kernels: {paths}")
    want, want_grads = run(theirs)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        _same(a, b, 1e-4, f"output {k}")
    for k, (a, b) in enumerate(zip(got_grads, want_grads, strict=True)):
        _same(a, b, 1e-4, f"gradient {k}")


STANDARD = [
    ("RNN tanh", dict(kind="RNN", input_size=7, hidden_size=9)),
    ("RNN relu", dict(kind="RNN", input_size=7, hidden_size=9, nonlinearity="relu")),
    ("GRU", dict(kind="GRU", input_size=7, hidden_size=9)),
    ("LSTM", dict(kind="LSTM", input_size=7, hidden_size=9)),
    ("LSTM proj_size=4", dict(kind="LSTM", input_size=7, hidden_size=9, proj_size=4)),
    ("LSTM 2 layers bidirectional packed",
     dict(kind="LSTM", input_size=7, hidden_size=9, num_layers=2, bidirectional=True,
          packed=True)),
    ("GRU bidirectional packed",
     dict(kind="GRU", input_size=7, hidden_size=9, bidirectional=True, packed=True)),
    ("RNNCell", dict(kind="RNNCell", input_size=7, hidden_size=9)),
    ("GRUCell", dict(kind="GRUCell", input_size=7, hidden_size=9)),
    ("LSTMCell", dict(kind="LSTMCell", input_size=7, hidden_size=9)),
]

PERSISTENT_TOL = {torch.float32: 1e-4, torch.bfloat16: 4e-2, torch.float16: 6e-3}


def persistent_case(cell, dtype, directions, seed, B=5):
    """The persistent layer op against the reference layer op (float64 for float32 inputs,
    float32 otherwise), on inputs already rounded to dtype; with two directions the second
    runs reversed in the same launch. B <= 16 runs the small-batch kernels, B = 24 the
    large-batch ones (see pick_kernel)."""
    T, I, H = 6, 24, 40
    G = 4 if cell == "lstm" else 3
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to("cuda", dtype)

    x = r(T, B, I)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = T, 0  # the longest sequence, and one with no step
    lengths = lengths.to("cuda")
    dirs = []
    for _ in range(directions):
        d = dict(h0=r(B, H, scale=0.5), w_ih=r(G * H, I, scale=H ** -0.5),
                 w_hh=r(G * H, H, scale=H ** -0.5), b_ih=r(G * H, scale=0.1),
                 b_hh=r(G * H, scale=0.1))
        if cell == "lstm":
            d["c0"] = r(B, H, scale=0.5)
        dirs.append(d)
    fits, reason, _ = torch.ops.rnnkit.persistent_plan_current_device(cell, B, H, H, dtype,
                                                                      directions)
    if not fits:
        raise AssertionError(f"the planner refused a tiny case: {reason}")

    def args(d):
        if cell == "lstm":
            return (d["h0"], d["c0"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
        return (d["h0"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])

    if directions == 1:
        if cell == "lstm":
            got = torch.ops.rnnkit.lstm_layer_persistent(x, lengths, *args(dirs[0]), None, False)
        else:
            got = torch.ops.rnnkit.gru_layer_persistent(x, lengths, *args(dirs[0]), False)
        gots = [got]
    else:
        op = (torch.ops.rnnkit.lstm_bidirectional_layer_persistent if cell == "lstm"
              else torch.ops.rnnkit.gru_bidirectional_layer_persistent)
        got = op(x, lengths, *args(dirs[0]), *args(dirs[1]))
        half = len(got) // 2
        gots = [got[:half], got[half:]]
    torch.cuda.synchronize()
    wide = torch.float64 if dtype == torch.float32 else torch.float32
    for reverse, (d, got) in enumerate(zip(dirs, gots, strict=True)):
        up = [t.to(wide) for t in args(d)]
        if cell == "lstm":
            want = reference.lstm_layer(x.to(wide), lengths, *up, None, bool(reverse))
        else:
            want = reference.gru_layer(x.to(wide), lengths, *up, bool(reverse))
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            _same(a, b, PERSISTENT_TOL[dtype], f"direction {reverse} output {k}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=["standard", "persistent"])
    args = parser.parse_args(argv)
    # float32 in full precision on both sides: cuDNN would otherwise run torch.nn's float32
    # RNNs on TF32 tensor cores, far outside the tolerance (as tests/conftest.py does).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if not _extension.loaded():
        print(f"rnnkit._C did not load: {_extension.LOAD_ERROR}")
        return 1
    cases = []
    if args.only != "persistent":
        for seed, (name, spec) in enumerate(STANDARD):
            spec = dict(spec)
            kind = spec.pop("kind")
            cases.append((f"standard {name}", lambda k=kind, s=spec, n=seed:
                          standard_case(k, args.device, n, **s)))
    if args.only != "standard":
        for cell in ("lstm", "gru"):
            for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16),
                                 ("fp16", torch.float16)):
                for directions, B in ((1, 5), (2, 5), (1, 24)):
                    name = f"persistent {cell} {dname} {directions} direction(s) B={B}"
                    seed = len(cases)
                    cases.append((name, None if args.device != "cuda" else
                                  lambda c=cell, d=dtype, n=directions, s=seed, b=B:
                                  persistent_case(c, d, n, s, b)))
    failed = skipped = passed = 0
    start = time.perf_counter()
    for name, fn in cases:
        if fn is None:
            print(f"{name}: skipped (no CUDA device)", flush=True)
            skipped += 1
            continue
        t0 = time.perf_counter()
        try:
            fn()
            passed += 1
            print(f"{name}: ok ({time.perf_counter() - t0:.2f} s)", flush=True)
        except Exception as exc:  # noqa: BLE001 (every failure is a result of this run)
            failed += 1
            print(f"{name}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                  flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
            if "CUDA error" in str(exc) or "illegal" in str(exc):
                print("the CUDA context is lost: stopping here", flush=True)
                break
    not_run = len(cases) - passed - failed - skipped
    print(f"smoke on {args.device}: {passed} ok, {failed} failed, {skipped} skipped, "
          f"{not_run} not run, in {time.perf_counter() - start:.1f} s")
    return failed


if __name__ == "__main__":
    sys.exit(main())
