"""How a signal stops a training: SIGTERM/SIGINT set a flag the loop checks between steps (torch-free).

Why a flag and not an exception from the handler: a step interrupted half-way (inside backward, or the
optimizer's update) would leave weights that no checkpoint can reproduce. The loop finishes the step,
checkpoints and leaves through ``preempted()``; only where no step is left to finish (``at_once()``, during
evaluation) does a signal raise where the run is. Re-exported by ``trainer.loop``."""

from __future__ import annotations

import signal
from collections.abc import Callable

from trainer.api.errors import Preempted


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its current step, checkpoints and leaves with ``preempted()``.

    ``with StopFlag(on_stop) as stop:`` installs the handlers for the block and restores the old ones after;
    leaving the block by the ``Preempted`` error runs ``on_stop(signum)`` first (the run waits for its
    uploads there), which makes it the one way out on a signal. After ``at_once()`` -- no loop left to finish
    a step -- a signal raises that exception wherever the run is."""

    def __init__(self, on_stop: Callable[[int | None], None] | None = None) -> None:
        self.signum: int | None = None
        self.on_stop = on_stop
        self._at_once = False
        self._restore: Callable[[], None] | None = None

    def install(self) -> Callable[[], None]:
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, _frame: object) -> None:
            if self.signum is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means now
            self.signum = signum
            if self._at_once:
                self._at_once = False  # once: a second signal while the uploads finish is ignored
                raise self.preempted()

        for s in old:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def preempted(self) -> Preempted:
        return Preempted("stopped by signal")

    def at_once(self) -> None:
        """From now on a signal leaves at once; one that came already leaves now."""
        if self:
            raise self.preempted()
        self._at_once = True

    def __enter__(self) -> StopFlag:
        self._restore = self.install()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        self._at_once = False
        try:
            preempted = isinstance(exc, Preempted)
            if preempted and self.on_stop is not None:
                self.on_stop(self.signum)
        finally:
            if self._restore is not None:
                self._restore()

    def __bool__(self) -> bool:
        return self.signum is not None
