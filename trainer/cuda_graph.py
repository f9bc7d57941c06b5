"""A train step captured once as a CUDA graph and replayed per batch.

Why a module of its own: the model is small, so eager PyTorch is launch-bound on a GPU; capturing the whole
step (forward, backward, clipping, AdamW with ``capturable=True``, the EMA update) as one graph removes the
launches. The capture has rules of its own (static input buffers, a side-stream warm-up, weights and optimizer
state put back *in place* because the graph holds their addresses) that would crowd the readable loop in
``trainer.loop``. The step itself is not here: ``GraphedStep`` captures the body it is given, the same
``Trainer.train_step`` that runs eagerly on CPU, so there is one step and this module imports nothing of the
trainer's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

StepBody = Callable[..., torch.Tensor]


class GraphedStep:
    """``body(*batch) -> loss`` captured once with static input buffers of ``batch_size`` rows."""

    def __init__(
        self,
        body: StepBody,
        sources: Sequence[torch.Tensor],
        batch_size: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: list[torch.Tensor],
    ) -> None:
        # Static inputs: each batch is copied into these (index_select with out=), the graph reads them.
        self.inputs = [src[:batch_size].clone() for src in sources]
        # Warm up on a side stream (allocator, cuDNN plans, lazily created optimizer state), then put weights and
        # optimizer state back *in place*: the graph holds their addresses, so nothing may be re-allocated.
        saved_ema = [e.clone() for e in ema]
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        saved_opt = {
            id(p): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
            for p, s in optimizer.state.items()
        }
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                body(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = body(*self.inputs)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
            if ema:
                torch._foreach_copy_(ema, saved_ema)
            for p, s in optimizer.state.items():
                for k, v in s.items():
                    if isinstance(v, torch.Tensor):
                        v.copy_(saved_opt[id(p)][k]) if id(p) in saved_opt else v.zero_()

    def step(self, idx: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
        """Replay on the rows ``idx`` of ``sources`` (the tensors the static inputs were made from)."""
        for src, buf in zip(sources, self.inputs, strict=True):
            torch.index_select(src, 0, idx, out=buf)
        self.graph.replay()
        return self.loss.clone()
