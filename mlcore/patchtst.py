"""PatchTST (Nie et al., "A Time Series is Worth 64 Words", ICLR 2023), supervised variant.

Follows the official implementation (yuqinie98/PatchTST,
PatchTST_supervised/layers/PatchTST_backbone.py): RevIN, end-padded patching, a patch embedding
and a Transformer encoder shared by all channels (channel independence), learnable positional
encoding, post-norm encoder layers with BatchNorm and GELU, and residual attention (each layer adds
the previous layer's pre-softmax scores to its own).

Two heads:
- "forecast": the official flatten head (per channel, [patches x d_model] -> horizon), then RevIN
  denorm.
- "multitask": each channel's representation is pooled ("last" patch as in the official
  self-supervised regression/classification heads, "mean", or "flatten"), the channels are
  concatenated and one linear layer maps them to `n_outputs` raw values (no denorm: the outputs are
  not in input units).

Implementation choices that change no function, each for CPU speed (2-core serving and training):
Q/K/V are one fused Linear with head-major outputs and the attention scores are kept key-major;
BatchNorm runs on the [tokens, d_model] view instead of Transpose+BatchNorm1d+Transpose (same
statistics over batch x patches per feature); dropout draws its mask with uniform_; the flatten
head reads (patch, d_model) order, a permutation of the official weight layout. Tests pin the
attention and the BatchNorm against the official formulation.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlcore.revin import RevIN

Task = Literal["multitask", "forecast"]
HeadPooling = Literal["last", "mean", "flatten"]


@dataclass(frozen=True)
class PatchTSTConfig:
    n_channels: int
    context_length: int = 96
    patch_len: int = 16
    stride: int = 8
    d_model: int = 128
    n_heads: int = 16
    n_layers: int = 3
    d_ff: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.0
    head_dropout: float = 0.0
    revin: bool = True
    revin_affine: bool = False
    res_attention: bool = True
    task: Task = "multitask"
    n_outputs: int = 20
    horizon: int = 96
    head_pooling: HeadPooling = "last"

    def __post_init__(self) -> None:
        if self.task not in ("multitask", "forecast"):
            raise ValueError(f"task must be 'multitask' or 'forecast', got {self.task!r}")
        if self.head_pooling not in ("last", "mean", "flatten"):
            raise ValueError(f"head_pooling must be last/mean/flatten, got {self.head_pooling!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.context_length < self.patch_len:
            raise ValueError(
                f"context_length ({self.context_length}) < patch_len ({self.patch_len})"
            )
        if min(self.n_channels, self.patch_len, self.stride, self.n_layers) < 1:
            raise ValueError("n_channels, patch_len, stride and n_layers must be positive")

    @property
    def n_patches(self) -> int:
        return n_patches(self.context_length, self.patch_len, self.stride)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PatchTSTConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            # A checkpoint written by different code must fail loudly, not load half a config.
            raise ValueError(f"unknown PatchTSTConfig keys: {sorted(unknown)}")
        return cls(**data)


# The CPU-serving model: 32 input channels over 96 candles (24 h of 15m), small enough for 2 cores.
DEFAULT_CPU_CONFIG = PatchTSTConfig(
    n_channels=32, context_length=96, d_model=64, n_heads=4, n_layers=3, d_ff=128
)


def n_patches(context_length: int, patch_len: int, stride: int) -> int:
    """Patches after end padding by `stride` (official padding_patch='end').

    96/16/8 -> 12; 336/16/8 -> 42.
    """
    return (context_length - patch_len) // stride + 2


class _Dropout(nn.Dropout):
    """nn.Dropout whose CPU mask comes from uniform_ instead of the stock bernoulli_ kernel.

    Same distribution (keep with probability 1 - p, scale by 1 / (1 - p)); forward + backward is
    ~2.5x faster on CPU, where dropout was half of a PatchTST training step. Other devices use the
    stock op.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p in (0.0, 1.0) or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand_like(x) >= self.p
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


