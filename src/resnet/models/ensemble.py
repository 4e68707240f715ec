"""Several classifiers as one: the mean of their class probabilities.

Independently trained nets (different seeds) make partly different mistakes, so averaging their
predicted probabilities is more accurate than any one of them (Hansen & Salamon 1990; deep
ensembles, Lakshminarayanan et al. 2017). The module returns log-probabilities, so softmax,
argmax, cross-entropy, test-time augmentation and export treat it like a single classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """`forward(x)` = log of the members' mean softmax (float32), shape [N, classes]."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean class probabilities for `x`."""
        outs: list[torch.Tensor] = []
        for m in self.members:  # a plain loop: TorchScript unrolls it over the ModuleList
            outs.append(m(x).float().log_softmax(1))
        return torch.stack(outs).logsumexp(0) - math.log(len(outs))
