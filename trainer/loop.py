"""The training loop: small and readable (nanoGPT-style), resumable bit for bit, fast on CPU and GPU.

Why it looks like this:
* All windows live on the device as tensors; a batch is an index into them, so there is no DataLoader, no per-batch
  host work and (on CUDA) no host sync inside an epoch. Losses are summed on the device and read once per epoch.
* On CUDA the whole train step (forward, backward, clipping, AdamW with ``capturable=True``) is captured once as a
  CUDA graph and replayed per batch: the model is small, so eager PyTorch would be launch-bound. On CPU the same
  step runs eagerly.
* The learning rate is a pure function of the step (linear warm-up, cosine decay), so resuming needs only the step.
* The state of everything random is saved with each checkpoint, and each epoch's shuffle comes from its own
  generator seeded with (seed, epoch), so a run interrupted at any batch and resumed ends with the same weights as
  an uninterrupted one (on CPU, bit for bit).
* Early stopping watches the validation pinball loss; the best weights are kept and evaluated at the end.
* Data-parallel (under torchrun, ``trainer.distributed``): the model is wrapped in ``DistributedDataParallel``,
  each rank trains on its slice of every global batch, and the loop agrees through ``Dist`` at three points
  only: a signal (every step), the epoch's mean loss, and rank 0's validation. One process: all no-ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer import rng
from trainer.api.errors import NaNLoss
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import EpochStats
from trainer.cuda_graph import GraphedStep
from trainer.dataset import Split, empty_windows
from trainer.device import seed_everything
from trainer.distributed import Dist
from trainer.model import QuantileLoss, TemporalFusionTransformer
from trainer.modelling import build_model, predict_scaled
from trainer.stopflag import StopFlag

__all__ = ["EpochStats", "LoopState", "StopFlag", "Trainer", "best_model", "lr_at"]

# Steps between two agreements on a signal in a data-parallel run: the ranks still stop at the same step, at
# most this many steps (well under a second) after the signal.
STOP_CHECK_EVERY = 16


@dataclass
class LoopState:
    """Everything beyond the weights that a resume must restore."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches completed within the current epoch (non-zero only after a SIGTERM checkpoint)
    step: int = 0  # optimizer steps so far (drives the LR schedule)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best (early stopping)
    train_loss_sum: float = 0.0  # partial sum of the current epoch
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class Trainer:
    def __init__(
        self,
        spec: TrainingRunSpec,
        split: Split,
        device: torch.device,
        *,
        cuda_graph: bool = True,
        dist: Dist | None = None,
    ):
        self.spec = spec
        self.device = device
        self.dist = dist or Dist()
        t = spec.training
        self.dist.check_batch(t.batch_size)
        seed_everything(t.seed)
        rng.PYTHON.seed(t.seed)  # the trainer's own Python generator (libraries draw from the global one)
        self.model: TemporalFusionTransformer = build_model(spec).to(device)
        if (
            self.dist.enabled
        ):  # the same weights everywhere (DDP broadcasts rank 0's); dropout differs per rank
            seed_everything(rank_seed(t.seed, self.dist.rank))
        # What the train step calls: DDP averages the gradients over ranks inside backward.
        self.net: torch.nn.Module = (
            torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
            if self.dist.enabled
            else self.model
        )
        self.loss_share = self.dist.loss_share(min(t.batch_size, len(split.train)))
        self.rank_rng: list[dict[str, Any]] | None = None  # every rank's generators at the last gather
        self.criterion = QuantileLoss(spec.model.quantiles).to(device)
        self.train = split.train.to(device)
        self.val = split.val.to(device)
        self.val_persistence_mae = float(
            np.mean(np.abs(split.val.last_close[:, None] - split.val.future_close))
        )
        self.any_symbol = len(spec.all_symbols)
        self.epoch_symbols = self.train.symbol  # (N,) this epoch's symbols after symbol dropout
        self.batch_size = min(t.batch_size, len(self.train))
        self.batches_per_epoch = (
            len(self.train) // self.batch_size
        )  # drop_last: fixed shapes for the CUDA graph
        self.total_steps = self.batches_per_epoch * t.epochs
        self.warmup_steps = self.batches_per_epoch * t.warmup_epochs
        capturable = device.type == "cuda"
        lr: float | torch.Tensor = (
            torch.tensor(t.learning_rate, device=device) if capturable else t.learning_rate
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=t.weight_decay, capturable=capturable, fused=True
        )
        self.loop = LoopState()
        # An exponential moving average of the weights is what gets validated, kept and shipped: on a signal this
        # weak, averaging over many steps removes most of the step-to-step noise in the median forecast.
        self.ema_decay = t.ema_decay
        self.ema: list[torch.Tensor] | None = (
            [p.detach().clone() for p in self.model.parameters()] if self.ema_decay > 0 else None
        )
        # DDP's all-reduce runs from autograd hooks outside any captured graph: several ranks train eagerly.
        self.cuda_graph = cuda_graph and not self.dist.enabled
        self.best_weights: dict[str, torch.Tensor] | None = None  # the validated weights of the best epoch
        self.median_shrinkage = t.median_shrinkage
        self.median_index = spec.model.quantiles.index(0.5)
        self.calibration: dict[str, Any] | None = None  # set after training (trainer.calibrate)
        self._graph: GraphedStep | None = None

    # --- state -------------------------------------------------------------------------------------------------
    def state_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": list(self.ema) if self.ema is not None else None,
            "best_model": self.best_weights,
            "loop": self.loop.to_dict(),
            "rng": rng.rng_state() if self.rank_rng is None else self.rank_rng[0],
            "rng_ranks": self.rank_rng,  # one per rank of a data-parallel run (None: one process)
            "calibration": self.calibration,
            "config": config,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.best_weights = state.get("best_model")
        if self.ema is not None and state.get("ema") is not None:
            with torch.no_grad():
                torch._foreach_copy_(self.ema, [t.to(self.device) for t in state["ema"]])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loop = LoopState(**state["loop"])
        self.calibration = state.get("calibration")
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            rng.set_rng_state(ranks[self.dist.rank])  # the same ranks continue their own streams
        elif self.dist.rank == 0:
            rng.set_rng_state(state["rng"])
        else:  # another number of ranks: fresh streams for the new ranks, a function of seed, rank and step
            rng.set_rng_state(state["rng"])
            seed_everything(rank_seed(self.spec.training.seed, self.dist.rank, self.loop.step))

    def gather_rng(self) -> None:
        """Collect every rank's generator states for the next checkpoint (a collective: all ranks call it at
        the same points; one process keeps its own)."""
        self.rank_rng = self.dist.gather(rng.rng_state()) if self.dist.enabled else None

    # --- one epoch ---------------------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        lr = lr_at(self.loop.step, self.total_steps, self.warmup_steps, self.spec.training.learning_rate)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def train_step(
        self, observed: torch.Tensor, known: torch.Tensor, symbols: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """One optimiser step on a batch: the body run eagerly on CPU and captured as a CUDA graph on GPU.

        Gradients are zeroed in place (not set to None) so that a captured graph keeps their addresses; adding
        a gradient to zeros is exact, so the eager result is the same either way."""
        self.optimizer.zero_grad(set_to_none=False)
        pred = self.net(observed, known, symbols)  # (B_rank, H, Q)
        loss = self.objective(pred, target)
        torch.autograd.backward(loss if self.loss_share == 1.0 else loss * self.loss_share)
        self.clip_gradients()
        self.optimizer.step()
        self.update_ema()
        out: torch.Tensor = loss.detach()
        return out

    def batch_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What a batch is indexed from: (observed, known, this epoch's symbols, target)."""
        w = self.train
        return w.observed, w.known, self.epoch_symbols, w.target

    @torch.no_grad()
    def clip_gradients(self) -> None:
        """``clip_grad_norm_`` with the foreach kernels, which it does not pick on its own for CPU tensors: one
        call for all per-parameter norms and one for the rescale instead of a Python loop over the parameters."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.clamp(self.spec.training.grad_clip / (total + 1e-6), max=1.0))

    def release_training_state(self) -> None:
        """Drop what only training needs (the training windows, the optimizer state, the CUDA graph) once the
        final checkpoint is serialised; the model, the best weights and the validation windows stay."""
        self.train = empty_windows(self.train.observed.shape[1], self.spec.data.horizon).to(self.device)
        self.epoch_symbols = self.train.symbol
        self.optimizer.state.clear()
        self._graph = None

    def objective(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pinball loss plus a ridge penalty pulling the median towards the prior (a zero scaled return)."""
        loss: torch.Tensor = self.criterion(pred, target)
        if self.median_shrinkage > 0:
            median = pred[..., self.median_index]  # (B, H)
            loss = loss + self.median_shrinkage * median.square().mean()
        return loss

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is not None:
            torch._foreach_lerp_(
                self.ema, [p.detach() for p in self.model.parameters()], 1.0 - self.ema_decay
            )

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """Temporarily put the averaged weights into the model (a no-op without EMA)."""
        if self.ema is None:
            yield
            return
        params = [p.data for p in self.model.parameters()]
        saved = [p.clone() for p in params]
        torch._foreach_copy_(params, self.ema)
        try:
            yield
        finally:
            torch._foreach_copy_(params, saved)

    def eval_weights(self) -> dict[str, torch.Tensor]:
        """A copy of the weights that are validated and shipped (the average when EMA is on)."""
        with self.averaged():
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's shuffle; also draws the epoch's symbol dropout from the same (seed, epoch) generator, so
        a resumed epoch sees the same symbols as the interrupted one."""
        g = torch.Generator().manual_seed(self.spec.training.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.train), generator=g)
        drop = torch.rand(len(self.train), generator=g) < self.spec.training.symbol_dropout
        any_symbol = torch.full_like(self.train.symbol, self.any_symbol)
        self.epoch_symbols = torch.where(drop.to(self.device), any_symbol, self.train.symbol)
        return perm.to(self.device)

    def train_epoch(self, stop: StopFlag) -> bool:
        """Run the rest of the current epoch; False if stopped by a signal part-way."""
        self.net.train()
        perm = self.permutation(self.loop.epoch)
        B, dist = self.batch_size, self.dist
        # One process: the running float32 sum continues exactly across a resume. Several: this rank's share of
        # the epoch since the start (or the resume), averaged over ranks when the epoch ends or stops.
        loss_sum = torch.tensor(0.0 if dist.enabled else self.loop.train_loss_sum, device=self.device)
        before = self.loop.train_loss_sum if dist.enabled else 0.0
        if self.device.type == "cuda" and self.cuda_graph and self._graph is None:
            ema = self.ema or []
            self._graph = GraphedStep(
                self.train_step, self.batch_sources(), B, self.model, self.optimizer, ema
            )
        sources = self.batch_sources()
        for b in range(self.loop.batch, self.batches_per_epoch):
            idx = dist.shard(perm[b * B : (b + 1) * B])
            self._set_lr()
            if self._graph is not None:
                loss = self._graph.step(idx, sources)
            else:
                loss = self.train_step(*(t[idx] for t in sources))
            loss_sum += loss
            self.loop.step += 1
            self.loop.batch = b + 1
            # Several ranks agree on a signal every STOP_CHECK_EVERY steps (a collective, and on a GPU a sync).
            agree = not dist.enabled or self.loop.batch % STOP_CHECK_EVERY == 0
            if agree and dist.any(bool(stop), self.device) and self.loop.batch < self.batches_per_epoch:
                self.loop.train_loss_sum = before + float(dist.mean(loss_sum))
                return False
        self.loop.train_loss_sum = before + float(dist.mean(loss_sum))
        return True

    def evaluate(self) -> tuple[float, float]:
        """(validation pinball in scaled units, validation MASE of the raw learned median)."""
        with self.averaged():
            scaled = predict_scaled(self.model, self.val)  # (N, H, Q)
        val_loss = float(self.criterion(scaled, self.val.target))
        log_ret = scaled[..., self.median_index] * self.val.scale + self.val.offset  # (N, H)
        median = self.val.last_close[:, None] * np.exp(log_ret.cpu().numpy())
        mae = float(np.mean(np.abs(median - self.val.future_close)))
        return val_loss, mae / self.val_persistence_mae

    def finish_epoch(self, seconds: float) -> tuple[EpochStats, bool]:
        """Validate, update early stopping; returns the epoch's stats and whether it is the best so far."""
        # Validated once, on rank 0, and broadcast: early stopping decides the same on every rank.
        val_loss, val_mase = self.dist.broadcast(
            list(self.evaluate()) if self.dist.is_main else [0.0, 0.0], self.device
        )
        train_loss = self.loop.train_loss_sum / max(1, self.batches_per_epoch)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise NaNLoss(
                f"loss became {train_loss if not math.isfinite(train_loss) else val_loss} at epoch "
                f"{self.loop.epoch + 1}; lower training.learningRate or training.gradClip"
            )
        self.loop.epoch += 1
        self.loop.batch = 0
        self.loop.train_loss_sum = 0.0
        is_best = val_loss < self.loop.best_val_loss
        if is_best:
            self.loop.best_val_loss, self.loop.best_epoch, self.loop.bad_epochs = val_loss, self.loop.epoch, 0
            self.best_weights = self.eval_weights() if self.dist.is_main else None  # rank 0 ships them
        else:
            self.loop.bad_epochs += 1
        self.loop.history.append(
            {
                "epoch": self.loop.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_mase": val_mase,
            }
        )
        stats = EpochStats(
            epoch=self.loop.epoch,
            total_epochs=self.spec.training.epochs,
            train_loss=train_loss,
            val_loss=val_loss,
            val_mase=val_mase,
            samples_per_second=self.batches_per_epoch * self.batch_size / max(seconds, 1e-9),
            best_val_loss=self.loop.best_val_loss,
            best_epoch=self.loop.best_epoch,
            seconds=seconds,
        )
        return stats, is_best

    @property
    def done(self) -> bool:
        return (
            self.loop.epoch >= self.spec.training.epochs
            or self.loop.bad_epochs >= self.spec.training.early_stopping_patience
        )


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of a rank's own random stream (dropout): distinct per rank, a function of the run's seed."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


def best_model(trainer: Trainer) -> TemporalFusionTransformer:
    """A fresh model in eval mode holding the best epoch's validated weights (the trainer's keeps its last)."""
    model = build_model(trainer.spec).to(trainer.device)
    model.load_state_dict(
        trainer.best_weights if trainer.best_weights is not None else trainer.eval_weights()
    )
    return model.eval()
