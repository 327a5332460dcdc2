"""Without a working compiled extension rnnkit still gives torch.nn's numbers, through the
reference, and says so once, with the reason."""

import subprocess
import sys
import textwrap

import torch

# Run in a fresh interpreter: rnnkit._C is made unimportable before rnnkit loads it.
SCRIPT = textwrap.dedent("""
    import sys, warnings
    sys.modules["rnnkit._C"] = None  # import of rnnkit._C now raises ImportError
    import torch, rnnkit
    from rnnkit import _extension

    assert not _extension.loaded(), "rnnkit._C loaded although it was made unimportable"
    torch.manual_seed({seed})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("LSTM", "GRU", "RNN"):
            ref = getattr(torch.nn, name)(3, 4, num_layers=2, bidirectional=True).double()
            ours = getattr(rnnkit, name)(3, 4, num_layers=2, bidirectional=True).double()
            ours.load_state_dict(ref.state_dict())
            x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
            got, want = ours(x)[0], ref(x)[0]
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
            gx, = torch.autograd.grad(got.sum(), x)
            wx, = torch.autograd.grad(want.sum(), x)
            torch.testing.assert_close(gx, wx, rtol=1e-9, atol=1e-9)
    messages = [str(w.message) for w in caught if str(w.message).startswith("rnnkit:")]
    print(len(messages))
    print(messages[0])
""")


def test_missing_extension_falls_back_with_one_warning():
    seed = torch.randint(2**31 - 1, ()).item()  # fresh per test (tests/conftest.py)
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(seed=seed)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.splitlines()[:2]
    # One warning for the whole run (the reason is the same for every op), naming it.
    assert count == "1"
    assert "reference" in message and "rnnkit._C could not be loaded" in message
    assert "None in sys.modules" in message  # the import error itself, verbatim