class _TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over d_model features, statistics over all (sequence, patch) tokens.

    Equivalent to the official Transpose(1,2) + BatchNorm1d(d_model) + Transpose(1,2) on [N, P, d]
    but without the two transposed copies.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class _ResidualSelfAttention(nn.Module):
    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.attn_dropout = _Dropout(config.attn_dropout)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.proj_dropout = _Dropout(config.dropout)

    def forward(self, x: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: [N, P, d]; prev: the previous layer's pre-softmax scores or None.

        Layout choices for CPU speed (function and values are those of the official layer):
        - the fused projection's outputs are ordered (head, q/k/v, head_dim), so one transpose
          copy gives every head's q, k and v as strided views bmm reads directly;
        - scores are kept key-major, [N * H, key, query], so the softmax over keys runs along a
          strided axis that the CPU kernel vectorises across queries (a last-axis softmax over
          only 12 keys is 3-4x slower, measured).
        """
        n, p, d = x.shape
        heads, head_dim = self.n_heads, self.head_dim
        qkv = self.qkv(x).view(n, p, heads, 3 * head_dim).transpose(1, 2).contiguous()
        q, k, v = qkv.view(n * heads, p, 3 * head_dim).split(head_dim, dim=-1)
        if prev is None:
            scores = torch.bmm(k, q.transpose(1, 2)) * self.scale
        else:
            scores = torch.baddbmm(prev, k, q.transpose(1, 2), alpha=self.scale)
        weights = self.attn_dropout(torch.softmax(scores, dim=1))
        context = torch.bmm(weights.transpose(1, 2), v)  # [N * H, query, head_dim]
        context = context.view(n, heads, p, head_dim).transpose(1, 2).reshape(n, p, d)
        return self.proj_dropout(self.out(context)), scores


class _EncoderLayer(nn.Module):
    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.res_attention = config.res_attention
        self.attn = _ResidualSelfAttention(config)
        self.dropout_attn = _Dropout(config.dropout)
        self.norm_attn = _TokenBatchNorm(config.d_model)
        self.ff = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            _Dropout(config.dropout),
            nn.Linear(config.d_ff, config.d_model),
        )
        self.dropout_ffn = _Dropout(config.dropout)
        self.norm_ffn = _TokenBatchNorm(config.d_model)

    def forward(self, x: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor | None]:
        attended, scores = self.attn(x, prev if self.res_attention else None)
        # Post-norm: Add, then Norm (official pre_norm=False).
        x = self.norm_attn(x + self.dropout_attn(attended))
        x = self.norm_ffn(x + self.dropout_ffn(self.ff(x)))
        return x, scores if self.res_attention else None


class PatchTSTBackbone(nn.Module):
    """Normalised series [B, L, C] -> per-channel patch representations [B, C, P, d_model].

    Every channel goes through the same weights as an independent sequence of patches.
    """

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.patch_len = config.patch_len
        self.stride = config.stride
        self.patch_embedding = nn.Linear(config.patch_len, config.d_model)
        # Official pe='zeros', learn_pe=True: learnable, initialised U(-0.02, 0.02).
        self.position = nn.Parameter(
            torch.empty(config.n_patches, config.d_model).uniform_(-0.02, 0.02)
        )
        self.dropout = _Dropout(config.dropout)
        self.layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.n_layers))

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        series = F.pad(x.transpose(1, 2), (0, self.stride), mode="replicate")  # [B, C, L + stride]
        patches = series.unfold(-1, self.patch_len, self.stride)  # [B, C, P, patch_len]
        tokens = self.patch_embedding(patches).flatten(0, 1)  # [B*C, P, d]
        z = self.dropout(tokens + self.position)
        scores = None
        for layer in self.layers:
            z, scores = layer(z, scores)
        return z.view(b, c, *z.shape[1:])


class _ForecastHead(nn.Module):
    """Official Flatten_Head (individual=False): one Linear shared by all channels."""

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(config.n_patches * config.d_model, config.horizon)
        self.dropout = _Dropout(config.head_dropout)

    def forward(self, z: Tensor) -> Tensor:
        """z: [B, C, P, d] -> [B, horizon, C] (normalised units)."""
        return self.dropout(self.linear(z.flatten(2))).transpose(1, 2)


class _MultitaskHead(nn.Module):
    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.pooling = config.head_pooling
        per_channel = config.d_model * (config.n_patches if self.pooling == "flatten" else 1)
        self.dropout = _Dropout(config.head_dropout)
        self.linear = nn.Linear(config.n_channels * per_channel, config.n_outputs)

    def forward(self, z: Tensor) -> Tensor:
        """z: [B, C, P, d] -> [B, n_outputs]."""
        if self.pooling == "last":
            pooled = z[:, :, -1]
        elif self.pooling == "mean":
            pooled = z.mean(dim=2)
        else:
            pooled = z.flatten(2)
        return self.linear(self.dropout(pooled.flatten(1)))


class PatchTST(nn.Module):
    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.config = config
        self.revin = RevIN(config.n_channels, affine=config.revin_affine) if config.revin else None
        self.backbone = PatchTSTBackbone(config)
        self.head = _ForecastHead(config) if config.task == "forecast" else _MultitaskHead(config)

    def represent(self, x: Tensor) -> Tensor:
        """x: [B, L, C] -> backbone representation [B, C, P, d_model] (after RevIN)."""
        if self.revin is not None:
            x, _ = self.revin.normalize(x)
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, context_length, n_channels] -> [B, n_outputs] or [B, horizon, n_channels]."""
        expected = (self.config.context_length, self.config.n_channels)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected input [B, {expected[0]}, {expected[1]}], got {tuple(x.shape)}"
            )
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        out = self.head(self.backbone(x))
        if self.config.task == "forecast" and stats is not None:
            out = self.revin.denormalize(out, stats)
        return out
