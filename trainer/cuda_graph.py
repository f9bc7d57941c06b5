"""The CUDA-graph train step: the whole step captured once and replayed per batch.

Why a module of its own: the model is small, so eager PyTorch is launch-bound on a GPU; capturing forward,
backward, clipping, AdamW (``capturable=True``) and the EMA update as one graph removes the launches. The
capture has rules of its own (static input buffers, a side-stream warm-up, weights and optimizer state put
back *in place* because the graph holds their addresses) that would crowd the readable loop in
``trainer.train``, which uses this class on CUDA and runs the same step eagerly elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trainer.train import Trainer


class GraphedStep:
    """The train step captured once as a CUDA graph (static input buffers, replayed per batch)."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        w, B = trainer.train, trainer.batch_size
        self.obs = w.observed[:B].clone()
        self.known = w.known[:B].clone()
        self.sym = w.symbol[:B].clone()
        self.target = w.target[:B].clone()
        model, opt = trainer.model, trainer.optimizer
        # Warm up on a side stream (allocator, cuDNN plans, lazily created optimizer state), then put weights and
        # optimizer state back *in place*: the graph holds their addresses, so nothing may be re-allocated.
        saved_ema = [e.clone() for e in trainer.ema] if trainer.ema is not None else None
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        saved_opt = {
            id(p): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
            for p, s in opt.state.items()
        }
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._body()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(self.graph):
            self.loss = self._body()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
            if trainer.ema is not None and saved_ema is not None:
                torch._foreach_copy_(trainer.ema, saved_ema)
            for p, s in opt.state.items():
                for k, v in s.items():
                    if isinstance(v, torch.Tensor):
                        v.copy_(saved_opt[id(p)][k]) if id(p) in saved_opt else v.zero_()

    def _body(self) -> torch.Tensor:
        t = self.t
        pred = t.model(self.obs, self.known, self.sym)
        loss = t.objective(pred, self.target)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.spec.training.grad_clip)
        t.optimizer.step()
        t.update_ema()
        t.optimizer.zero_grad(set_to_none=False)
        out: torch.Tensor = loss.detach()
        return out

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.t.train
        torch.index_select(w.observed, 0, idx, out=self.obs)
        torch.index_select(w.known, 0, idx, out=self.known)
        torch.index_select(self.t.epoch_symbols, 0, idx, out=self.sym)
        torch.index_select(w.target, 0, idx, out=self.target)
        self.graph.replay()
        return self.loss.clone()
