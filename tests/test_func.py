"""torch.func and torch.jit on rnnkit modules: grad, vjp, jacrev and functional_call as
torch.nn's, vmap beyond them (a batching rule that folds the mapped dimension into the
batch), torch.jit.trace with one graph whatever the grad mode, and a clear error from
torch.jit.script."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacrev, stack_module_state, vjp, vmap
from torch.utils._python_dispatch import TorchDispatchMode

import rnnkit
from rnnkit import ops
from tests.helpers import CELLS, MODULES, assert_close, call, flatten, random_input, \
    random_states

ALL = MODULES + CELLS
F64 = torch.float64


def _module_pair(name, **kwargs):
    ref = getattr(torch.nn, name)(4, 5, dtype=F64, **kwargs)
    ours = getattr(rnnkit, name)(4, 5, dtype=F64, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _input(module, batch=3):
    if isinstance(module, torch.nn.RNNCellBase):
        return torch.randn(batch, module.input_size, dtype=F64)
    return random_input(module, 4, batch)


def _first(result):
    """The output tensor of a module call (h' for RNNCell and GRUCell)."""
    return flatten(result)[0]


# ---------------------------------------------------------------------------
# grad, vjp, jacrev, functional_call


@pytest.mark.parametrize("name", ALL)
def test_grad_over_functional_call_matches_torch(name):
    ref, ours = _module_pair(name)
    x = _input(ref)

    def loss(module):
        def f(params):
            return sum(t.pow(2).sum() for t in flatten(functional_call(module, params, (x,))))
        return grad(f)(dict(module.named_parameters()))

    want, got = loss(ref), loss(ours)
    assert want.keys() == got.keys()
    for key in want:
        assert_close(got[key], want[key], what=key)


@pytest.mark.parametrize("name", ALL)
def test_vjp_and_jacrev_match_torch(name):
    ref, ours = _module_pair(name)
    x = _input(ref)
    states = random_states(ref, 3)
    cotangent = torch.randn_like(_first(ref(x)))
    for what, fn in (("vjp", lambda m: vjp(lambda xx: _first(call(m, xx, *states)), x)[1](
                         cotangent)[0]),
                     ("jacrev", lambda m: jacrev(lambda xx: _first(call(m, xx, *states)))(x))):
        assert_close(fn(ours), fn(ref), what=what)


def test_torch_func_autograd_transforms_run_the_reference():
    # The compiled ops' C++ autograd cannot compose with grad levels: the reference runs.
    ours = rnnkit.LSTM(4, 5, dtype=F64)
    x = _input(ours)
    with ops.record_paths() as paths:
        grad(lambda xx: ours(xx)[0].sum())(x)
    assert {p for _, _, p in paths} == {"reference"}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch scripts a helper on first use
def test_forward_mode_ad_on_the_compiled_ops_raises():
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    w_ih, w_hh = torch.randn(4, 3), torch.randn(4, 4)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.randn_like(x))
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            torch.ops.rnnkit.rnn_cell(dual, h, w_ih, w_hh, None, None, False)


# ---------------------------------------------------------------------------
# vmap


