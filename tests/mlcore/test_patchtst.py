import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mlcore import patchtst
from mlcore.patchtst import PatchTST, PatchTSTConfig, n_patches
from mlcore.revin import RevIN
from mlcore.train import PRESETS

DEFAULT = PRESETS["default"].model_config()  # the model `train_model` builds by default
SMALL = PatchTSTConfig(
    n_channels=5, context_length=96, d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=0.2
)


def _model(config: PatchTSTConfig = SMALL, *, seed: int = 0) -> PatchTST:
    torch.manual_seed(seed)
    return PatchTST(config)


def _series(batch: int, config: PatchTSTConfig = SMALL, *, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Random walks with per-channel level and scale, so RevIN has something to remove.
    steps = torch.randn(batch, config.context_length, config.n_channels, generator=generator)
    level = torch.linspace(-50.0, 50.0, config.n_channels)
    scale = torch.linspace(0.1, 10.0, config.n_channels)
    return steps.cumsum(dim=1) * scale + level


@pytest.mark.parametrize(
    ("context_length", "expected"), [(96, 12), (336, 42), (512, 64), (104, 13)]
)
def test_patch_count_with_end_padding(context_length: int, expected: int) -> None:
    assert n_patches(context_length, 16, 8) == expected
    config = replace(SMALL, context_length=context_length)
    representation = _model(config).eval().represent(_series(2, config))
    assert representation.shape == (2, SMALL.n_channels, expected, SMALL.d_model)


def test_last_patch_is_end_padded_by_replication() -> None:
    model = _model().eval()
    x = _series(1)
    seen = {}

    def keep_patches(_module, args, _out) -> None:
        seen["patches"] = args[0]

    model.backbone.patch_embedding.register_forward_hook(keep_patches)
    model.represent(x)
    normalized, _ = model.revin.normalize(x)
    channel = normalized[0, :, 3]
    patches = seen["patches"]  # patch-major: [P, B, C, patch_len]
    expected = torch.cat([channel[-8:], channel[-1:].expand(8)])
    torch.testing.assert_close(patches[-1, 0, 3], expected)
    torch.testing.assert_close(patches[0, 0, 3], channel[:16])


@pytest.mark.parametrize("affine", [False, True])
def test_revin_round_trip(affine: bool) -> None:
    revin = RevIN(SMALL.n_channels, affine=affine)
    if affine:
        with torch.no_grad():
            revin.affine_weight.uniform_(0.5, 2.0)
            revin.affine_bias.uniform_(-1.0, 1.0)
    x = _series(4).double()
    revin.double()
    normalized, stats = revin.normalize(x)
    if not affine:
        zeros, ones = torch.zeros(4, SMALL.n_channels), torch.ones(4, SMALL.n_channels)
        torch.testing.assert_close(normalized.mean(dim=1), zeros.double())
        # eps=1e-5 inside the square root keeps the std a hair below 1 for low-variance channels.
        std = normalized.std(dim=1, unbiased=False)
        torch.testing.assert_close(std, ones.double(), rtol=0, atol=1e-3)
    torch.testing.assert_close(revin.denormalize(normalized, stats), x)


def test_forecast_output_is_in_input_units() -> None:
    config = replace(SMALL, task="forecast", horizon=24)
    model = _model(config).eval()
    x = _series(3, config)
    with torch.no_grad():
        shifted = model(x + 1000.0) - model(x)
    # RevIN makes the forecast equivariant to a level shift of the input window.
    torch.testing.assert_close(shifted, torch.full_like(shifted, 1000.0), rtol=0, atol=1e-2)


@pytest.mark.parametrize("task", ["multitask", "forecast"])
def test_backbone_is_channel_independent(task: str) -> None:
    config = replace(SMALL, task=task)
    model = _model(config).eval()
    x = _series(3, config)
    perturbed = x.clone()
    perturbed[:, :, 2] = torch.randn_like(perturbed[:, :, 2]) * 7.0
    with torch.no_grad():
        base, moved = model.represent(x), model.represent(perturbed)
    others = [i for i in range(config.n_channels) if i != 2]
    torch.testing.assert_close(moved[:, others], base[:, others], rtol=0, atol=1e-5)
    assert not torch.allclose(moved[:, 2], base[:, 2], atol=1e-3)
    if task == "forecast":
        with torch.no_grad():
            torch.testing.assert_close(
                model(perturbed)[:, :, others], model(x)[:, :, others], rtol=0, atol=1e-4
            )


def test_multitask_head_mixes_channels() -> None:
    model = _model().eval()
    x = _series(2)
    perturbed = x.clone()
    perturbed[:, :, 4] += torch.randn_like(perturbed[:, :, 4]) * 5.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(perturbed), atol=1e-4)


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    model = _model()
    x = _series(4)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("pooling", ["last", "mean", "flatten"])
