"""Reversible instance normalisation (RevIN, Kim et al., ICLR 2022), as PatchTST uses it.

Each window is normalised per channel by its own mean and standard deviation; forecasts are mapped
back with the same statistics. Unlike the reference code, the statistics are returned to the caller
instead of being stored on the module, so one model can serve concurrent forward passes.
"""

from typing import NamedTuple

import torch
from torch import Tensor, nn


class RevINStats(NamedTuple):
    mean: Tensor  # [B, 1, C]
    std: Tensor  # [B, 1, C]


class RevIN(nn.Module):
    def __init__(self, n_channels: int, *, affine: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.affine_weight = nn.Parameter(torch.ones(n_channels))
            self.affine_bias = nn.Parameter(torch.zeros(n_channels))

    def normalize(self, x: Tensor) -> tuple[Tensor, RevINStats]:
        """x: [B, L, C] -> (normalised x, statistics over L)."""
        # Statistics are detached as in the reference implementation: they are data, not parameters.
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine:
            x = x * self.affine_weight + self.affine_bias
        return x, RevINStats(mean=mean, std=std)

    def denormalize(self, y: Tensor, stats: RevINStats) -> Tensor:
        """y: [B, T, C] in normalised units -> original units of the window the stats came from."""
        if self.affine:
            # eps**2 keeps the division finite if a weight is driven to zero (reference behaviour).
            y = (y - self.affine_bias) / (self.affine_weight + self.eps * self.eps)
        return y * stats.std + stats.mean
