"""Loads the compiled extension rnnkit._C, remembering why it failed if it did."""

from __future__ import annotations

import importlib

import torch

LOAD_ERROR: str | None = None

try:
    # Loading the library registers the torch.ops.rnnkit operators.
    importlib.import_module("rnnkit._C")
except Exception as exc:  # ImportError, or an OSError/undefined symbol from a mismatched build
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def loaded() -> bool:
    return LOAD_ERROR is None


def has_kernel(op: str, device_type: str) -> bool:
    """Whether rnnkit::<op> has a kernel registered for this device type."""
    if not loaded():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnkit::{op}", key)