class _CountRnnkitOps(TorchDispatchMode):
    """Counts the rnnkit ops that reach the kernels (below vmap and autograd)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rnnkit":
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ALL)
def test_vmap_folds_the_mapped_dimension_into_one_call(name):
    ref, ours = _module_pair(name)
    n = 3
    xs = torch.stack([_input(ref, batch=2) for _ in range(n)])
    states = [torch.stack(s) for s in zip(*(random_states(ref, 2) for _ in range(n)))]
    want = [call(ours, x, *[s[i] for s in states]) for i, x in enumerate(xs)]
    layers = 1 if isinstance(ours, torch.nn.RNNCellBase) else ours.num_layers
    with torch.no_grad(), _CountRnnkitOps() as counter:
        got = vmap(lambda x, *s: call(ours, x, *s))(xs, *states)
    assert len(counter.calls) == layers, counter.calls
    for i, w in enumerate(want):
        for g, e in zip(flatten(got), flatten(w)):
            assert_close(g[i], e)
    # And against torch.nn, sample by sample.
    for i, x in enumerate(xs):
        for g, e in zip(flatten(got), flatten(call(ref, x, *[s[i] for s in states]))):
            assert_close(g[i], e)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_vmap_over_unbatched_samples_with_shared_state_and_stacks(name):
    ref, ours = _module_pair(name, num_layers=2, bidirectional=True)
    xs = torch.randn(5, 4, 4, dtype=F64)  # five unbatched sequences of four steps
    got = vmap(ours)(xs)
    for i, x in enumerate(xs):
        for g, e in zip(flatten(got), flatten(ref(x))):
            assert_close(g[i], e)


def test_vmap_keeps_gradients_flowing_to_shared_weights():
    ref, ours = _module_pair("LSTMCell")
    xs = torch.randn(4, 2, 4, dtype=F64)
    vmap(ours)(xs)[0].pow(2).sum().backward()
    for x in xs:
        ref(x)[0].pow(2).sum().backward()
    for (key, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert_close(p.grad, q.grad, what=key)


@pytest.mark.parametrize("name", ["GRUCell", "LSTM"])
def test_vmap_over_an_ensemble_of_weights(name):
    models = [_module_pair(name) for _ in range(3)]
    params, buffers = stack_module_state([ours for _, ours in models])
    base = models[0][1]
    x = _input(base, batch=2)

    def run(p, b):
        return _first(functional_call(base, (p, b), (x,)))

    got = vmap(run)(params, buffers)
    for i, (ref, _) in enumerate(models):
        assert_close(got[i], _first(ref(x)))


def test_per_sample_gradients_with_vmap_of_grad():
    # Beyond torch.nn, whose GRU has no batching rule: checked against its gradients
    # sample by sample.
    ref, ours = _module_pair("GRU")
    xs = torch.randn(3, 4, 1, 4, dtype=F64)

    def loss(module):
        def f(p, x):
            return functional_call(module, p, (x,))[0].pow(2).sum()
        return f

    params = {k: v.detach() for k, v in ours.named_parameters()}
    got = vmap(grad(loss(ours)), in_dims=(None, 0))(params, xs)
    for i, x in enumerate(xs):
        want = grad(loss(ref))(params, x)
        for key in want:
            assert_close(got[key][i], want[key], what=key)


# ---------------------------------------------------------------------------
# torch.jit


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ALL)
def test_jit_trace_records_one_graph_and_matches(name):
    _, ours = _module_pair(name)
    x = _input(ours)
    traced = torch.jit.trace(ours, (x,), check_trace=True)  # the check re-traces: same graph
    with torch.no_grad():
        for g, e in zip(flatten(traced(x)), flatten(ours(x))):
            assert torch.equal(g, e)
    leaf = x.clone().requires_grad_(True)
    _first(traced(leaf)).sum().backward()
    want = x.clone().requires_grad_(True)
    _first(ours(want)).sum().backward()
    assert_close(leaf.grad, want.grad)


@pytest.mark.parametrize("name", ALL)
def test_jit_script_names_the_alternatives(name):
    _, ours = _module_pair(name)
    with pytest.warns(FutureWarning), pytest.raises(RuntimeError, match="torch.compile"):
        torch.jit.script(ours)


# ---------------------------------------------------------------------------
# Batched gradients and hidden-state idioms


@pytest.mark.parametrize("name", ["GRU", "LSTM"])
@pytest.mark.parametrize("steps", [1, 4])
def test_batched_gradients_match_torch(name, steps):
    # is_grads_batched runs the backward under vmap: the ops' nodes see batched gradients.
    ref, ours = _module_pair(name)
    x = torch.randn(steps, 2, 4, dtype=F64)
    grads = []
    for module in (ref, ours):
        leaf = x.clone().requires_grad_()
        out, _ = module(leaf)
        v = torch.randn(3, *out.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
        grads.append(torch.autograd.grad(out, leaf, v, is_grads_batched=True)[0])
    assert_close(grads[1], grads[0])


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_final_state_detaches_in_place(name):
    # Truncated backpropagation through time detaches the state in place, as with torch.nn.
    _, ours = _module_pair(name)
    _, hidden = ours(_input(ours))
    for state in hidden if isinstance(hidden, tuple) else (hidden,):
        state.detach_()
        assert not state.requires_grad


def test_single_step_with_no_input_features():
    x = torch.randn(1, 2, 0, dtype=F64, requires_grad=True)
    out, _ = torch.ops.rnnkit.gru_layer(x, None, torch.randn(2, 4, dtype=F64),
                                        torch.randn(12, 0, dtype=F64),
                                        torch.randn(12, 4, dtype=F64), None, None, False)
    out.sum().backward()
    assert x.grad.shape == x.shape
