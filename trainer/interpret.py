"""What the TFT looks at, as pytorch-forecasting's ``interpret_output`` reports it: the variable-selection weights
of the encoder and decoder variables and the attention over past days, averaged over windows.

Why a module of its own: a MASE says how good a forecast is, not what it rests on. The weights say whether the
model reads the price, the volume or only the calendar, and how far back it looks, which is what a reader asks
before trusting it. The model returns raw per-window weights (``TemporalFusionTransformer.interpret``); turning
them into a ranked, JSON-able summary, a figure and a text is report work that would crowd ``trainer.model``.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainer.model import TemporalFusionTransformer

if TYPE_CHECKING:
    from trainer.evaluate import Forecaster

TOP_LAGS = 5  # format_ranking lists this many most-attended lags ...
RECENT_DAYS = 7  # ... and the attention share on the last this many input days


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _ranked(names: list[str], weights: Tensor) -> dict[str, float]:
    """{name: weight}, largest first."""
    pairs = sorted(zip(names, weights.tolist(), strict=True), key=lambda p: -p[1])
    return {name: _round(w) for name, w in pairs}


@torch.no_grad()
def _weight_sums(
    model: TemporalFusionTransformer, observed: Tensor, known: Tensor, symbol: Tensor, batch_size: int
) -> dict[str, Tensor]:
    """Per group, the weights summed over windows and over their L (encoder) or H (decoder, attention) steps, in
    float64 on the CPU: encoder_variables (V_enc,), decoder_variables (V_dec,), attention (T,)."""
    device = next(model.parameters()).device
    sums: dict[str, Tensor] = {}
    for i in range(0, observed.shape[0], batch_size):
        chunk = slice(i, i + batch_size)
        _, weights = model.interpret(
            observed[chunk].to(device), known[chunk].to(device), symbol[chunk].to(device)
        )
        for key, w in weights.items():  # (b, L, V_enc), (b, H, V_dec), (b, H, T)
            s = w.double().sum(dim=(0, 1)).cpu()
            sums[key] = sums[key] + s if key in sums else s
    return sums


def interpretation(
    model: TemporalFusionTransformer,
    observed: Tensor,
    known: Tensor,
    symbol: Tensor,
    observed_names: list[str],
    known_names: list[str],
    batch_size: int = 128,
) -> dict[str, Any]:
    """observed (N, L, F_obs), known (N, L+H, F_known), symbol (N,) -> a JSON-able summary:

    - ``encoder_variables``: {name: weight}, largest first, over observed_names + known_names (the model's order);
    - ``decoder_variables``: {name: weight}, largest first, over known_names;
    - ``attention``: ``lag_days`` [0 .. L-1] (0 = the origin, the last input day) with the mean attention
      ``weight`` on each, and ``future_share``, the mass on decoder (future known) steps; weights + share = 1;
    - ``n_windows``: N.

    Variable weights are averaged over windows and time steps, attention over windows and decoder steps. Runs in
    eval mode under no_grad, ``batch_size`` windows at a time; the model's train/eval mode is restored."""
    N, L, _ = observed.shape
    H = model.horizon
    encoder_names = observed_names + known_names
    if len(encoder_names) != model.encoder_vsn.n_vars or len(known_names) != model.decoder_vsn.n_vars:
        raise ValueError(
            f"{len(observed_names)} observed + {len(known_names)} known names for a model with "
            f"{model.encoder_vsn.n_vars} encoder and {model.decoder_vsn.n_vars} decoder variables"
        )
    if N == 0:
        raise ValueError("no windows to interpret")
    was_training = model.training
    model.eval()
    try:
        sums = _weight_sums(model, observed, known, symbol, batch_size)
    finally:
        model.train(was_training)
    attention = sums["attention"] / (N * H)  # (T,): mean attention on each absolute key position
    return {
        "encoder_variables": _ranked(encoder_names, sums["encoder_variables"] / (N * L)),
        "decoder_variables": _ranked(known_names, sums["decoder_variables"] / (N * H)),
        "attention": {
            "lag_days": list(range(L)),
            "weight": [_round(w) for w in attention[:L].flip(0).tolist()],  # key k < L has lag L-1-k
            "future_share": _round(attention[L:].sum().item()),
        },
        "n_windows": N,
    }


def importance_png(interp: dict[str, Any]) -> bytes:
    """Three panels: encoder and decoder variable importance (horizontal bars), attention by lag. PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    enc: dict[str, float] = interp["encoder_variables"]
    dec: dict[str, float] = interp["decoder_variables"]
    att: dict[str, Any] = interp["attention"]
    rows = max(len(enc), len(dec), 4)
    fig = Figure(figsize=(15, 1.0 + 0.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    ax_enc, ax_dec, ax_att = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for ax, weights, title in ((ax_enc, enc, "encoder variables"), (ax_dec, dec, "decoder variables")):
        names = list(weights)[::-1]  # largest on top
        ax.barh(names, [100 * weights[n] for n in names], color="tab:blue")
        ax.set_title(f"{title} (importance, %)")
        ax.set_xlabel("%")
    ax_att.bar(att["lag_days"], [100 * w for w in att["weight"]], color="tab:orange", width=0.9)
    ax_att.set_title(f"attention by lag (future steps: {100 * att['future_share']:.1f}%)")
    ax_att.set_xlabel("days before the origin (0 = last input day)")
    ax_att.set_ylabel("% of attention")
    fig.suptitle(f"What the model looks at ({interp['n_windows']} windows)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def format_ranking(interp: dict[str, Any]) -> str:
    """Ranked variables per group with percentages, then the lags with most attention and the recent share."""
    top_lags, recent_days = TOP_LAGS, RECENT_DAYS
    lines = [f"Interpretation over {interp['n_windows']} windows"]
    for key, title in (
        ("encoder_variables", "Encoder variables"),
        ("decoder_variables", "Decoder variables"),
    ):
        lines.append(f"{title}:")
        weights: dict[str, float] = interp[key]
        width = max((len(n) for n in weights), default=0)
        for rank, (name, w) in enumerate(weights.items(), start=1):
            lines.append(f"  {rank:>2}. {name:<{width}}  {100 * w:5.1f}%")
    att: dict[str, Any] = interp["attention"]
    by_lag = sorted(zip(att["lag_days"], att["weight"], strict=True), key=lambda p: -p[1])
    top = ", ".join(f"lag {lag} ({100 * w:.1f}%)" for lag, w in by_lag[:top_lags])
    recent = sum(w for lag, w in zip(att["lag_days"], att["weight"], strict=True) if lag < recent_days)
    lines += [
        "Attention:",
        f"  most attended: {top}",
        f"  last {recent_days} days (lags 0-{recent_days - 1}): {100 * recent:.1f}%",
        f"  future (decoder) steps: {100 * att['future_share']:.1f}%",
    ]
    return "\n".join(lines)


def explain(
    fc: Forecaster,
    data: str | None,
    *,
    symbol: str | None = None,
    start: str | None = None,
    end: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """``python -m trainer explain``: the interpretation over a file's origins in [start, end] (default: its
    last year), for the spec's symbol or any other (zero-shot symbols use the "any symbol" embedding)."""
    from trainer.dataset import KNOWN, OBSERVED
    from trainer.evaluate import period_windows

    p = period_windows(fc, data, symbol=symbol, start=start, end=end, endpoint=endpoint, default_days=365)
    w = p.windows
    out = interpretation(fc.model, w.observed, w.known, w.symbol, OBSERVED, KNOWN)
    out.update(
        symbol=p.candles.symbol,
        zero_shot=p.zero_shot,
        first_origin=str(w.origin[0].date()),
        last_origin=str(w.origin[-1].date()),
    )
    return out
