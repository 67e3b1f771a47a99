"""Argument checks shared by the loss functions (tensors in, ValueError naming the argument out)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_matrix(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of shape (batch, dim), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (batch, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {tuple(x.shape)}); expected at least one row")
    if not x.is_floating_point():
        raise ValueError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")


def _as_vector(name: str, x: Tensor) -> Tensor:
    """Return ``x`` as shape (batch,), accepting (batch,) or (batch, 1)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of shape (batch,), got {type(x).__name__}")
    if x.ndim == 2 and x.shape[1] == 1:
        return x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must have shape (batch,) or (batch, 1), got shape {tuple(x.shape)}")
    return x


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
    return value


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value}")
    return value


def _at_least_float32(x: Tensor) -> Tensor:
    # Softmax over a few hundred logits scaled by up to 100 loses too much precision in half types.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


