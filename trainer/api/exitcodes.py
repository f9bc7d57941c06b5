"""Documented exit codes of ``python -m trainer``.

The operator's Job ``podFailurePolicy`` and its condition reasons key off these, so they are part of the API:
change them only together with ``operator/trainop/builders.py``, ``operator/trainop/conditions.py`` and the
README's table. Which exception ends with which code is decided in one table, ``trainer.cli.EXIT_CODES``.

The module-level names are plain ``int`` (YAML, JSON and the Kubernetes client serialise them as numbers);
``ExitCode`` is the same set as an ``IntEnum`` for code that wants the names.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    #: The run finished.
    OK = 0
    #: Unexpected crash, a bug (Python's default for an uncaught exception, with a traceback): retried by the Job.
    CRASH = 1
    #: The spec, manifest, flags, data or a checkpoint file are invalid: retrying cannot help, the Job fails at once.
    INVALID_CONFIG = 2
    #: Checkpoint storage unusable (unreachable, bad credentials, missing bucket, down past the deadline): retried.
    STORAGE_ERROR = 3
    #: The loss became NaN/inf: retrying from the same checkpoint would repeat it, the Job fails at once.
    NAN_LOSS = 4
    #: Distributed runs: this worker lost its peers (a collective or the rendezvous failed or timed out) because
    #: another worker died or never came. A symptom, not a cause: the operator names the worker that failed
    #: with another code and restarts the gang.
    PEER_LOST = 5
    #: SIGTERM (preemption, eviction, deletion): a checkpoint was written and uploaded; the pod's restart resumes.
    PREEMPTED = 143


OK: int = ExitCode.OK.value
CRASH: int = ExitCode.CRASH.value
INVALID_CONFIG: int = ExitCode.INVALID_CONFIG.value
STORAGE_ERROR: int = ExitCode.STORAGE_ERROR.value
NAN_LOSS: int = ExitCode.NAN_LOSS.value
PEER_LOST: int = ExitCode.PEER_LOST.value
PREEMPTED: int = ExitCode.PREEMPTED.value
