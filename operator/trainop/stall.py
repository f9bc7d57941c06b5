"""The stall sweep: every ``TRAINOP_TIMER_INTERVAL_SECONDS``, each Running run without progress for its
resolved ``stallTimeout`` (its spec's, else its profile's, else the cluster default's) gets the Stalled
condition; it is cleared when progress resumes.

Why one background task and not a kopf timer per run: kopf puts a finalizer on every object that has a timer
(it stops timers before the object goes), and a finalizer blocks ``kubectl delete tr`` whenever the operator is
down. The sweep reads the ``runs`` index (parsed specs and the last seen conditions/progress) on the event
loop, so a quiet run costs no API call; only a run whose Stalled condition must change is written, through the
status writer, which re-reads the run before it decides."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import kopf

from . import prometheus
from .conditions import stall_update
from .profiles import apply_defaults
from .runs import Run
from .runtime import Runtime
from .settings import Settings, parse_duration
from .status import StatusChange, compose
from .status_writer import run_fields, utcnow

log = logging.getLogger(__name__)


def stall_change(run: dict[str, Any], timeout: float, now: datetime) -> StatusChange:
    update = stall_update(run.get("status") or {}, timeout, now)
    return compose(run, [update], now) if update else StatusChange()


def due(runs: list[Run], settings: Settings, now: datetime) -> list[tuple[Run, float]]:
    """The runs whose Stalled condition should change now, with their timeouts: the resolved
    ``stallTimeout`` (spec > profile > defaults > built-in, ``trainop.profiles``), from the spec as it is now,
    so that a changed ``spec.stallTimeout`` applies to a running run (pure)."""
    out = []
    for run in runs:
        if run.spec is None:
            continue  # invalid: Failed/InvalidSpec, never Running
        try:
            resolved, _ = apply_defaults(run.spec, settings)
            timeout = parse_duration(resolved.stall_timeout or "")
        except ValueError:  # SpecError too (an unknown profile: Failed/InvalidSpec, never Running)
            continue  # the model's pattern refuses such a spec; never a reason to stop the sweep
        if stall_update(run.status, timeout, now) is not None:
            out.append((run, timeout))
    return out


async def _write(rt: Runtime, run: Run, timeout: float) -> None:
    try:
        with prometheus.timed("stall_check"):
            await rt.offload(
                rt.writer.write,
                run.namespace,
                run.name,
                lambda r: stall_change(r, timeout, utcnow()),
                run.symbol,
            )
    except Exception as exc:
        log.warning("updating Stalled failed: %s", exc, extra=run_fields(run.namespace, run.name))


async def sweep(rt: Runtime, runs: kopf.Index[tuple[str, str], Run]) -> None:
    """One pass over every run (the index is read here, on the event loop)."""
    snapshot = [run for key in list(runs) for run in runs.get(key, [])]
    work = due(snapshot, rt.settings, utcnow())
    await asyncio.gather(*(_write(rt, run, timeout) for run, timeout in work))


async def sweep_forever(rt: Runtime, runs: kopf.Index[tuple[str, str], Run]) -> None:
    while True:
        await asyncio.sleep(rt.settings.timer_interval_seconds)
        try:
            await sweep(rt, runs)
        except Exception:
            log.exception("stall sweep failed; retrying at the next interval")
