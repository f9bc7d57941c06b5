"""Shapes at every TFT block boundary, for several batch sizes and window lengths (batch 1 included), so the
"Expected 3D tensors, got 4D" class of bug cannot come back; plus the quantile head's monotonicity and the
causal mask."""

from __future__ import annotations

import pytest
import torch

from trainer.model import (
    GateAddNorm,
    GatedLinearUnit,
    GatedResidualNetwork,
    QuantileHead,
    QuantileLoss,
    StaticCovariateEncoder,
    TemporalFusionTransformer,
    VariableSelectionNetwork,
)

D = 16
SHAPES = [(1, 8, 1), (1, 60, 7), (3, 20, 5), (64, 60, 7), (5, 90, 14)]


def make(L: int, H: int, heads: int = 4, n_symbols: int = 3) -> TemporalFusionTransformer:
    torch.manual_seed(0)
    return TemporalFusionTransformer(
        n_observed=9,
        n_known=5,
        n_symbols=n_symbols,
        horizon=H,
        hidden_size=D,
        attention_heads=heads,
        dropout=0.1,
    )


@pytest.mark.parametrize(("B", "L", "H"), SHAPES)
def test_block_boundaries(B: int, L: int, H: int) -> None:
    model = make(L, H).eval()
    obs, known, sym = torch.randn(B, L, 9), torch.randn(B, L + H, 5), torch.randint(0, 3, (B,))
    seen: dict[str, tuple[int, ...]] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def f(_m, _inp, out):  # type: ignore[no-untyped-def]
            first = out[0] if isinstance(out, tuple) else out
            seen[name] = tuple(first.shape)

        return f

    for name in (
        "static",
        "encoder_vsn",
        "decoder_vsn",
        "encoder_lstm",
        "decoder_lstm",
        "lstm_gate",
        "static_enrichment",
        "attention",
        "attention_gate",
        "positionwise",
        "output_gate",
        "head",
    ):
        getattr(model, name).register_forward_hook(hook(name))
    out = model(obs, known, sym)
    assert out.shape == (B, H, 3)
    assert seen["static"] == (B, D)  # first of the four context vectors
    assert seen["encoder_vsn"] == (B, L, D)
    assert seen["decoder_vsn"] == (B, H, D)
    assert seen["encoder_lstm"] == (B, L, D)
    assert seen["decoder_lstm"] == (B, H, D)
    assert seen["lstm_gate"] == (B, L + H, D)
    assert seen["static_enrichment"] == (B, L + H, D)
    assert seen["attention"] == (B, H, D)
    for name in ("attention_gate", "positionwise", "output_gate"):
        assert seen[name] == (B, H, D)
    assert seen["head"] == (B, H, 3)


@pytest.mark.parametrize(("B", "T"), [(1, 1), (2, 7), (4, 67)])
def test_sub_blocks(B: int, T: int) -> None:
    x = torch.randn(B, T, D)
    assert GatedLinearUnit(D, 8)(x).shape == (B, T, 8)
    assert GateAddNorm(D, D)(x, x).shape == (B, T, D)
    ctx = torch.randn(B, 1, D)
    assert GatedResidualNetwork(D, D, 5, d_context=D)(x, ctx).shape == (B, T, 5)
    vsn = VariableSelectionNetwork(6, D, d_context=D)
    out, weights = vsn(torch.randn(B, T, 6), torch.randn(B, D))
    assert out.shape == (B, T, D) and weights.shape == (B, T, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
    contexts = StaticCovariateEncoder(3, D)(torch.zeros(B, dtype=torch.long))
    assert len(contexts) == 4 and all(c.shape == (B, D) for c in contexts)


def test_uses_nn_multihead_attention_batch_first() -> None:
    model = make(20, 5)
    assert isinstance(model.attention, torch.nn.MultiheadAttention)
    assert model.attention.batch_first


def test_causal_mask_hides_the_future() -> None:
    model = make(4, 3)
    mask = model.causal_mask(4, 3, torch.device("cpu"))
    assert mask.shape == (3, 7)
    # decoder step 0 (absolute 4) sees 0..4, not 5, 6; the last decoder step sees everything
    assert mask[0].tolist() == [False] * 5 + [True, True]
    assert not mask[2].any()


def test_future_known_inputs_do_not_leak_backwards() -> None:
    """Changing the known input of the last horizon day must not change earlier horizon outputs."""
    model = make(10, 4).eval()
    torch.nn.init.normal_(model.head.proj.weight)  # the head starts at zero (persistence); give it a slope
    obs, known, sym = torch.randn(2, 10, 9), torch.randn(2, 14, 5), torch.zeros(2, dtype=torch.long)
    a = model(obs, known, sym)
    known2 = known.clone()
    known2[:, -1] += 5.0
    b = model(obs, known2, sym)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_quantiles_monotone_by_construction() -> None:
    head = QuantileHead(D, [0.05, 0.1, 0.5, 0.9, 0.95])
    torch.nn.init.normal_(head.proj.weight, std=5.0)
    torch.nn.init.normal_(head.proj.bias, std=5.0)
    out = head(torch.randn(32, 7, D))
    assert out.shape == (32, 7, 5)
    assert (out.diff(dim=-1) >= 0).all()


def test_quantile_loss_is_pinball() -> None:
    loss = QuantileLoss([0.1, 0.5, 0.9])
    pred = torch.zeros(1, 1, 3)
    # target above every quantile by 1: losses q*1 -> mean(0.1, 0.5, 0.9) = 0.5
    assert loss(pred, torch.ones(1, 1)).item() == pytest.approx(0.5)
    # below by 1: (1-q)*1 -> mean(0.9, 0.5, 0.1) = 0.5; at 0: zero
    assert loss(pred, -torch.ones(1, 1)).item() == pytest.approx(0.5)
    assert loss(pred, torch.zeros(1, 1)).item() == 0.0


def test_starts_at_persistence() -> None:
    """An untrained model forecasts a zero return (the persistence forecast) as its median."""
    model = make(30, 7).eval()
    out = model(torch.randn(4, 30, 9), torch.randn(4, 37, 5), torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(out[..., 1], torch.zeros(4, 7))
    assert (out[..., 0] < 0).all() and (out[..., 2] > 0).all()
