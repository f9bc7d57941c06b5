"""Training speed: this trainer vs pytorch-forecasting's TemporalFusionTransformer, same data, same process.

Both train on the bundled SOL candles with 60-day inputs, a 7-day horizon, batch 64, hidden size 32 and 4 attention
heads, on the same number of CPU threads. Reported: samples/s of the full training loop (batching, forward,
backward, optimizer step; validation excluded for both), parameter counts, and the ratio. The first epoch of each
is a warm-up and is not timed.

    .venv/bin/pip install -e '.[bench]'      # pytorch-forecasting (and lightning)
    .venv/bin/python bench/bench_speed.py [--threads 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd
import torch

from trainer.api.manifest import parse_spec
from trainer.candles import load_candles
from trainer.dataset import split_windows
from trainer.loop import StopFlag, Trainer
from trainer.model import count_parameters

L, H, B = 60, 7, 64


def ours(epochs: int) -> tuple[float, int, int]:
    spec = parse_spec(
        {
            "symbol": "SOL",
            "training": {"batchSize": B, "device": "cpu"},
            "data": {"inputWindow": L, "horizon": H},
        }
    )
    split = split_windows([load_candles(None, "SOL")], L, H, 0.2)
    trainer = Trainer(spec, split, torch.device("cpu"))
    stop = StopFlag()
    rates = []
    for e in range(epochs + 1):
        t0 = time.perf_counter()
        trainer.train_epoch(stop)
        dt = time.perf_counter() - t0
        trainer.loop.epoch, trainer.loop.batch = e + 1, 0
        if e:
            rates.append(trainer.batches_per_epoch * B / dt)
    return float(np.median(rates)), count_parameters(trainer.model), len(split.train)


def pytorch_forecasting(epochs: int) -> tuple[float, int, int]:
    import lightning.pytorch as pl
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet
    from pytorch_forecasting.metrics import QuantileLoss

    f = load_candles(None, "SOL").frame.reset_index()
    f["time_idx"] = np.arange(len(f))
    f["series"] = "SOL"
    f["log_close"] = np.log(f["close"])
    f["ret"] = f["log_close"].diff().fillna(0.0)
    f["range"] = np.log(f["high"] / f["low"])
    f["log_volume"] = np.log1p(f["volume"])
    f["dow"] = f["date"].dt.day_of_week.astype(str)
    f["month"] = f["date"].dt.month.astype(str)
    cut = int(len(f) * 0.8)
    ds = TimeSeriesDataSet(
        f.iloc[:cut],
        time_idx="time_idx",
        target="log_close",
        group_ids=["series"],
        max_encoder_length=L,
        max_prediction_length=H,
        static_categoricals=["series"],
        time_varying_known_categoricals=["dow", "month"],
        time_varying_known_reals=["time_idx"],
        time_varying_unknown_reals=["log_close", "ret", "range", "log_volume"],
    )
    loader = ds.to_dataloader(train=True, batch_size=B, num_workers=0)
    model = TemporalFusionTransformer.from_dataset(
        ds,
        hidden_size=32,
        attention_head_size=4,
        dropout=0.1,
        hidden_continuous_size=16,
        loss=QuantileLoss([0.1, 0.5, 0.9]),
        learning_rate=3e-3,
    )
    times: list[float] = []

    class Timer(pl.Callback):
        def on_train_epoch_start(self, *_: object) -> None:
            times.append(time.perf_counter())

        def on_train_epoch_end(self, *_: object) -> None:
            times[-1] = time.perf_counter() - times[-1]

    trainer = pl.Trainer(
        max_epochs=epochs + 1,
        accelerator="cpu",
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        callbacks=[Timer()],
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(model, train_dataloaders=loader)
    samples = len(loader) * B
    rates = [samples / t for t in times[1:]]
    return float(np.median(rates)), sum(p.numel() for p in model.parameters()), len(ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per trainer (after one warm-up)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pf_rate, pf_params, pf_windows = pytorch_forecasting(args.epochs)
    our_rate, our_params, our_windows = ours(args.epochs)
    rows = pd.DataFrame(
        [
            ["pytorch-forecasting TFT", pf_params, pf_windows, pf_rate],
            ["this trainer", our_params, our_windows, our_rate],
        ],
        columns=["model", "parameters", "train windows", "samples/s"],
    )
    print(f"torch {torch.__version__}, {args.threads} threads, batch {B}, windows {L}/{H}")
    print(rows.to_string(index=False, float_format=lambda x: f"{x:,.0f}"))
    print(f"speed-up: {our_rate / pf_rate:.1f}x")


if __name__ == "__main__":
    main()
