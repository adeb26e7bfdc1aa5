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
tokens are patch-major ([P, sequences, d_model]) and Q/K/V one fused Linear with head-major
outputs, so attention reads every head in place, and the scores are kept key-major; BatchNorm runs
on the [tokens, d_model] view instead of Transpose+BatchNorm1d+Transpose (same statistics over
batch x patches per feature); dropout draws its mask with uniform_; the flatten head reads
(patch, d_model) order, a permutation of the official weight layout. At inference only: the last
layer computes only the last patch when the head reads nothing else; on CPU every Linear is one
oneDNN GEMM with its bias, GELU or residual add fused in; the score scale lives in the query
weights; each Linear-Add-Norm moves the bias into BatchNorm's mean; and the softmax is composed of
cheaper kernels. Tests pin each against the official formulation.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import flop_counter

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
        # Inference folds the score scale into the query rows of the fused projection.
        row_scale = torch.ones(config.n_heads, 3, self.head_dim)
        row_scale[:, 0] = self.scale
        self.register_buffer("_qkv_row_scale", row_scale.flatten()[:, None], persistent=False)
        self.attn_dropout = _Dropout(config.attn_dropout)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.proj_dropout = _Dropout(config.dropout)

    def forward(
        self, x: Tensor, prev: Tensor | None, *, last_query: bool = False, fused: bool = False
    ) -> tuple[Tensor, Tensor]:
        """x: patch-major tokens [P, N, d]; prev: the previous layer's pre-softmax scores or None.

        Returns the projected output and this layer's pre-softmax scores. fused (inference
        only): the score scale is folded into the query weights and the output is the heads'
        context before the output projection, which the caller fuses with its Add & Norm.

        With last_query, only the last patch attends (its keys and values are still every patch):
        returns [1, N, d] and scores [N * H, key, 1], all a "last"-pooled head reads at inference.

        Layout choices for CPU speed (function and values are those of the official layer):
        - the fused projection's outputs are ordered (head, q/k/v, head_dim) and the tokens are
          patch-major, so (sequence, head) is one batch index with a uniform stride and bmm reads
          every head's q, k and v in place (token-major needs a transposed copy of q/k/v);
        - scores are kept key-major, [N * H, key, query], so the softmax over keys runs along a
          strided axis that the CPU kernel vectorises across queries (a last-axis softmax over
          only 12 keys is 3-4x slower, measured).
        """
        p, n, d = x.shape
        heads, head_dim = self.n_heads, self.head_dim
        if fused:
            scale = self._qkv_row_scale
            qkv, alpha = _linear(x, self.qkv.weight * scale, self.qkv.bias * scale[:, 0]), 1.0
        else:
            qkv, alpha = self.qkv(x), self.scale
        qkv = qkv.view(p, n * heads, 3 * head_dim).transpose(0, 1)  # [N * H, P, 3 hd]
        q, k, v = qkv.split(head_dim, dim=-1)
        if last_query:
            q, p = q[:, -1:], 1
            prev = None if prev is None else prev[:, :, -1:]
        if prev is None:
            scores = torch.bmm(k, q.transpose(1, 2))
            scores = scores if alpha == 1.0 else scores.mul_(alpha)
        else:
            scores = torch.baddbmm(prev, k, q.transpose(1, 2), alpha=alpha)
        weights = self.attn_dropout(_softmax_keys(scores))
        context = torch.bmm(weights.transpose(1, 2), v)  # [N * H, query, head_dim]
        context = context.view(n, heads, p, head_dim).permute(2, 0, 1, 3).reshape(p, n, d)
        return (context if fused else self.proj_dropout(self.out(context))), scores


