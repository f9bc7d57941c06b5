"""Data-parallel training across processes: what a rank is, and the few collectives the loop agrees through.

Why a module of its own, and why so little in it: the engine is ``torch.distributed`` launched by ``torchrun``
(locally, or in the pods of an Indexed Job through ``trainer.launch``), and gradients are averaged by
``DistributedDataParallel``. Nothing here launches processes or implements a collective. What is left is the
trainer's own contract on top of them, which the loop would otherwise spread over many ``if`` statements:

* ``Dist.from_env`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``...); without it the
  run is one process and every helper below is the identity, so a single-process run is unchanged bit for bit.
* ``shard``: ``training.batchSize`` stays the *global* batch. Every rank draws the same shuffled permutation
  (the per-epoch generator) and takes its slice of each batch, so the ranks see disjoint rows and together
  exactly the batch one process would (``tensor_split``: sizes differ by at most one row; ``loss_share``
  weights each rank's mean so that DDP's average of gradients is the global batch's mean gradient).
* ``any`` / ``mean`` / ``broadcast``: a signal on any rank stops every rank at the same step, a NaN on any
  rank stops all, validation is computed once (rank 0) and its numbers broadcast, so early stopping decides
  the same everywhere.
* ``PeerLost``: a collective that fails because another worker died is a symptom (exit 5), so that the
  operator names the worker that failed first instead of the one that noticed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from trainer.api.errors import ConfigError, PeerLost

__all__ = ["Dist", "PeerLost", "collective_errors"]

DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Dist:
        """torchrun's variables, checked: a half-set or inconsistent environment is a ConfigError, not a hang."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env and "RANK" not in env:
            return cls()
        try:
            rank, world, local = (int(env[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        except (KeyError, ValueError):
            raise ConfigError(
                "RANK, WORLD_SIZE and LOCAL_RANK: set all three as integers (torchrun does), or none"
            ) from None
        if not (world >= 1 and 0 <= rank < world and 0 <= local <= rank):
            raise ConfigError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: not a valid rank")
        return cls(rank, world, local)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- set-up ---------------------------------------------------------------------------------------------
    def device(self, base: torch.device) -> torch.device:
        """One GPU per local rank; CPU stays CPU."""
        if base.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return base

    def init(self, device: torch.device) -> None:
        """Join the process group torchrun set up (nccl on GPUs, gloo on CPU); a no-op for one process."""
        if not self.enabled or tdist.is_initialized():
            return
        timeout = datetime.timedelta(seconds=collective_timeout_s())
        with collective_errors("joining the process group"):
            if device.type == "cuda":  # bound to its GPU: NCCL connects eagerly, and fails here if it cannot
                tdist.init_process_group(backend="nccl", timeout=timeout, device_id=device)
            else:
                tdist.init_process_group(backend="gloo", timeout=timeout)

    def close(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()

    def check_batch(self, batch_size: int) -> None:
        if batch_size < self.world_size:
            raise ConfigError(
                f"training.batchSize: {batch_size} is the global batch and must be at least the number of "
                f"processes ({self.world_size}), so that every rank trains on at least one row"
            )

    # --- per step -------------------------------------------------------------------------------------------
    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch of indices (all of them for one process)."""
        if not self.enabled:
            return batch
        return torch.tensor_split(batch, self.world_size)[self.rank]

    def loss_share(self, batch_size: int) -> float:
        """Weight of this rank's mean loss so that DDP's average of gradients is the global batch mean:
        ``rows * world / batch`` (1.0 when the batch divides evenly)."""
        if not self.enabled:
            return 1.0
        rows = len(torch.tensor_split(torch.arange(batch_size), self.world_size)[self.rank])
        return rows * self.world_size / batch_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on any (a signal, a NaN)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], device=device, dtype=torch.int32)
        with collective_errors("agreeing on a stop"):
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (a copy; the tensor itself for one process)."""
        if not self.enabled:
            return value
        out = value.detach().clone()
        with collective_errors("averaging the loss"):
            tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        return out / self.world_size

    def broadcast(self, values: list[float], device: torch.device) -> list[float]:
        """Rank 0's values on every rank (validation is computed once)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        with collective_errors("broadcasting the validation"):
            tdist.broadcast(t, src=0)
        return [float(v) for v in t.tolist()]

    def barrier(self, what: str) -> None:
        if self.enabled:
            with collective_errors(what):
                tdist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        with collective_errors("gathering the random states"):
            tdist.all_gather_object(out, obj)
        return out


def collective_timeout_s() -> int:
    raw = os.environ.get("TRAINER_COLLECTIVE_TIMEOUT_SECONDS", str(DEFAULT_TIMEOUT_S))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"TRAINER_COLLECTIVE_TIMEOUT_SECONDS={raw!r}: must be a positive integer")
    return value


def is_collective_failure(exc: BaseException) -> bool:
    """A failure of the transport between ranks (a dead or unreachable peer), not of this rank's own work."""
    if isinstance(exc, tdist.DistError):
        return True
    text = str(exc)
    markers = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL", "gloo")
    return isinstance(exc, RuntimeError) and any(m in text for m in markers)


@contextlib.contextmanager
def collective_errors(what: str) -> Iterator[None]:
    """Turn a transport failure during ``what`` into ``PeerLost`` with one line saying so."""
    try:
        yield
    except PeerLost:
        raise
    except Exception as exc:
        if not is_collective_failure(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PeerLost(
            f"{what}: lost contact with the other workers ({first[:200]}); another worker failed or is "
            "unreachable, the run resumes from its last checkpoint when the gang restarts"
        ) from None
