"""What one operator process holds between handler calls: settings, API clients, the status writer, a thread
pool and the background tasks -- made by the startup handler and kept in kopf's ``memo``.

Why in ``memo`` and not in module globals: kopf hands the same memo to every handler (each object gets a
shallow copy made after start-up), so a handler reaches its clients through its arguments, and nothing is
built at import time (importing ``trainop.handlers`` connects to nothing).

Why ``offload``: the handlers are ``async`` so that they read kopf's indexes on the event loop, the only
thread that changes them (reading from a worker thread could meet a half-updated entry); the blocking API calls
then run in this pool, with the handler's context variables (kopf needs them to post and to log).

Why ``Serial``: the steps of a gang restart (``trainop.gang``) must not interleave for one run, and a burst of
events (every worker's pod changes at once) must not fill the pool with threads that wait for each other."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import kopf

from .kube import Kube
from .settings import Settings
from .status_writer import StatusWriter

P = ParamSpec("P")
T = TypeVar("T")
MEMO_KEY = "trainop"


class Serial:
    """One call at a time per key, coalescing: a call that arrives while one runs for its key returns None at
    once and makes the running one go round again (it reads the API afresh each round), so a burst of events
    costs two rounds and holds one pool thread."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._again: dict[Hashable, bool] = {}  # key -> another round asked for; present while one runs

    def run(self, key: Hashable, fn: Callable[[], T]) -> T | None:
        with self._guard:
            if key in self._again:
                self._again[key] = True
                return None
            self._again[key] = False
        try:
            while True:
                result = fn()
                with self._guard:
                    if not self._again[key]:
                        del self._again[key]
                        return result
                    self._again[key] = False
        except BaseException:
            with self._guard:
                self._again.pop(key, None)
            raise


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    writer: StatusWriter
    pool: ThreadPoolExecutor
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)
    gangs: Serial = field(default_factory=Serial)  # the gang reconciles of multi-worker runs, per run

    @classmethod
    def create(cls, settings: Settings, kube: Kube, workers: int = 16) -> Runtime:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trainop")
        return cls(settings=settings, kube=kube, writer=StatusWriter(kube), pool=pool)

    async def offload(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking call in the pool, in a copy of the caller's context."""
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for closer in self.closers:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.kube.close()


def runtime(memo: kopf.Memo) -> Runtime:
    """The process's Runtime from a handler's memo."""
    rt = memo.get(MEMO_KEY)
    if not isinstance(rt, Runtime):
        raise kopf.TemporaryError("the operator has not finished starting", delay=1)
    return rt