def _softmax_keys(scores: Tensor) -> Tensor:
    """Softmax over the key axis (dim 1) of key-major scores [N * H, key, query].

    At inference the composed max/exp/sum/divide is ~25% faster on CPU than torch.softmax's
    kernel over this strided axis (measured, 12 keys and queries); autograd keeps the stock op.
    """
    if torch.is_grad_enabled() or scores.device.type != "cpu":
        return torch.softmax(scores, dim=1)
    weights = torch.sub(scores, scores.amax(dim=1, keepdim=True)).exp_()
    return weights.div_(weights.sum(dim=1, keepdim=True))


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

    def forward(
        self, x: Tensor, prev: Tensor | None, *, last_query: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        prev = prev if self.res_attention else None
        fused = not (self.training or torch.is_grad_enabled())
        attended, scores = self.attn(x, prev, last_query=last_query, fused=fused)
        x = x[-1:] if last_query else x
        if not fused:
            # Post-norm: Add, then Norm (official pre_norm=False).
            x = self.norm_attn(x + self.dropout_attn(attended))
            x = self.norm_ffn(x + self.dropout_ffn(self.ff(x)))
        else:
            x = _add_linear_norm(x, attended, self.attn.out, self.norm_attn)
            hidden = _linear(x, self.ff[0].weight, self.ff[0].bias, gelu=True)
            x = _add_linear_norm(x, hidden, self.ff[3], self.norm_ffn)
        return x, scores if self.res_attention else None


def _onednn_linear_available() -> bool:
    """oneDNN's fused linear (the op torch.compile's CPU backend emits), where torch ships it."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_LINEAR = _onednn_linear_available()

if _ONEDNN_LINEAR and torch.ops.mkldnn._linear_pointwise not in flop_counter.flop_registry:

    @flop_counter.register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _onednn_linear_flops(x_shape, *args, out_shape, **kwargs) -> int:
        """FlopCounterMode counts the fused linear as the matmul it is (else it counts 0)."""
        return 2 * math.prod(x_shape) * out_shape[-1]


def _linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    gelu: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """Inference Linear over the last axis, followed by either exact GELU or + residual.

    On a float32 CPU tensor the bias, GELU or residual is applied inside oneDNN's GEMM (a
    post-op) instead of in separate passes over the output; measured on the 2-core box, the
    default model's forward pass for 100 / 500 symbols went 38 -> 31 ms / 220 -> 155 ms.
    Elsewhere the stock ops.
    """
    shape = (*x.shape[:-1], weight.shape[0])
    x = x.reshape(-1, x.shape[-1])
    # Not while torch.compile traces: its CPU backend fuses the stock ops itself (and cannot
    # lower this op with unpacked weights).
    onednn = _ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32
    if onednn and not torch.compiler.is_compiling():
        linear = torch.ops.mkldnn._linear_pointwise
        if residual is not None:
            out = linear.binary(x, residual.reshape(x.shape[0], -1), weight, bias, "add")
        else:
            out = linear(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")
        return out.view(shape)
    if residual is not None:
        out = torch.addmm(residual.reshape(x.shape[0], -1), x, weight.t())
        out = out if bias is None else out.add_(bias)
    else:
        out = F.linear(x, weight, bias)
        out = F.gelu(out) if gelu else out
    return out.view(shape)


def _add_linear_norm(
    residual: Tensor, inputs: Tensor, linear: nn.Linear, norm: nn.BatchNorm1d
) -> Tensor:
    """norm(residual + linear(inputs)) at inference (no dropout, BatchNorm on running statistics).

    Two memory passes fewer than Linear, Add, Norm: the residual is added inside the GEMM and
    the linear's bias moves into BatchNorm's mean.
    """
    d = residual.shape[-1]
    z = _linear(inputs, linear.weight, None, residual=residual).view(-1, d)
    z = F.batch_norm(
        z, norm.running_mean - linear.bias, norm.running_var, norm.weight, norm.bias,
        training=False, eps=norm.eps,
    )  # fmt: skip
    return z.view(residual.shape)


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

    def forward(self, x: Tensor, *, last_patch_only: bool = False) -> Tensor:
        """last_patch_only: the last layer computes only the last patch ([B, C, 1, d_model]).

        Exact in eval mode, where BatchNorm is per token; a third fewer FLOPs for the default
        model, whose "last"-pooled head reads nothing else.
        """
        if last_patch_only and self.training:
            raise ValueError("last_patch_only needs eval mode: training BatchNorm sees all patches")
        b, _, c = x.shape
        series = F.pad(x.transpose(1, 2), (0, self.stride), mode="replicate")  # [B, C, L + stride]
        patches = series.unfold(-1, self.patch_len, self.stride)  # [B, C, P, patch_len]
        # Patch-major tokens [P, B*C, d] (see _ResidualSelfAttention.forward).
        patches = patches.permute(2, 0, 1, 3)
        if self.training or torch.is_grad_enabled():
            z = self.dropout(self.patch_embedding(patches).flatten(1, 2) + self.position[:, None])
        else:
            embedding = self.patch_embedding
            z = _linear(patches, embedding.weight, embedding.bias).flatten(1, 2)
            z.add_(self.position[:, None])
        scores = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z, scores = layer(z, scores, last_query=last_patch_only and i == last)
        return z.view(z.shape[0], b, c, -1).permute(1, 2, 0, 3)


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
        last_only = not self.training and self.config.task == "multitask"
        last_only = last_only and self.config.head_pooling == "last"
        out = self.head(self.backbone(x, last_patch_only=last_only))
        if self.config.task == "forecast" and stats is not None:
            out = self.revin.denormalize(out, stats)
        return out
