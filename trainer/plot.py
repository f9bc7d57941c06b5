"""forecast.png: the validation period's actual close against the median forecast and its 10-90% band.

Why a picture: a MASE of 0.98 says little; a plot shows at once whether the band is honest and whether the
median lags the price. Each horizon step h gets its own panel row for h=1 and the last step, so the lag of a
7-day forecast is visible next to the 1-day one.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trainer.api.spec import TrainingRunSpec
from trainer.dataset import Windows


def forecast_png(w: Windows, prices: np.ndarray, spec: TrainingRunSpec) -> bytes:
    """w: validation windows; prices: (N, H, Q) price quantiles. Returns PNG bytes."""
    q = spec.model.quantiles
    lo, mid, hi = q.index(0.1) if 0.1 in q else 0, q.index(0.5), q.index(0.9) if 0.9 in q else len(q) - 1
    H = prices.shape[1]
    steps = sorted({1, H})
    fig, axes = plt.subplots(len(steps), 1, figsize=(11, 3.6 * len(steps)), sharex=True, squeeze=False)
    for ax, h in zip(axes[:, 0], steps, strict=True):
        target_dates = w.origin + np.timedelta64(h, "D")
        ax.plot(target_dates, w.future_close[:, h - 1], color="black", lw=1.2, label="actual close")
        ax.plot(target_dates, prices[:, h - 1, mid], color="tab:blue", lw=1.2, label="median forecast")
        ax.fill_between(
            target_dates,
            prices[:, h - 1, lo],
            prices[:, h - 1, hi],
            color="tab:blue",
            alpha=0.2,
            label="10-90% band",
        )
        inside = np.mean(
            (w.future_close[:, h - 1] >= prices[:, h - 1, lo])
            & (w.future_close[:, h - 1] <= prices[:, h - 1, hi])
        )
        ax.set_title(
            f"{spec.symbol}: {h}-day-ahead forecast on the validation period "
            f"(band covers {inside:.0%} of actuals)",
            fontsize=10,
        )
        ax.set_ylabel("price (USD)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
