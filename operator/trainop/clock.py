"""The time of the TrainingSchedule controller: ``clock.now()``, UTC.

Why a module of its own, with nothing in it but this: the schedule's rules are pure functions of ``now``
(``trainop.schedule``); the handlers ask this module for it, always as ``clock.now()`` (never ``from .clock import
now``), so that one place decides what the time is. The integration tests replace this function in the operator
subprocess with an accelerated clock (``tests/support/fastclock.py``, a test shim) to see a day of one-minute ticks
in a minute; the product never does."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)