def test_multitask_output_shape(pooling: str) -> None:
    config = replace(DEFAULT, head_pooling=pooling)
    out = _model(config).eval()(_series(9, config))
    assert out.shape == (9, 20)
    assert torch.isfinite(out).all()


def test_forecast_output_shape() -> None:
    config = PatchTSTConfig(
        n_channels=7, context_length=336, d_model=16, n_heads=4, d_ff=128, dropout=0.3,
        task="forecast", horizon=96,
    )  # fmt: skip
    model = _model(config).eval()
    assert model(_series(2, config)).shape == (2, 96, 7)
    # The paper's ETTh1 model: 81,728 trainable parameters with this layout.
    assert sum(p.numel() for p in model.parameters()) == 81_728


def test_every_parameter_gets_a_gradient() -> None:
    for config in (SMALL, replace(SMALL, task="forecast", revin_affine=True)):
        model = _model(config).train()
        model(_series(4, config)).square().mean().backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None]
        assert missing == []


def test_residual_attention_passes_scores_between_layers() -> None:
    for res_attention in (True, False):
        model = _model(replace(SMALL, res_attention=res_attention)).eval()
        seen: dict[str, torch.Tensor | None] = {}

        def keep_scores(_module, _args, out, seen=seen) -> None:
            seen["scores"] = out[1]

        def keep_prev(module, args, out, seen=seen) -> None:
            seen["prev"], seen["own"] = args[1], _own_scores(module, args[0])
            seen["second"] = out[1]

        model.backbone.layers[0].attn.register_forward_hook(keep_scores)
        model.backbone.layers[1].attn.register_forward_hook(keep_prev)
        model.represent(_series(2))
        if res_attention:
            assert seen["prev"] is seen["scores"]
            assert seen["prev"].shape == (2 * SMALL.n_channels * 4, 12, 12)
            torch.testing.assert_close(seen["second"], seen["own"] + seen["prev"])
        else:
            assert seen["prev"] is None
            torch.testing.assert_close(seen["second"], seen["own"])


