"""TFT interpretation: the raw weights of ``TemporalFusionTransformer.interpret`` (shapes, rows summing to 1, no
attention on masked keys, the same quantiles as ``forward``), their summary in ``trainer.interpret`` (names in
the model's order, sums of 1, chunking, JSON), the PNG and text, and that a tiny model trained on a target
that depends on one observed variable ranks that variable first."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

from trainer.interpret import format_ranking, importance_png, interpretation
from trainer.model import QuantileLoss, TemporalFusionTransformer

D, F_OBS, F_KNOWN = 16, 9, 5
OBS_NAMES = [f"obs{i}" for i in range(F_OBS)]
KNOWN_NAMES = [f"known{i}" for i in range(F_KNOWN)]


def make(
    H: int, n_observed: int = F_OBS, n_known: int = F_KNOWN, dropout: float = 0.1
) -> TemporalFusionTransformer:
    torch.manual_seed(0)
    return TemporalFusionTransformer(
        n_observed, n_known, n_symbols=3, horizon=H, hidden_size=D, attention_heads=4, dropout=dropout
    )


def inputs(B: int, L: int, H: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs, known = torch.randn(B, L, F_OBS, generator=g), torch.randn(B, L + H, F_KNOWN, generator=g)
    return obs, known, torch.randint(0, 3, (B,), generator=g)


@pytest.mark.parametrize(("B", "L", "H"), [(1, 8, 1), (3, 20, 5), (5, 30, 7)])
def test_interpret_shapes_sums_and_mask(B: int, L: int, H: int) -> None:
    model = make(H).eval()
    obs, known, sym = inputs(B, L, H)
    quantiles, weights = model.interpret(obs, known, sym)
    assert quantiles.shape == (B, H, 3)
    assert set(weights) == {"encoder_variables", "decoder_variables", "attention"}
    assert weights["encoder_variables"].shape == (B, L, F_OBS + F_KNOWN)
    assert weights["decoder_variables"].shape == (B, H, F_KNOWN)
    assert weights["attention"].shape == (B, H, L + H)
    for w in weights.values():
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    masked = model.causal_mask(L, H, torch.device("cpu"))  # (H, T), True = future of the query
    assert (weights["attention"][:, masked] == 0).all()
    assert (weights["attention"][:, ~masked] > 0).all()


def test_forward_and_interpret_give_the_same_quantiles() -> None:
    model = make(5).eval()
    obs, known, sym = inputs(4, 20, 5)
    torch.nn.init.normal_(model.head.proj.weight)  # the head starts at persistence; give it a slope
    with torch.no_grad():
        torch.testing.assert_close(model.interpret(obs, known, sym)[0], model(obs, known, sym))


def test_interpretation_names_order_and_sums() -> None:
    L, H = 15, 4
    model = make(H).train()
    with torch.no_grad():  # make the selection weights strictly increasing with the variable's index
        for vsn in (model.encoder_vsn, model.decoder_vsn):
            vsn.selection.gate.norm.weight.mul_(0.1)
            vsn.selection.gate.norm.bias.copy_(torch.linspace(-3.0, 3.0, vsn.n_vars))
    obs, known, sym = inputs(10, L, H)
    interp = interpretation(model, obs, known, sym, OBS_NAMES, KNOWN_NAMES, batch_size=3)
    assert model.training  # mode restored
    assert interp["n_windows"] == 10
    assert list(interp["encoder_variables"]) == (OBS_NAMES + KNOWN_NAMES)[::-1]  # largest first
    assert list(interp["decoder_variables"]) == KNOWN_NAMES[::-1]
    model.eval()
    with torch.no_grad():
        _, weights = model.interpret(obs, known, sym)
    expected = weights["encoder_variables"].mean(dim=(0, 1))
    for i, name in enumerate(OBS_NAMES + KNOWN_NAMES):
        assert interp["encoder_variables"][name] == pytest.approx(expected[i].item(), rel=1e-3)
    lag_mass = weights["attention"].mean(dim=(0, 1))[:L].flip(0)  # lag l = key L-1-l
    att = interp["attention"]
    assert att["lag_days"] == list(range(L))
    assert att["weight"] == pytest.approx(lag_mass.tolist(), rel=1e-3)
    assert sum(interp["encoder_variables"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(interp["decoder_variables"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(att["weight"]) + att["future_share"] == pytest.approx(1.0, abs=1e-3)
    assert 0 < att["future_share"] < 1
    assert (
        interpretation(model, obs, known, sym, OBS_NAMES, KNOWN_NAMES) == interp
    )  # chunking changes nothing
    assert json.loads(json.dumps(interp)) == interp


def test_interpretation_rejects_wrong_names() -> None:
    obs, known, sym = inputs(2, 8, 2)
    with pytest.raises(ValueError, match="names"):
        interpretation(make(2), obs, known, sym, OBS_NAMES[:-1], KNOWN_NAMES)


def test_png_and_text() -> None:
    obs, known, sym = inputs(6, 12, 3)
    interp = interpretation(make(3), obs, known, sym, OBS_NAMES, KNOWN_NAMES)
    png = importance_png(interp)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    text = format_ranking(interp)
    for name in OBS_NAMES + KNOWN_NAMES:
        assert name in text
    assert "last 7 days" in text and "%" in text


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops on a shared CPU: one intra-op thread is faster and steadier than several spinning."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_trained_model_ranks_the_informative_variable_first() -> None:
    """The target is a function of observed variable 2 alone (the others and the known inputs are noise)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    N, L, H, n_obs, n_known = 256, 8, 2, 4, 2
    obs, known = torch.randn(N, L, n_obs, generator=g), torch.randn(N, L + H, n_known, generator=g)
    sym = torch.zeros(N, dtype=torch.long)
    target = (obs[:, -1, 2] + 0.5 * obs[:, -2, 2]).unsqueeze(1).expand(N, H)  # (N, H)
    model = make(H, n_obs, n_known, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = QuantileLoss(model.quantiles)
    for _ in range(200):
        idx = torch.randint(0, N, (32,), generator=g)
        loss = loss_fn(model(obs[idx], known[idx], sym[idx]), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    names = [f"x{i}" for i in range(n_obs)]
    interp = interpretation(model, obs, known, sym, names, ["k0", "k1"])
    ranked = list(interp["encoder_variables"].items())
    assert ranked[0][0] == "x2", format_ranking(interp)
    assert ranked[0][1] > 0.5, format_ranking(interp)
