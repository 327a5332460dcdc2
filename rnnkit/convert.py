"""Swapping torch.nn's recurrent modules for rnnkit's in an existing model, and back.

    model = rnnkit.convert(model)               # torch.nn.LSTM -> rnnkit.LSTM, ...
    model = rnnkit.convert(model, to="torch")   # and back

The replacement module takes over the *same Parameter objects* (not copies), so
an optimizer built before the conversion, tied weights, and anything else that
holds a reference to a parameter keep working, and device, dtype and
`requires_grad` come along for free. Forward hooks, backward hooks and state-dict
hooks move with the module; its training flag and any attributes set on it by
the user are carried over too.

The model is converted in place: containers (Sequential, ModuleList, ModuleDict,
any Module) get the new modules in the same slots, a module reachable from
several places is replaced by a single new module everywhere, and the model is
returned, which matters only when the model itself is a recurrent module.

Modules that cannot be swapped faithfully are left alone with a warning naming
them: subclasses (their methods would be lost), parametrized modules, modules
whose weights were replaced by something that is not a plain Parameter (old-style
weight_norm, pruning), and modules with extra parameters, buffers or submodules.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from rnnkit import modules as rk

__all__ = ["convert"]

# (torch.nn class, rnnkit class), in both directions.
_PAIRS = [(nn.RNN, rk.RNN), (nn.LSTM, rk.LSTM), (nn.GRU, rk.GRU),
          (nn.RNNCell, rk.RNNCell), (nn.LSTMCell, rk.LSTMCell), (nn.GRUCell, rk.GRUCell)]
_TARGETS = {"rnnkit": dict(_PAIRS), "torch": {b: a for a, b in _PAIRS}}
_TORCH_CLASSES = tuple(a for a, _ in _PAIRS)

# nn.Module's per-instance hook registries. The new module takes the dictionaries
# themselves, so handles returned by register_*_hook still remove the hooks.
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_is_full_backward_hook", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def _is_recurrent(module: nn.Module) -> bool:
    return isinstance(module, (nn.RNNBase, nn.RNNCellBase))


def _constructor_args(module: nn.Module) -> tuple[tuple, dict]:
    """The arguments that rebuild `module`'s configuration."""
    if isinstance(module, nn.RNNCellBase):
        kwargs = dict(bias=module.bias)
        if isinstance(module, (nn.RNNCell, rk.RNNCell)):
            kwargs["nonlinearity"] = module.nonlinearity
        return (module.input_size, module.hidden_size), kwargs
    kwargs = dict(num_layers=module.num_layers, bias=module.bias,
                  batch_first=module.batch_first, dropout=module.dropout,
                  bidirectional=module.bidirectional)
    if module.mode == "LSTM":
        kwargs["proj_size"] = module.proj_size
    elif module.mode in ("RNN_TANH", "RNN_RELU"):
        kwargs["nonlinearity"] = module.nonlinearity
    return (module.input_size, module.hidden_size), kwargs


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why `module` cannot be swapped for its counterpart, or None if it can."""
    if parametrize.is_parametrized(module):
        return "it has parametrizations (torch.nn.utils.parametrize)"
    if type(module) not in _TARGETS["rnnkit"] and type(module) not in _TARGETS["torch"]:
        return (f"{type(module).__qualname__} is a subclass of a recurrent module; its own "
                "methods would be lost")
    names = set(_expected_parameter_names(module))
    if set(module._parameters) != names:
        return ("its parameters are not the standard ones (weight_norm, pruning or extra "
                f"parameters?): {sorted(set(module._parameters) ^ names)}")
    if any(p is not None and not isinstance(p, nn.Parameter)
           for p in module._parameters.values()):
        return "some of its weights are plain tensors rather than Parameters"
    if module._buffers or module._modules:
        return "it has buffers or submodules of its own"
    return None


def _expected_parameter_names(module: nn.Module) -> list[str]:
    if isinstance(module, nn.RNNCellBase):
        return ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    return list(module._flat_weights_names)


def carry_over(module: nn.Module, new: nn.Module) -> None:
    """Gives `new` the hooks, the training flag and the user's own attributes of `module`."""
    for name in _HOOK_DICTS:
        if hasattr(module, name):
            setattr(new, name, getattr(module, name))
    for name, value in vars(module).items():
        if name not in vars(new):  # attributes the user added
            setattr(new, name, value)
    new.train(module.training)


def _swap(module: nn.Module, target: type) -> nn.Module:
    """A `target` module wearing `module`'s parameters, hooks, flags and attributes."""
    args, kwargs = _constructor_args(module)
    with warnings.catch_warnings():
        # The original's constructor already warned about dropout with one layer.
        warnings.filterwarnings("ignore", message="dropout option adds dropout")
        # Built on the meta device: no memory, no initialisation, and every
        # parameter is replaced just below.
        new = target(*args, **kwargs, device="meta")
    for name, param in module._parameters.items():
        # setattr, not _parameters[...] =, so that RNNBase keeps _flat_weights in step.
        setattr(new, name, param)
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()  # _flat_weights and their weak references, all at once
    carry_over(module, new)
    if target in _TORCH_CLASSES and isinstance(new, nn.RNNBase):
        # torch.nn on CUDA wants its weights in one cuDNN buffer; this re-points the
        # same Parameter objects at it (a no-op on CPU).
        new.flatten_parameters()
    return new


def replace_modules(model: nn.Module, classes: tuple, replace, who: str, left: str):
    """Replaces, in place, every module of `model` that is an instance of `classes` by
    replace(module), which returns the new module or, for one it refuses, the reason.
    A module reachable from several places is replaced once, everywhere; recurrent
    modules are not searched further. -> (model or its replacement, the warnings
    for the refused ones: "rnnkit.<who>: left <path> (<class>) <left>: <reason>")."""
    done: dict[int, nn.Module] = {}  # id(old module) -> its replacement (or itself)
    refused: list[str] = []

    def visit(module: nn.Module, path: str) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        result = module
        if isinstance(module, classes):
            new = replace(module)
            if isinstance(new, str):
                refused.append(f"rnnkit.{who}: left {path or 'the model'} "
                               f"({type(module).__name__}) {left}: {new}")
            else:
                result = new
        elif not _is_recurrent(module):
            for name, child in list(module._modules.items()):
                if child is not None:
                    replacement = visit(child, f"{path}.{name}" if path else name)
                    if replacement is not child:
                        module._modules[name] = replacement
        done[id(module)] = result
        return result

    with torch.no_grad():
        return visit(model, ""), refused


def convert(model: nn.Module, to: str = "rnnkit") -> nn.Module:
    """Replaces every torch.nn RNN, LSTM, GRU, RNNCell, LSTMCell and GRUCell in `model`
    by rnnkit's (``to="rnnkit"``), or every rnnkit one by torch.nn's (``to="torch"``).

    The new modules share the old modules' Parameter objects. `model` is modified in
    place and returned (a new object only if `model` is itself a recurrent module).
    Modules that cannot be converted faithfully stay as they are, with a warning.
    """
    if to not in _TARGETS:
        raise ValueError(f"to must be 'rnnkit' or 'torch', got {to!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    table = _TARGETS[to]

    def swap(module: nn.Module):
        reason = _unsupported_reason(module)
        return reason if reason is not None else _swap(module, table[type(module)])

    result, refused = replace_modules(model, tuple(table), swap, "convert", "unconverted")
    for message in refused:
        warnings.warn(message, stacklevel=2)  # pointing at the caller of convert
    return result