def _official_qkv(attention: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v as [N, heads, P, head_dim] from the fused projection, ordered (head, q/k/v, dim)."""
    n, p, d = x.shape
    heads = attention.n_heads
    projected = attention.qkv(x).view(n, p, heads, 3, d // heads)
    return tuple(projected[:, :, :, i].transpose(1, 2) for i in range(3))


def _own_scores(attention: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Scaled q.k^T of one attention module for patch-major tokens x [P, N, d], computed
    independently of its forward.

    Laid out like the module's scores: [N * heads, key, query].
    """
    x = x.transpose(0, 1)
    n, p, d = x.shape
    q, k, _ = _official_qkv(attention, x)
    scores = q @ k.transpose(-2, -1) / (d // attention.n_heads) ** 0.5  # [N, H, query, key]
    return scores.transpose(-2, -1).reshape(-1, p, p)


def test_attention_matches_official_formulation() -> None:
    """Our key-major layout against the official q.k^T + prev, softmax over the last axis."""
    attention = _model().backbone.layers[1].attn.eval()
    n, p, d, heads = 6, 12, SMALL.d_model, attention.n_heads
    x = torch.randn(n, p, d)
    prev = torch.randn(n, heads, p, p)  # official layout [N, heads, query, key]
    q, k, v = _official_qkv(attention, x)
    scores = q @ k.transpose(-2, -1) / (d // heads) ** 0.5 + prev
    context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, p, d)
    ours, our_scores = attention(x.transpose(0, 1), prev.transpose(-2, -1).reshape(n * heads, p, p))
    torch.testing.assert_close(ours.transpose(0, 1), attention.out(context))
    torch.testing.assert_close(our_scores, scores.transpose(-2, -1).reshape(n * heads, p, p))


def _trained_a_little(model: PatchTST, config: PatchTSTConfig = SMALL) -> PatchTST:
    """Running BatchNorm statistics away from (0, 1), as after training."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(_series(8, config, seed=seed) * (seed + 1))
    return model.eval()


def test_inference_computes_only_the_last_patch_of_the_last_layer() -> None:
    """A "last"-pooled head at inference: same outputs as the full forward, a third fewer FLOPs."""
    model = _trained_a_little(_model(replace(SMALL, n_layers=3)))
    x = _series(4)
    with torch.no_grad():
        full = model.head(model.represent(x))
        torch.testing.assert_close(model(x), full)
    torch.testing.assert_close(model(x).detach(), full)  # eval with autograd: unfused branch
    with pytest.raises(ValueError, match="eval mode"):
        model.train().backbone(x, last_patch_only=True)


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "stock-ops"])
def test_fused_inference_layer_matches_linear_add_norm(
    onednn: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eval-mode encoder layer (score scale in the query weights, residual and GELU inside
    the GEMM, bias in BatchNorm's mean) against the training-mode formulation with dropout and
    BatchNorm in eval; with oneDNN's fused linear and with the stock ops other devices use."""
    if onednn and not patchtst._ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    monkeypatch.setattr(patchtst, "_ONEDNN_LINEAR", onednn)
    model = _trained_a_little(_model())
    x = _series(4)
    with torch.no_grad():
        fused = model.represent(x)
        for layer in model.backbone.layers:
            layer.training = True  # the Linear-Add-Norm branch; its children stay in eval
        torch.testing.assert_close(fused, model.represent(x))


def test_flop_counter_counts_the_fused_inference_path_like_the_stock_ops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench_inference judges achieved FLOP/s: the oneDNN linears must not count as 0 FLOPs."""
    model, x = _model().eval(), _series(3)

    def counted() -> int:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model(x)
        return counter.get_total_flops()

    fused = counted()
    monkeypatch.setattr(patchtst, "_ONEDNN_LINEAR", False)
    assert fused == counted() > 0


@pytest.mark.parametrize("p", [0.2, 0.3])
def test_dropout_keeps_the_stock_distribution(p: float) -> None:
    dropout = _model().backbone.dropout
    dropout.p = p
    x = torch.full((400_000,), 2.0, requires_grad=True)
    out = dropout.train()(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 2.0 / (1 - p)))
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - p))
    assert torch.equal(dropout.eval()(x), x)


def test_token_batchnorm_matches_official_transpose_batchnorm() -> None:
    ours = _model().backbone.layers[0].norm_attn
    official = nn.BatchNorm1d(SMALL.d_model)
    x = torch.randn(10, 12, SMALL.d_model) * 3 + 1
    for mode in ("train", "eval"):
        ours.train(mode == "train")
        official.train(mode == "train")
        expected = official(x.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(ours(x), expected)
    torch.testing.assert_close(ours.running_mean, official.running_mean)
    torch.testing.assert_close(ours.running_var, official.running_var)


def test_model_follows_dtype_and_device() -> None:
    model = _model().double().eval()
    assert model(_series(2).double()).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda() -> None:
    model = _model().cuda().eval()
    x = _series(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x.cuda()).cpu(), model.cpu()(x), rtol=1e-4, atol=1e-4)


def test_wrong_input_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"expected input \[B, 96, 5\]"):
        _model()(torch.zeros(2, 95, 5))


def test_config_round_trip() -> None:
    config = replace(DEFAULT, task="forecast", horizon=48, head_pooling="mean")
    restored = PatchTSTConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    state = PatchTST(config).state_dict()
    PatchTST(restored).load_state_dict(state)  # strict: same layout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"task": "classify"}, "task"),
        ({"head_pooling": "max"}, "head_pooling"),
        ({"context_length": 8}, "context_length"),
    ],
)
def test_invalid_config_is_rejected(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PatchTSTConfig(**{**SMALL.to_dict(), **change})


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown PatchTSTConfig keys"):
        PatchTSTConfig.from_dict({**SMALL.to_dict(), "n_experts": 4})
