"""Seeing through the wrappers that DistributedDataParallel and torch.compile put around a model."""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP's `.module` and torch.compile's `._orig_mod` (any nesting of them).

    Args:
        model: a network, possibly wrapped.

    Returns:
        The innermost module: the one whose parameter names carry no wrapper prefix.
    """
    for attr in ("module", "_orig_mod"):  # DDP, torch.compile
        while isinstance(getattr(model, attr, None), nn.Module):
            model = getattr(model, attr)
    return model
