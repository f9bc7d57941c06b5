"""TEST SHIM -- never product code: the operator with an accelerated schedule clock, for the TrainingSchedule
integration tests (``tests/operator/test_integration_schedule.py``).

``python -m tests.support.fastclock`` replaces ``trainop.clock.now`` (the one clock of the schedule controller)
with a clock that runs ``FASTCLOCK_FACTOR`` times faster than the real one, then runs the operator exactly as
``python -m trainop`` does. At 60x, a ``* * * * *`` schedule ticks every real second, so an hour of schedule fits
in a minute of test. The fast time is a function of the real time and two environment variables alone::

    fast = FASTCLOCK_ANCHOR + (real - FASTCLOCK_ANCHOR) * FASTCLOCK_FACTOR      (unix seconds)

so every operator process started with the same variables -- a restart, five restarts -- agrees on the time, as
processes on one real clock do. Everything else in the operator (kopf, Job and pod handling, the status times it
writes) keeps the real clock.

``FASTCLOCK_GO=<path>`` (optional) makes a spare: the process imports the operator, then waits until ``<path>``
exists before it starts. The restart test spawns its spares at once, so that each restart costs the operator's
start-up and not the ~2 s of CPU its imports take (much more wall time on a loaded CI machine).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone

FACTOR = "FASTCLOCK_FACTOR"
ANCHOR = "FASTCLOCK_ANCHOR"
GO = "FASTCLOCK_GO"


def fast_now() -> datetime:
    factor, anchor = float(os.environ[FACTOR]), float(os.environ[ANCHOR])
    return datetime.fromtimestamp(anchor + (time.time() - anchor) * factor, timezone.utc)


def main() -> int:
    from trainop import __main__ as entry
    from trainop import clock, handlers  # noqa: F401  (the imports a spare does before it waits)

    fast_now()  # a missing or bad variable stops here, not in a handler
    clock.now = fast_now
    go = os.environ.get(GO)
    while go and not os.path.exists(go):
        time.sleep(0.05)
    return entry.main()


if __name__ == "__main__":
    sys.exit(main())
